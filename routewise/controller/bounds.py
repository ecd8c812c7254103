"""The memory bounds of a :class:`~routewise.Controller` and the count of their hits.

Every structure that grows with input has a bound (README, "Bounds"): the featurizer's
remembered keys (``max_feature_keys``) and columns (``features.max_dim``), the size of one
context (``max_context_keys`` keys, ``max_value_chars`` characters per key or string value)
and the decisions awaiting feedback in memory (``max_pending``). What happens past each is
defined where it is enforced (:mod:`~routewise.controller.features`,
:mod:`~routewise.controller.persistence`); each hit is counted here, and the first hit of each
bound is logged (a structlog warning, once per bound per controller — the sidecar runs one).
The counts cover this process's lifetime, the restart replay included; ``/metrics`` exports
them as ``routewise_bound_hits_total{bound=…}``.

Examples
--------
>>> from structlog.testing import capture_logs
>>> hits = BoundHits()
>>> with capture_logs() as logs:
...     hits.hit("max_pending", 100)
...     hits.hit("max_pending", 100, 2)
>>> [(e["event"], e["bound"]) for e in logs]  # logged once
[('bound.hit', 'max_pending')]
>>> hits.as_dict()["max_pending"], hits.as_dict()["max_dim"]
(3, 0)
"""

from __future__ import annotations

from typing import TypedDict

import structlog

__all__ = [
    "BOUNDS",
    "DEFAULT_MAX_CONTEXT_KEYS",
    "DEFAULT_MAX_FEATURE_KEYS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_VALUE_CHARS",
    "BoundHits",
    "FeatureLimits",
]

_log = structlog.get_logger("routewise")

DEFAULT_MAX_CONTEXT_KEYS = 256
"""Default cap on the keys of one context (more: the context is refused)."""
DEFAULT_MAX_VALUE_CHARS = 1024
"""Default cap on the length of a context key or string value (longer: refused)."""
DEFAULT_MAX_FEATURE_KEYS = 4096
"""Default cap on the distinct context keys the featurizer remembers (past it: ignored)."""
DEFAULT_MAX_PENDING = 100_000
"""Default cap on the decisions awaiting feedback kept in memory (past it: the oldest leave)."""

BOUNDS: dict[str, str] = {
    "max_context_keys": "a context with more keys was refused (InvalidContext)",
    "max_value_chars": "a context key or string value longer than this was refused "
    "(InvalidContext)",
    "max_feature_keys": "a context key was ignored: the featurizer remembers no more keys",
    "max_dim": "a new key or categorical value got no column of its own (the vector is full)",
    "max_pending": "the oldest pending decision left memory (learned with the default reward "
    "if one is set)",
}
"""Each bound and what a hit of it means, in the order ``/metrics`` lists them."""


class FeatureLimits(TypedDict):
    """The featurizer's bounds, as keyword arguments of
    :class:`~routewise.controller.features.Featurizer`."""

    max_feature_keys: int
    max_context_keys: int
    max_value_chars: int


class BoundHits:
    """How often each bound of :data:`BOUNDS` was hit; logs the first hit of each.

    Not thread-safe on its own: the controller's lock serializes the hits.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(BOUNDS, 0)

    def hit(self, bound: str, limit: int, n: int = 1) -> None:
        """Count ``n`` hits of ``bound`` (whose value is ``limit``); the first is logged."""
        before = self._counts[bound]
        self._counts[bound] = before + n
        if before == 0 and n > 0:
            _log.warning("bound.hit", bound=bound, limit=limit, meaning=BOUNDS[bound])

    def as_dict(self) -> dict[str, int]:
        """A copy of the counts, every bound included (0 when never hit)."""
        return dict(self._counts)
