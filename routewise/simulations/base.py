"""The environment protocol and the per-arm effects scenario events put on top of it.

An :class:`Environment` is a world the simulator routes requests in: it draws request
contexts from a traffic mix and says, for each context, how every arm's outcome is
distributed (:class:`~routewise.simulations.outcomes.OutcomeParams`). Scenario events do not
touch the environment; they set :class:`Effects` (degradations, outages, price changes) that
:meth:`Effects.apply` lays over the environment's parameters, and may switch the mix.

Examples
--------
>>> import numpy as np
>>> from routewise.simulations.outcomes import OutcomeParams
>>> fx = Effects(2)
>>> fx.latency_factor[1], fx.validity_drop[1] = 3.0, 0.2
>>> p = fx.apply(OutcomeParams.constant(p_valid=[0.9, 0.9], lat_mu=[6.0, 6.0],
...                                     lat_sigma=[0.1, 0.1], cost=[0.0, 0.0]))
>>> p.p_valid[0].round(3).tolist(), bool(np.isclose(p.lat_mu[0, 1], 6.0 + np.log(3.0)))
([0.9, 0.7], True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from routewise.errors import ConfigError
from routewise.simulations.outcomes import FloatArray, OutcomeParams
from routewise.types import Arm

__all__ = ["Effects", "Environment"]


class Environment(ABC):
    """A world of arms whose outcomes depend on the request context.

    Subclasses implement :attr:`arms` and :meth:`sample`; everything else has defaults.

    Examples
    --------
    A two-arm world where the fast arm is right only on short requests:

    >>> import numpy as np
    >>> from routewise.simulations.outcomes import OutcomeParams
    >>> class Toy(Environment):
    ...     name = "toy"
    ...     @property
    ...     def arms(self):
    ...         return [Arm("fast:model", "direct_emit"), Arm("big:model", "direct_emit")]
    ...     def sample(self, n, rng, mix=None):
    ...         long = rng.random(n) < 0.5
    ...         p = OutcomeParams.constant(p_valid=[1.0, 0.95], lat_mu=np.log([300.0, 2000.0]),
    ...                                    lat_sigma=[0.2, 0.2], cost=[0.0, 0.004], n=n)
    ...         p.p_valid[long, 0] = 0.3
    ...         return [{"long": bool(x)} for x in long], p
    >>> from routewise.simulations import load_scenario, simulate
    >>> res = simulate(load_scenario("stationary"), ["linucb"], rounds=400, environment=Toy())
    >>> res.arms
    ['fast:model/direct_emit', 'big:model/direct_emit']
    """

    name: str = "environment"

    @property
    @abstractmethod
    def arms(self) -> list[Arm]:
        """The arms, in a fixed order (column ``k`` of every parameter array)."""

    @property
    def mixes(self) -> list[str]:
        """Names of the traffic mixes :meth:`sample` accepts (empty: only its own)."""
        return []

    @property
    def default_mix(self) -> str | None:
        """The mix used when a scenario does not choose one."""
        return None

    def features(self) -> dict[str, Any] | None:
        """The Controller feature spec recommended for this environment's contexts."""
        return None

    @abstractmethod
    def sample(
        self, n: int, rng: np.random.Generator, mix: str | None = None
    ) -> tuple[list[dict[str, Any]], OutcomeParams]:
        """``n`` request contexts from ``mix`` and every arm's outcome distribution on each."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for reports."""
        return {"name": self.name, "arms": [a.id for a in self.arms]}


class Effects:
    """What scenario events currently do to each of ``k`` arms (all neutral at first).

    ``latency_factor`` multiplies latency, ``validity_drop`` is subtracted from P(valid),
    ``outage_rate`` is an extra failure probability (its failures are timeouts with
    probability ``outage_timeout_share``, lasting ``outage_timeout_ms``), ``price_factor``
    multiplies the cost.

    Examples
    --------
    >>> import numpy as np
    >>> fx = Effects(3)
    >>> fx.price_factor[0] = 2.0
    >>> fx.outage_rate[2] = 1.0
    >>> sorted(fx.to_dict(["a/direct_emit", "b/direct_emit", "c/direct_emit"]))
    ['a/direct_emit', 'c/direct_emit']
    >>> fx.recover(np.array([False, False, True]))
    >>> fx.to_dict(["a/direct_emit", "b/direct_emit", "c/direct_emit"])
    {'a/direct_emit': {'price_factor': 2.0}}
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.latency_factor: FloatArray = np.ones(k)
        self.validity_drop: FloatArray = np.zeros(k)
        self.outage_rate: FloatArray = np.zeros(k)
        self.outage_timeout_share: FloatArray = np.ones(k)
        self.outage_timeout_ms: FloatArray = np.full(k, 30_000.0)
        self.price_factor: FloatArray = np.ones(k)

    def copy(self) -> Effects:
        out = Effects(self.k)
        for name in self._ARRAYS:
            setattr(out, name, getattr(self, name).copy())
        return out

    _ARRAYS = (
        "latency_factor",
        "validity_drop",
        "outage_rate",
        "outage_timeout_share",
        "outage_timeout_ms",
        "price_factor",
    )

    @property
    def neutral(self) -> bool:
        return (
            bool(np.all(self.latency_factor == 1.0))
            and not self.validity_drop.any()
            and not self.outage_rate.any()
            and bool(np.all(self.price_factor == 1.0))
        )

    def recover(self, mask: FloatArray | np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        """Undo degradations and outages of the arms in ``mask`` (prices stay)."""
        self.latency_factor[mask] = 1.0
        self.validity_drop[mask] = 0.0
        self.outage_rate[mask] = 0.0

    def apply(self, params: OutcomeParams) -> OutcomeParams:
        """``params`` with these effects laid over them (a new object; the input is unchanged)."""
        if self.neutral:
            return params
        out = params.copy()
        out.lat_mu += np.log(self.latency_factor)
        out.p_valid = np.clip(out.p_valid - self.validity_drop, 0.0, 1.0)
        o = self.outage_rate
        if o.any():
            base = out.error_rate
            total = 1.0 - (1.0 - base) * (1.0 - o)
            # failures are a mixture of the base errors and the outage's
            safe = np.where(total > 0.0, total, 1.0)
            share = (base * out.timeout_share + (total - base) * self.outage_timeout_share) / safe
            out.timeout_share = np.where(total > 0.0, share, out.timeout_share)
            # every timeout of an arm under outage lasts the outage's timeout (the draws and
            # the expected reward both read these parameters, so they stay consistent)
            out.timeout_ms = np.where(o > 0.0, self.outage_timeout_ms, out.timeout_ms)
            out.error_rate = total
        out.cost = out.cost * self.price_factor
        return out

    def to_dict(self, arm_ids: list[str]) -> dict[str, dict[str, float]]:
        """Non-neutral effects per arm id (for reports)."""
        out: dict[str, dict[str, float]] = {}
        for k, aid in enumerate(arm_ids):
            row: dict[str, float] = {}
            if self.latency_factor[k] != 1.0:
                row["latency_factor"] = float(self.latency_factor[k])
            if self.validity_drop[k]:
                row["validity_drop"] = float(self.validity_drop[k])
            if self.outage_rate[k]:
                row["outage_rate"] = float(self.outage_rate[k])
            if self.price_factor[k] != 1.0:
                row["price_factor"] = float(self.price_factor[k])
            if row:
                out[aid] = row
        return out


def check_mapping(value: Any, field: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else a :class:`~routewise.errors.ConfigError` on ``field``."""
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"must be a table/mapping, got {type(value).__name__}")
    return value
