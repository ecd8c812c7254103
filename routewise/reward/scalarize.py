"""Scalarization of an outcome's (correctness, latency, cost) into one reward.

The formula
-----------
For an outcome with correctness ``c = outcome.correctness`` ∈ [0, 1] (the graded ``score`` if
given, else ``valid``; 0 when the call errored), latency ``latency_ms`` and cost
``cost_usd``::

    u_lat  = clip(1 − latency_ms / latency_budget_ms, 0, 1)
    u_cost = clip(1 − cost_usd / cost_budget_usd, 0, 1)

and the weights normalized to sum to 1, ``(w_c, w_l, w_k) = (w_correctness, w_latency,
w_cost) / (w_correctness + w_latency + w_cost)``::

    gate=False:  r = w_c·c + w_l·u_lat + w_k·u_cost
    gate=True:   r = c·(w_c + w_l·u_lat + w_k·u_cost)

With the gate (the default) a wrong answer is worth nothing however fast or cheap it was,
and a correct answer is worth at least ``w_c``. Without it, speed and thrift earn reward on
their own. Either way ``r`` ∈ [0, 1]; it is non-decreasing in correctness and
non-increasing in latency and in cost (exactly so in floating point too: every operation
above is monotone under IEEE rounding, and the result is clamped to 1 against the last-ulp
excess of the normalized weights).

A latency at or beyond its budget earns no latency utility (the same for cost); the budgets
are the points where speed or thrift stop being worth anything, not hard limits.

Examples
--------
>>> from routewise.types import Outcome
>>> s = Scalarizer(w_correctness=0.6, w_latency=0.25, w_cost=0.15,
...                latency_budget_ms=5000.0, cost_budget_usd=0.01)
>>> round(s(Outcome(valid=True, latency_ms=1000.0, cost_usd=0.002)), 6)  # .6 + .25·.8 + .15·.8
0.92
>>> s(Outcome(valid=False, latency_ms=10.0, cost_usd=0.0))
0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from routewise.errors import ConfigError
from routewise.types import Outcome

__all__ = ["Scalarizer"]

# Spelling of each weight inside a nested ``{"weights": {...}}`` mapping → dataclass field.
_WEIGHT_KEYS: dict[str, str] = {
    "correctness": "w_correctness",
    "latency": "w_latency",
    "cost": "w_cost",
}
_FIELDS: tuple[str, ...] = (
    "w_correctness",
    "w_latency",
    "w_cost",
    "latency_budget_ms",
    "cost_budget_usd",
    "gate",
    "name",
)
_REQUIRED: tuple[str, ...] = _FIELDS[:5]
_TYPE = "scalarizer"


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"must be a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(name, f"must be finite, got {value!r}")
    return x


@dataclass(frozen=True, slots=True)
class Scalarizer:
    """Weighted, budgeted scalarization of an outcome into a reward in ``[0, 1]``.

    See the module docstring for the exact formula.

    Parameters
    ----------
    w_correctness, w_latency, w_cost
        Non-negative, finite, not all zero. Stored as given (as floats); the reward uses them
        normalized to sum to 1 (see :attr:`weights`).
    latency_budget_ms
        Latency (ms) at which the latency utility reaches 0. Positive and finite.
    cost_budget_usd
        Cost (USD per request) at which the cost utility reaches 0. Positive and finite.
    gate
        Multiply the whole reward by correctness, so an incorrect answer earns 0.
    name
        A label for logs and reports (presets carry their preset name).

    Raises
    ------
    routewise.errors.ConfigError
        Naming the offending field (``weights`` when they are all zero).

    Examples
    --------
    >>> from routewise.types import Outcome
    >>> s = Scalarizer(3, 1, 1, latency_budget_ms=2000, cost_budget_usd=0.01, name="demo")
    >>> s.weights
    {'correctness': 0.6, 'latency': 0.2, 'cost': 0.2}
    >>> ok = Outcome(valid=True, latency_ms=500.0, cost_usd=0.0)
    >>> round(s(ok), 6)  # 0.6 + 0.2·0.75 + 0.2·1
    0.95
    >>> Scalarizer.from_dict(s.to_dict()) == s
    True
    >>> Scalarizer(1, -1, 0, 1000, 0.01)
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: w_latency: must be >= 0, got -1.0
    """

    w_correctness: float
    w_latency: float
    w_cost: float
    latency_budget_ms: float
    cost_budget_usd: float
    gate: bool = True
    name: str = "custom"
    # Normalized weights, derived in __post_init__ (the hot path reads only these).
    _wc: float = field(init=False, repr=False, compare=False)
    _wl: float = field(init=False, repr=False, compare=False)
    _wk: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ws: list[float] = []
        for name in ("w_correctness", "w_latency", "w_cost"):
            w = _check_real(name, getattr(self, name))
            if w < 0.0:
                raise ConfigError(name, f"must be >= 0, got {w!r}")
            object.__setattr__(self, name, w)
            ws.append(w)
        total = ws[0] + ws[1] + ws[2]
        if total == 0.0:
            raise ConfigError("weights", "at least one weight must be > 0")
        if not math.isfinite(total):
            raise ConfigError("weights", f"their sum overflows ({ws!r})")
        for name in ("latency_budget_ms", "cost_budget_usd"):
            b = _check_real(name, getattr(self, name))
            if b <= 0.0:
                raise ConfigError(name, f"must be > 0, got {b!r}")
            object.__setattr__(self, name, b)
        if not isinstance(self.gate, bool):
            raise ConfigError("gate", f"must be a boolean, got {type(self.gate).__name__}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "_wc", ws[0] / total)
        object.__setattr__(self, "_wl", ws[1] / total)
        object.__setattr__(self, "_wk", ws[2] / total)

    def __call__(self, outcome: Outcome) -> float:
        """The reward of ``outcome``, in ``[0, 1]``."""
        c = outcome.correctness
        # latency_ms, cost_usd >= 0 (Outcome validates), so each utility is <= 1 already.
        u_lat = 1.0 - outcome.latency_ms / self.latency_budget_ms
        if u_lat < 0.0:
            u_lat = 0.0
        u_cost = 1.0 - outcome.cost_usd / self.cost_budget_usd
        if u_cost < 0.0:
            u_cost = 0.0
        if self.gate:
            r = c * (self._wc + self._wl * u_lat + self._wk * u_cost)
        else:
            r = self._wc * c + self._wl * u_lat + self._wk * u_cost
        return r if r <= 1.0 else 1.0

    @property
    def weights(self) -> dict[str, float]:
        """The normalized weights (summing to 1) the reward is computed with."""
        return {"correctness": self._wc, "latency": self._wl, "cost": self._wk}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; :meth:`from_dict` and ``get_reward`` read it back."""
        return {
            "type": _TYPE,
            "name": self.name,
            "weights": {
                "correctness": self.w_correctness,
                "latency": self.w_latency,
                "cost": self.w_cost,
            },
            "latency_budget_ms": self.latency_budget_ms,
            "cost_budget_usd": self.cost_budget_usd,
            "gate": self.gate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Scalarizer | None = None) -> Scalarizer:
        """Build a scalarizer from a mapping, optionally as overrides of ``base``.

        Weights may be given nested, ``{"weights": {"correctness": .., "latency": ..,
        "cost": ..}}``, or flat, ``{"w_correctness": .., ...}`` (not both for one weight).
        The other keys are ``latency_budget_ms``, ``cost_budget_usd``, ``gate``, ``name``
        and an optional ``type`` (which must be ``"scalarizer"``).

        Without ``base`` the three weights and both budgets are required. With ``base``
        every missing field (each weight separately) is taken from it; the result keeps the
        base's name when it equals the base, else it is named ``"<base name>+custom"``
        unless ``name`` is given.

        Raises
        ------
        routewise.errors.ConfigError
            Naming the key as it was spelled in ``data`` (e.g. ``weights.latency``).
        """
        if not isinstance(data, Mapping):
            raise ConfigError("reward", f"must be a mapping, got {type(data).__name__}")
        values: dict[str, Any] = {}
        spelled: dict[str, str] = {}  # dataclass field -> key as written by the user
        for key, value in data.items():
            if key == "type":
                if value != _TYPE:
                    raise ConfigError("type", f"unknown reward type {value!r}; expected {_TYPE!r}")
            elif key == "weights":
                if not isinstance(value, Mapping):
                    raise ConfigError(
                        "weights", f"must be a mapping of {sorted(_WEIGHT_KEYS)}, got {value!r}"
                    )
                for wkey, w in value.items():
                    if wkey not in _WEIGHT_KEYS:
                        raise ConfigError(
                            f"weights.{wkey}",
                            f"unknown weight; expected one of {', '.join(_WEIGHT_KEYS)}",
                        )
                    fname = _WEIGHT_KEYS[wkey]
                    if fname in data:
                        raise ConfigError(
                            fname, f"given twice, as {fname!r} and as 'weights.{wkey}'"
                        )
                    values[fname] = w
                    spelled[fname] = f"weights.{wkey}"
            elif key in _FIELDS:
                values[key] = value
                spelled[key] = key
            else:
                raise ConfigError(
                    str(key),
                    "unknown field; expected one of preset, type, weights, " + ", ".join(_FIELDS),
                )
        if base is None:
            for fname in _REQUIRED:
                if fname not in values:
                    raise ConfigError(fname, "is required")
        else:
            for fname in _FIELDS:
                values.setdefault(fname, getattr(base, fname))
        try:
            built = cls(**values)
        except ConfigError as exc:
            raise ConfigError(spelled.get(exc.field, exc.field), exc.reason) from None
        if base is not None and "name" not in data and built != base:
            built = cls(**{**values, "name": f"{base.name}+custom"})
        return built
