"""Outcome distributions of every arm on a batch of requests, their exact expected reward,
and seeded draws from them.

Every environment (synthetic or fitted to a trace) describes what happens when arm ``k``
serves request ``i`` by the same handful of numbers, held in :class:`OutcomeParams` as
``(n, K)`` arrays:

* the call fails with probability ``error_rate`` — as a timeout (share ``timeout_share``,
  latency ``timeout_ms``) or a fast error (latency ``error_latency_ms``), cost 0;
* otherwise the answer is schema-valid with probability ``p_valid``, independently of its
  latency ``L ~ LogNormal(lat_mu, lat_sigma)`` (ms), and costs ``cost`` USD.

With a :class:`~routewise.reward.Scalarizer` reward (budgets ``B_L``, ``B_C``, normalized
weights ``w_c, w_l, w_k``) the expected reward is then exact, using

    E[clip(1 − L/B, 0, 1)] = Φ(d) − exp(μ + σ²/2)/B · Φ(d − σ),   d = (ln B − μ)/σ

for the log-normal latency (and ``max(0, 1 − e^μ/B)`` when σ = 0)::

    gated:    E[r] = (1 − e)·p·(w_c + w_l·E[u_lat] + w_k·u_cost)
    ungated:  E[r] = (1 − e)·(w_c·p + w_l·E[u_lat] + w_k·u_cost) + e·(w_l·E[u_lat | error] + w_k)

so the regret of a policy against the per-request oracle ``max_k E[r_ik]`` is exact, not a
Monte-Carlo estimate.

Examples
--------
>>> import numpy as np
>>> from routewise.reward import get_reward
>>> p = OutcomeParams.constant(p_valid=[0.9, 0.5], lat_mu=np.log([800.0, 300.0]),
...                            lat_sigma=[0.0, 0.0], cost=[0.002, 0.0])
>>> mu = expected_reward(p, get_reward("balanced"))
>>> [round(v, 4) for v in mu[0].tolist()]  # .9·(.6 + .25·(1 − 800/5000) + .15·(1 − .2))
[0.837, 0.4925]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from routewise.errors import ConfigError
from routewise.reward import Scalarizer
from routewise.types import Outcome

__all__ = [
    "ERROR_KINDS",
    "OutcomeDraws",
    "OutcomeParams",
    "expected_latency_utility",
    "expected_reward",
    "realize",
]

FloatArray = npt.NDArray[np.float64]

#: Error labels written into an :class:`~routewise.types.Outcome` (index = error code − 1).
ERROR_KINDS: tuple[str, str] = ("timeout", "server_error")


@dataclass(slots=True)
class OutcomeParams:
    """Outcome distribution of each of ``K`` arms on each of ``n`` requests (all ``(n, K)``).

    Examples
    --------
    >>> p = OutcomeParams.constant(p_valid=[0.9, 0.7], lat_mu=[6.5, 6.0], lat_sigma=[0.3, 0.3],
    ...                            cost=[0.002, 0.0005], n=3)
    >>> p.shape, p.select(slice(0, 1)).shape
    ((3, 2), (1, 2))
    """

    p_valid: FloatArray
    """P(schema-valid answer | the call did not fail)."""
    error_rate: FloatArray
    """P(the call fails)."""
    timeout_share: FloatArray
    """P(timeout | the call fails); the rest are fast errors."""
    lat_mu: FloatArray
    """Log of the median latency (ms) of a served call."""
    lat_sigma: FloatArray
    """Log-normal shape of the latency of a served call."""
    cost: FloatArray
    """USD per served call (failed calls cost 0)."""
    timeout_ms: FloatArray
    """Latency of a timeout."""
    error_latency_ms: FloatArray
    """Latency of a fast error (5xx, rate limit)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, K)``."""
        s = self.p_valid.shape
        return int(s[0]), int(s[1])

    @classmethod
    def constant(
        cls,
        *,
        p_valid: Sequence[float] | FloatArray,
        lat_mu: Sequence[float] | FloatArray,
        lat_sigma: Sequence[float] | FloatArray,
        cost: Sequence[float] | FloatArray,
        error_rate: Sequence[float] | FloatArray | None = None,
        timeout_share: float = 0.5,
        timeout_ms: float = 30_000.0,
        error_latency_ms: float = 400.0,
        n: int = 1,
    ) -> OutcomeParams:
        """The same per-arm parameters on ``n`` requests (handy in tests and examples)."""
        pv = np.asarray(p_valid, dtype=np.float64)
        k = pv.shape[0]

        def rows(v: Sequence[float] | FloatArray | float) -> FloatArray:
            a = np.broadcast_to(np.asarray(v, dtype=np.float64), (k,))
            return np.tile(a, (n, 1))

        return cls(
            p_valid=rows(pv),
            error_rate=rows(np.zeros(k) if error_rate is None else error_rate),
            timeout_share=rows(timeout_share),
            lat_mu=rows(lat_mu),
            lat_sigma=rows(lat_sigma),
            cost=rows(cost),
            timeout_ms=rows(timeout_ms),
            error_latency_ms=rows(error_latency_ms),
        )

    def copy(self) -> OutcomeParams:
        return OutcomeParams(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def select(self, rows: npt.NDArray[np.intp] | slice) -> OutcomeParams:
        """The parameters of a subset of the requests."""
        return OutcomeParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def expected_latency_utility(mu: FloatArray, sigma: FloatArray, budget: float) -> FloatArray:
    """``E[clip(1 − L/budget, 0, 1)]`` for ``L ~ LogNormal(mu, sigma)`` (elementwise, exact).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mu, sigma, budget = np.log(1500.0), 0.6, 2000.0
    >>> exact = float(expected_latency_utility(np.array([mu]), np.array([sigma]), budget)[0])
    >>> mc = float(np.clip(1 - np.exp(mu + sigma * rng.standard_normal(400_000)) / budget, 0, 1).mean())
    >>> abs(exact - mc) < 2e-3
    True
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    log_b = np.log(budget)
    safe = np.where(sigma > 0.0, sigma, 1.0)
    d = (log_b - mu) / safe
    smooth = ndtr(d) - np.exp(mu + 0.5 * safe * safe - log_b) * ndtr(d - safe)
    sharp = np.maximum(0.0, 1.0 - np.exp(mu - log_b))
    out: FloatArray = np.where(sigma > 0.0, np.clip(smooth, 0.0, 1.0), sharp)
    return out


def expected_reward(params: OutcomeParams, reward: Scalarizer) -> FloatArray:
    """Exact ``E[reward(outcome)]`` for every (request, arm): an ``(n, K)`` array.

    Only :class:`~routewise.reward.Scalarizer` rewards have a closed form; any other reward
    function is a :class:`~routewise.errors.ConfigError`.
    """
    if not isinstance(reward, Scalarizer):
        raise ConfigError(
            "reward",
            f"the simulator needs a Scalarizer reward (a preset or weights) for exact expected "
            f"rewards, got {type(reward).__name__}",
        )
    w = reward.weights
    wc, wl, wk = w["correctness"], w["latency"], w["cost"]
    u_lat = expected_latency_utility(params.lat_mu, params.lat_sigma, reward.latency_budget_ms)
    u_cost = np.clip(1.0 - params.cost / reward.cost_budget_usd, 0.0, 1.0)
    e = params.error_rate
    if reward.gate:
        served = params.p_valid * (wc + wl * u_lat + wk * u_cost)
        out: FloatArray = (1.0 - e) * served
    else:
        served = wc * params.p_valid + wl * u_lat + wk * u_cost
        b = reward.latency_budget_ms
        u_err = params.timeout_share * np.clip(1.0 - params.timeout_ms / b, 0.0, 1.0) + (
            1.0 - params.timeout_share
        ) * np.clip(1.0 - params.error_latency_ms / b, 0.0, 1.0)
        out = (1.0 - e) * served + e * (wl * u_err + wk)
    return np.minimum(out, 1.0)


@dataclass(slots=True)
class OutcomeDraws:
    """One realized outcome for every (request, arm), drawn with common random numbers
    (the same uniforms for every arm of a request), as Python lists for fast lookup."""

    valid: list[list[bool]]
    latency_ms: list[list[float]]
    cost_usd: list[list[float]]
    error: list[list[int]]
    """0 = no error, else 1 + index into :data:`ERROR_KINDS`."""

    def outcome(self, i: int, k: int) -> Outcome:
        """The :class:`~routewise.types.Outcome` of arm ``k`` on request ``i``."""
        code = self.error[i][k]
        return Outcome(
            valid=self.valid[i][k],
            latency_ms=self.latency_ms[i][k],
            cost_usd=self.cost_usd[i][k],
            error=ERROR_KINDS[code - 1] if code else None,
        )


def realize(params: OutcomeParams, rng: np.random.Generator) -> OutcomeDraws:
    """Draw one outcome per (request, arm) from ``params``.

    Examples
    --------
    >>> import numpy as np
    >>> p = OutcomeParams.constant(p_valid=[1.0, 0.0], lat_mu=[6.0, 6.0], lat_sigma=[0.0, 0.0],
    ...                            cost=[0.001, 0.0], error_rate=[0.0, 1.0], timeout_share=1.0)
    >>> d = realize(p, np.random.default_rng(0))
    >>> d.outcome(0, 0).valid, d.outcome(0, 1).error, d.outcome(0, 1).latency_ms
    (True, 'timeout', 30000.0)
    """
    n, _ = params.shape
    u_err = rng.random(n)[:, None]
    u_kind = rng.random(n)[:, None]
    u_valid = rng.random(n)[:, None]
    z = rng.standard_normal(n)[:, None]
    failed = u_err < params.error_rate
    timeout = u_kind < params.timeout_share
    code = np.where(failed, np.where(timeout, 1, 2), 0)
    latency = np.exp(params.lat_mu + params.lat_sigma * z)
    latency = np.where(
        failed, np.where(timeout, params.timeout_ms, params.error_latency_ms), latency
    )
    valid = (u_valid < params.p_valid) & ~failed
    cost = np.where(failed, 0.0, params.cost)
    return OutcomeDraws(
        valid=valid.tolist(),
        latency_ms=latency.tolist(),
        cost_usd=cost.tolist(),
        error=code.tolist(),
    )
