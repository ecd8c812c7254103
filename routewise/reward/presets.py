"""Named reward presets and :func:`get_reward`, which turns any reward spec into a reward.

Presets (all gated: an incorrect answer earns 0; the budgets are where speed or thrift stop
earning anything):

================  =================  ==========  ========  ======================================
preset            w (corr/lat/cost)  latency     cost      use case
================  =================  ==========  ========  ======================================
balanced          0.60 / 0.25 / 0.15  5 000 ms   $0.01     the default: interactive, mixed traffic
high_correctness  0.90 / 0.05 / 0.05  10 000 ms  $0.05     finance, compliance, medical extraction:
                                                           a correct answer is worth ≥ 0.9, only
                                                           ties are broken on speed and price
low_latency       0.45 / 0.45 / 0.10  2 000 ms   $0.01     customer support, autocomplete, agents
                                                           in a user-facing loop: past 2 s a
                                                           correct answer is worth only 0.55
cost_sensitive    0.50 / 0.10 / 0.40  30 000 ms  $0.002    offline batch enrichment: latency hardly
                                                           matters, the price per request does
================  =================  ==========  ========  ======================================

The cost budgets sit at the price of one structured request (≈1k input, ≈200 output
tokens) on a mid-to-upper-tier model (a few tenths of a cent to a cent), so the utility
separates cheap from expensive backends linearly instead of saturating; the latency budgets
sit just past the tolerable wait of each use case.

Examples
--------
>>> from routewise.reward import PRESETS, get_reward
>>> sorted(PRESETS)
['balanced', 'cost_sensitive', 'high_correctness', 'low_latency']
>>> get_reward() is PRESETS["balanced"]
True
>>> r = get_reward({"preset": "low_latency", "latency_budget_ms": 1500})
>>> r.name, r.latency_budget_ms, r.weights["latency"]
('low_latency+custom', 1500.0, 0.45)
>>> get_reward("fastest")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
routewise.errors.ConfigError: preset: unknown preset 'fastest'; one of: balanced, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeAlias, overload

from routewise.errors import ConfigError
from routewise.reward.base import RewardFunction
from routewise.reward.scalarize import Scalarizer

__all__ = ["DEFAULT_PRESET", "PRESETS", "RewardSpec", "get_reward"]

DEFAULT_PRESET = "balanced"

PRESETS: Mapping[str, Scalarizer] = MappingProxyType(
    {
        "balanced": Scalarizer(0.60, 0.25, 0.15, 5000.0, 0.01, gate=True, name="balanced"),
        "high_correctness": Scalarizer(
            0.90, 0.05, 0.05, 10000.0, 0.05, gate=True, name="high_correctness"
        ),
        "low_latency": Scalarizer(0.45, 0.45, 0.10, 2000.0, 0.01, gate=True, name="low_latency"),
        "cost_sensitive": Scalarizer(
            0.50, 0.10, 0.40, 30000.0, 0.002, gate=True, name="cost_sensitive"
        ),
    }
)
"""Preset name → :class:`Scalarizer` (read-only)."""

RewardSpec: TypeAlias = "str | Mapping[str, Any] | RewardFunction | None"
"""What :func:`get_reward` accepts."""


def _preset(name: Any) -> Scalarizer:
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(
            "preset", f"unknown preset {name!r}; one of: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]


@overload
def get_reward(spec: str | Mapping[str, Any] | Scalarizer | None = None) -> Scalarizer: ...
@overload
def get_reward(spec: RewardFunction) -> RewardFunction: ...
def get_reward(spec: RewardSpec = None) -> RewardFunction:
    """Resolve a reward spec into a reward function.

    Parameters
    ----------
    spec
        ``None`` → the ``balanced`` preset; a preset name; a mapping of :class:`Scalarizer`
        fields (weights nested as ``{"weights": {"correctness", "latency", "cost"}}`` or flat
        as ``w_correctness``…, see :meth:`Scalarizer.from_dict`), optionally with
        ``"preset": name`` as the base the other keys override; or a ready reward function
        (a :class:`Scalarizer` or any :class:`RewardFunction`), returned as is.

    Raises
    ------
    routewise.errors.ConfigError
        For an unknown preset (field ``preset``), an unknown key (named as spelled), or an
        invalid value (naming its field).

    Examples
    --------
    >>> get_reward({"weights": {"correctness": 1, "latency": 1, "cost": 0},
    ...             "latency_budget_ms": 1000, "cost_budget_usd": 0.01, "gate": False}).weights
    {'correctness': 0.5, 'latency': 0.5, 'cost': 0.0}
    >>> get_reward({"preset": "balanced", "weights": {"speed": 1}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: weights.speed: unknown weight; expected one of correctness, ...
    """
    if spec is None:
        return PRESETS[DEFAULT_PRESET]
    if isinstance(spec, str):
        return _preset(spec)
    if isinstance(spec, Scalarizer):
        return spec
    if isinstance(spec, Mapping):
        data = dict(spec)
        base = _preset(data.pop("preset")) if "preset" in data else None
        return Scalarizer.from_dict(data, base=base)
    if isinstance(spec, RewardFunction):
        return spec
    raise ConfigError(
        "reward",
        f"cannot build a reward from {type(spec).__name__}; expected a preset name, a mapping "
        "or a reward function",
    )


def reward_argument(
    spec: str | Mapping[str, Any] | Scalarizer | None, field: str = "reward"
) -> Scalarizer:
    """:func:`get_reward` for an argument or request field named ``field``: its errors name
    ``field`` for a preset name and ``field.<key>`` for a key of a mapping.

    Examples
    --------
    >>> reward_argument("fastest")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: reward: unknown preset 'fastest'; one of: balanced, ...
    >>> reward_argument({"preset": "fastest"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: reward.preset: unknown preset 'fastest'; one of: balanced, ...
    """
    try:
        return get_reward(spec)
    except ConfigError as exc:
        named = field if isinstance(spec, str) else f"{field}.{exc.field}"
        raise ConfigError(named, exc.reason) from None
