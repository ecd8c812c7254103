"""Value types: output modes, arms and outcomes.

These are small immutable values on the hot path (one per decision and feedback), so they
are slotted dataclasses that validate in ``__post_init__`` rather than pydantic models;
pydantic is used for configuration and the HTTP API, where its coercion pays off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from routewise.errors import ConfigError, InvalidOutcome

__all__ = ["MAX_COST_USD", "MAX_LATENCY_MS", "Arm", "ArmLike", "Mode", "Outcome", "make_arms"]


class Mode(StrEnum):
    """Who carries the burden of producing the structure.

    Examples
    --------
    >>> Mode("transport_compressed") is Mode.transport_compressed
    True
    >>> [m.value for m in Mode]
    ['direct_emit', 'transport_compressed', 'local_reconstructed']
    """

    direct_emit = "direct_emit"
    transport_compressed = "transport_compressed"
    local_reconstructed = "local_reconstructed"


def _coerce_mode(mode: Mode | str) -> Mode:
    if isinstance(mode, Mode):
        return mode
    try:
        return Mode(mode)
    except ValueError:
        allowed = ", ".join(m.value for m in Mode)
        raise ConfigError("mode", f"{mode!r} is not an output mode (one of: {allowed})") from None


@dataclass(frozen=True, slots=True, init=False)
class Arm:
    """A (backend, output mode) pair the controller can route a request to.

    ``backend`` is a free string in the ``provider:model`` convention; ``mode`` may be a
    :class:`Mode` or its string value.

    Examples
    --------
    >>> arm = Arm("openai:gpt-5.4", "direct_emit")
    >>> arm.id
    'openai:gpt-5.4/direct_emit'
    >>> arm.mode is Mode.direct_emit
    True
    >>> Arm.parse("ollama:devstral-2/local_reconstructed") == Arm("ollama:devstral-2", Mode.local_reconstructed)
    True
    """

    backend: str
    mode: Mode
    id: str = field(compare=False, repr=False)

    def __init__(self, backend: str, mode: Mode | str) -> None:
        if not isinstance(backend, str) or not backend.strip():
            raise ConfigError("backend", f"must be a non-empty string, got {backend!r}")
        if "/" in backend:
            raise ConfigError(
                "backend", f"{backend!r} must not contain '/' (it separates the mode)"
            )
        m = _coerce_mode(mode)
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "mode", m)
        object.__setattr__(self, "id", f"{backend}/{m.value}")

    @classmethod
    def parse(cls, arm: Arm | str | Mapping[str, Any]) -> Arm:
        """Build an arm from an ``Arm``, an id ``"backend/mode"`` or ``{"backend", "mode"}``."""
        if isinstance(arm, Arm):
            return arm
        if isinstance(arm, str):
            backend, sep, mode = arm.rpartition("/")
            if not sep:
                raise ConfigError("arm", f"{arm!r} is not an arm id of the form 'backend/mode'")
            return cls(backend, mode)
        if isinstance(arm, Mapping):
            missing = [k for k in ("backend", "mode") if k not in arm]
            if missing:
                raise ConfigError("arm", f"missing key(s) {missing} in {dict(arm)!r}")
            return cls(arm["backend"], arm["mode"])
        raise ConfigError("arm", f"cannot build an arm from {type(arm).__name__} {arm!r}")

    def __str__(self) -> str:
        return self.id

    def to_dict(self) -> dict[str, str]:
        """The wire form: ``{"id", "backend", "mode"}``."""
        return {"id": self.id, "backend": self.backend, "mode": self.mode.value}

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """On the wire an arm is ``{"id", "backend", "mode"}``; it parses from that, an id or
        an ``Arm`` (wire types hold it as a field)."""
        wire = core_schema.typed_dict_schema(
            {
                "id": core_schema.typed_dict_field(core_schema.str_schema()),
                "backend": core_schema.typed_dict_field(core_schema.str_schema()),
                "mode": core_schema.typed_dict_field(
                    core_schema.literal_schema([m.value for m in Mode])
                ),
            },
            ref="Arm",
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.no_info_after_validator_function(cls.parse, wire),
            python_schema=core_schema.no_info_plain_validator_function(cls.parse),
            serialization=core_schema.plain_serializer_function_ser_schema(cls.to_dict),
            metadata={"pydantic_js_functions": [lambda _s, h: h(wire)]},
        )


ArmLike = Arm | str | Mapping[str, Any]
"""Anything :meth:`Arm.parse` reads: an ``Arm``, an id ``"backend/mode"`` or a mapping."""


def make_arms(
    backends: Iterable[str],
    modes: Iterable[Mode | str] | None = None,
    *,
    exclude: Iterable[Arm | str | tuple[str, Mode | str]] = (),
) -> list[Arm]:
    """The cross product ``backends × modes`` minus ``exclude``, in a stable order.

    ``exclude`` items may be arms, arm ids, ``(backend, mode)`` pairs, or a bare backend
    name (which drops all of its modes).

    Examples
    --------
    >>> arms = make_arms(["openai:gpt-5.4", "ollama:llama3"],
    ...                  exclude=["ollama:llama3/transport_compressed"])
    >>> [a.id for a in arms]  # doctest: +NORMALIZE_WHITESPACE
    ['openai:gpt-5.4/direct_emit', 'openai:gpt-5.4/transport_compressed',
     'openai:gpt-5.4/local_reconstructed', 'ollama:llama3/direct_emit',
     'ollama:llama3/local_reconstructed']
    """
    mode_list = [_coerce_mode(m) for m in (modes if modes is not None else list(Mode))]
    backend_list = list(backends)
    if not backend_list:
        raise ConfigError("backends", "at least one backend is required")
    if not mode_list:
        raise ConfigError("modes", "at least one mode is required")
    excluded_ids: set[str] = set()
    excluded_backends: set[str] = set()
    for item in exclude:
        if isinstance(item, tuple):
            excluded_ids.add(Arm(item[0], item[1]).id)
        elif isinstance(item, Arm):
            excluded_ids.add(item.id)
        elif "/" in item:
            excluded_ids.add(Arm.parse(item).id)
        else:
            excluded_backends.add(item)
    arms: list[Arm] = []
    seen: set[str] = set()
    for backend in backend_list:
        if backend in excluded_backends:
            continue
        for mode in mode_list:
            arm = Arm(backend, mode)
            if arm.id in excluded_ids or arm.id in seen:
                continue
            seen.add(arm.id)
            arms.append(arm)
    if not arms:
        raise ConfigError("exclude", "excludes every arm of the cross product")
    product = {Arm(b, m).id for b in backend_list for m in mode_list}
    stray = sorted((excluded_ids - product) | (excluded_backends - set(backend_list)))
    if stray:  # a typo would otherwise exclude nothing, silently
        raise ConfigError(
            "exclude", f"{stray} not in the cross product of the given backends and modes"
        )
    return arms


def _check_number(
    name: str, value: Any, *, allow_none: bool = False, upper: float | None = None
) -> None:
    if value is None:
        if allow_none:
            return
        raise InvalidOutcome(name, "is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOutcome(name, f"must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise InvalidOutcome(name, f"must be finite, got {value!r}")
    if value < 0:
        raise InvalidOutcome(name, f"must be >= 0, got {value!r}")
    if upper is not None and value > upper:
        raise InvalidOutcome(name, f"must be <= {upper}, got {value!r}")


#: Upper bounds of a plausible outcome (about 11.6 days; a million dollars per request):
#: anything larger is a unit or encoding bug, and sums of such values overflow to inf.
MAX_LATENCY_MS = 1e9
MAX_COST_USD = 1e6


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened when an arm served a request.

    ``valid``: the output parsed and validated against the schema. ``score``: an optional
    graded correctness in [0, 1] (e.g. field-level accuracy) that takes precedence over
    ``valid`` in the reward. ``error``: an error category (``"timeout"``, ``"rate_limited"``…)
    when the call failed; an outcome with an error counts as incorrect.

    Examples
    --------
    >>> Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004).correctness
    1.0
    >>> Outcome(valid=True, latency_ms=-1.0, cost_usd=0.0)
    Traceback (most recent call last):
    ...
    routewise.errors.InvalidOutcome: outcome.latency_ms: must be >= 0, got -1.0
    """

    valid: bool
    latency_ms: float
    cost_usd: float
    error: str | None = None
    score: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.valid, bool):
            raise InvalidOutcome("valid", f"must be a boolean, got {type(self.valid).__name__}")
        # fast path for the common case (finite non-negative floats); anything else gets the
        # full check, which names the problem
        lat, cost, score = self.latency_ms, self.cost_usd, self.score
        if not (type(lat) is float and 0.0 <= lat <= MAX_LATENCY_MS):
            _check_number("latency_ms", lat, upper=MAX_LATENCY_MS)
        if not (type(cost) is float and 0.0 <= cost <= MAX_COST_USD):
            _check_number("cost_usd", cost, upper=MAX_COST_USD)
        if score is not None and not (type(score) is float and 0.0 <= score <= 1.0):
            _check_number("score", score, upper=1.0)
        if self.error is not None and not isinstance(self.error, str):
            raise InvalidOutcome(
                "error", f"must be a string or null, got {type(self.error).__name__}"
            )

    @property
    def correctness(self) -> float:
        """Correctness in [0, 1]: ``score`` if given, else ``valid``; 0 on error."""
        if self.error is not None:
            return 0.0
        if self.score is not None:
            return float(self.score)
        return 1.0 if self.valid else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The trace representation (``score`` omitted when unset)."""
        d: dict[str, Any] = {
            "valid": self.valid,
            "latency_ms": float(self.latency_ms),
            "cost_usd": float(self.cost_usd),
            "error": self.error,
        }
        if self.score is not None:
            d["score"] = float(self.score)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Build from a mapping, naming missing or unknown fields in the error."""
        if not isinstance(data, Mapping):
            raise InvalidOutcome("outcome", f"must be an object, got {type(data).__name__}")
        unknown = set(data) - {"valid", "latency_ms", "cost_usd", "error", "score"}
        if unknown:
            raise InvalidOutcome(sorted(unknown)[0], "unknown field")
        for name in ("valid", "latency_ms", "cost_usd"):
            if name not in data:
                raise InvalidOutcome(name, "is required")
        return cls(
            valid=data["valid"],
            latency_ms=data["latency_ms"],
            cost_usd=data["cost_usd"],
            error=data.get("error"),
            score=data.get("score"),
        )
