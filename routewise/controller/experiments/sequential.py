"""Sequential statistics: always-valid confidence sequences for experiment comparisons.

The normal-mixture boundary (:func:`normal_mixture_half_width`, :func:`normal_mixture_p_value`
and the mixing ratio :func:`mixing_ratio`), the streaming per-variant statistics
(:class:`VariantStats`) and the running reward-difference confidence sequence of one candidate
against the control (:class:`ComparisonHistory`). The mathematics is described in
:mod:`routewise.controller.experiments`. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import optimize

from routewise.controller.stats import LatencyHistogram
from routewise.errors import ConfigError, InvalidOutcome, StateError
from routewise.types.experiments import check_alpha

__all__ = [
    "MIN_N_SEQUENTIAL",
    "P95",
    "ComparisonHistory",
    "Point",
    "VariantStats",
    "cs",
    "diff_cs",
    "half_width",
    "mixing_ratio",
    "normal_mixture_half_width",
    "normal_mixture_p_value",
]

FloatArray = npt.NDArray[np.float64]

#: Observations each side needs before a confidence sequence is reported.
MIN_N_SEQUENTIAL: Final = 30
#: The latency quantile the reports and guardrails read.
P95: Final = 0.95

# --------------------------------------------------------------------------------------------
# the normal-mixture boundary


@lru_cache(maxsize=64)
def mixing_ratio(alpha: float) -> float:
    """``r*(α)``: the mixture variance, as a fraction of the target precision, that makes the
    normal-mixture boundary tightest at the target (root of ``log((1 + r)/(r α²)) = 1/r``).

    Examples
    --------
    >>> round(mixing_ratio(0.05), 4)
    0.1218
    """
    check_alpha(alpha, "alpha")
    log_inv_a2 = -2.0 * math.log(alpha)

    def f(r: float) -> float:
        return math.log1p(1.0 / r) + log_inv_a2 - 1.0 / r

    return float(optimize.brentq(f, 1e-12, 1e12, xtol=1e-15, rtol=1e-12))


def _phi(v: FloatArray, vt: FloatArray, alpha: float) -> FloatArray:
    """``φ = τ²/V`` with ``τ² = V*/r*``; callers guarantee ``v > 0`` and ``vt > 0``."""
    out: FloatArray = vt / (mixing_ratio(alpha) * v)
    return out


def normal_mixture_half_width(
    var: npt.ArrayLike, var_target: npt.ArrayLike, alpha: float
) -> FloatArray:
    """Half-width of the two-sided ``1 − α`` normal-mixture confidence sequence.

    Parameters
    ----------
    var
        Variance of the estimator now (e.g. ``s²/n`` for a mean, ``s²_a/n_a + s²_b/n_b`` for
        a difference). ``0`` gives a zero width (a degenerate, deterministic estimate).
    var_target
        Its variance at the target sample size, where the boundary is tightest.
    alpha
        Error probability, uniformly over time.

    Examples
    --------
    >>> round(float(normal_mixture_half_width(1.0, 1.0, 0.05)) / 1.96, 2)  # vs a fixed 95 % CI
    1.55
    """
    v = np.asarray(var, dtype=np.float64)
    vt = np.asarray(var_target, dtype=np.float64)
    ok = (v > 0) & (vt > 0)
    sv = np.where(ok, v, 1.0)
    svt = np.where(ok, vt, 1.0)
    phi = _phi(sv, svt, alpha)
    hw2 = (sv + mixing_ratio(alpha) * sv * sv / svt) * (np.log1p(phi) - 2.0 * math.log(alpha))
    out: FloatArray = np.where(ok, np.sqrt(hw2), np.where(v > 0, np.inf, 0.0))
    return out


def normal_mixture_p_value(
    diff: npt.ArrayLike, var: npt.ArrayLike, var_target: npt.ArrayLike, alpha: float
) -> FloatArray:
    """Always-valid p-value ``min(1, 1/Λ)`` of ``H₀: θ = 0`` (not yet running-minimized).

    ``p ≤ α`` exactly when 0 lies outside the ``1 − α`` confidence sequence.

    Examples
    --------
    >>> hw = float(normal_mixture_half_width(1e-4, 1e-4, 0.05))
    >>> round(float(normal_mixture_p_value(hw, 1e-4, 1e-4, 0.05)), 6)
    0.05
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    vt = np.asarray(var_target, dtype=np.float64)
    ok = (v > 0) & (vt > 0)
    sv = np.where(ok, v, 1.0)
    phi = _phi(sv, np.where(ok, vt, 1.0), alpha)
    log_lr = -0.5 * np.log1p(phi) + phi / (1.0 + phi) * d * d / (2.0 * sv)
    p = np.minimum(1.0, np.exp(-log_lr))
    degenerate = np.where((v <= 0) & (d != 0), 0.0, 1.0)
    out: FloatArray = np.where(ok, p, degenerate)
    return out


def half_width(var: float, var_target: float, alpha: float) -> float:
    """Scalar :func:`normal_mixture_half_width` (pure ``math``: the per-feedback hot path)."""
    if var <= 0:
        return 0.0
    if var_target <= 0:
        return math.inf
    r = mixing_ratio(alpha)
    phi = var_target / (r * var)
    return math.sqrt((var + r * var * var / var_target) * (math.log1p(phi) - 2.0 * math.log(alpha)))


def cs(diff: float, var: float, var_target: float, alpha: float) -> tuple[float, float, float]:
    """``(low, high, p)`` of the CS for one estimate (scalar twin of the public functions)."""
    if var <= 0 or var_target <= 0:
        hw = half_width(var, var_target, alpha)
        return diff - hw, diff + hw, (0.0 if var <= 0 and diff != 0 else 1.0)
    phi = var_target / (mixing_ratio(alpha) * var)
    log_lr = -0.5 * math.log1p(phi) + phi / (1.0 + phi) * diff * diff / (2.0 * var)
    hw = half_width(var, var_target, alpha)
    return diff - hw, diff + hw, min(1.0, math.exp(-log_lr))


# --------------------------------------------------------------------------------------------
# streaming statistics


class VariantStats:
    """Streaming outcome statistics of one variant (mergeable, plain-JSON state).

    Reward and cost moments are Welford running means and sums of squared deviations
    (merged with Chan et al.'s formula); validity is a count; latency goes into a ±1 %
    log-bucketed histogram (p95). ``assignments`` counts decisions routed to the variant
    (:meth:`assigned`), ``n`` the outcomes observed.

    Examples
    --------
    >>> s = VariantStats()
    >>> for r, ok, ms in [(1.0, True, 100.0), (0.0, False, 300.0), (0.5, True, 200.0)]:
    ...     s.assigned()
    ...     s.observe(r, ok, ms, 0.001)
    >>> s.n, s.mean_reward, s.var_reward, round(s.validity, 3), s.assignments
    (3, 0.5, 0.25, 0.667, 3)
    >>> VariantStats.from_state(s.to_state()).to_state() == s.to_state()
    True
    """

    __slots__ = (
        "_cost_m2",
        "_cost_mean",
        "_latency",
        "_n",
        "_reward_m2",
        "_reward_mean",
        "_valid",
        "assignments",
    )

    def __init__(self) -> None:
        self.assignments = 0
        self._n = 0
        self._reward_mean = 0.0
        self._reward_m2 = 0.0
        self._valid = 0
        self._cost_mean = 0.0
        self._cost_m2 = 0.0
        self._latency = LatencyHistogram()

    def assigned(self, k: int = 1) -> None:
        """Count ``k`` decisions routed to this variant."""
        self.assignments += k

    def observe(self, reward: float, valid: bool, latency_ms: float, cost_usd: float) -> None:
        """Add one outcome (the reward it earned, schema validity, latency and cost).

        Raises
        ------
        InvalidOutcome
            A non-finite reward, or a negative or non-finite latency or cost; nothing is
            changed then.
        """
        if not math.isfinite(reward):
            raise InvalidOutcome("reward", f"must be finite, got {reward!r}")
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise InvalidOutcome("latency_ms", f"must be finite and >= 0, got {latency_ms!r}")
        if not (math.isfinite(cost_usd) and cost_usd >= 0):
            raise InvalidOutcome("cost_usd", f"must be finite and >= 0, got {cost_usd!r}")
        self._n += 1
        n = self._n
        d = reward - self._reward_mean
        self._reward_mean += d / n
        self._reward_m2 += d * (reward - self._reward_mean)
        d = cost_usd - self._cost_mean
        self._cost_mean += d / n
        self._cost_m2 += d * (cost_usd - self._cost_mean)
        self._valid += bool(valid)
        self._latency.add(float(latency_ms))

    def merge(self, other: VariantStats) -> None:
        """Add ``other``'s observations (another replica's) into this one."""
        if other._n == 0:
            self.assignments += other.assignments
            return
        n_a, n_b = self._n, other._n
        n = n_a + n_b
        for mean_attr, m2_attr in (("_reward_mean", "_reward_m2"), ("_cost_mean", "_cost_m2")):
            ma, mb = getattr(self, mean_attr), getattr(other, mean_attr)
            delta = mb - ma
            setattr(self, mean_attr, ma + delta * n_b / n)
            setattr(
                self,
                m2_attr,
                getattr(self, m2_attr) + getattr(other, m2_attr) + delta * delta * n_a * n_b / n,
            )
        self._n = n
        self._valid += other._valid
        self.assignments += other.assignments
        merged = self._latency.to_state()
        for k, c in other._latency.to_state().items():
            merged[k] = merged.get(k, 0) + c
        self._latency = LatencyHistogram.from_state(merged)

    @property
    def n(self) -> int:
        """Number of observed outcomes."""
        return self._n

    @property
    def mean_reward(self) -> float | None:
        """Mean reward (``None`` before the first outcome)."""
        return self._reward_mean if self._n else None

    @property
    def var_reward(self) -> float | None:
        """Sample variance of the reward (``ddof=1``; ``None`` below 2 outcomes)."""
        return self._reward_m2 / (self._n - 1) if self._n > 1 else None

    @property
    def validity(self) -> float | None:
        """Share of schema-valid outcomes."""
        return self._valid / self._n if self._n else None

    @property
    def p95_latency_ms(self) -> float | None:
        """95th percentile latency (±1 %, from the log-bucketed histogram)."""
        return self._latency.quantile(P95)

    @property
    def cost_mean(self) -> float | None:
        """Mean cost per request (USD)."""
        return self._cost_mean if self._n else None

    @property
    def var_cost(self) -> float | None:
        """Sample variance of the cost per request (``ddof=1``)."""
        return self._cost_m2 / (self._n - 1) if self._n > 1 else None

    @property
    def latency(self) -> LatencyHistogram:
        """The latency histogram (read it, do not add to it)."""
        return self._latency

    def _var(self) -> float:
        return max(self._reward_m2, 0.0) / (self._n - 1) if self._n > 1 else 0.0

    def _cvar(self) -> float:
        return max(self._cost_m2, 0.0) / (self._n - 1) if self._n > 1 else 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON state; :meth:`from_state` restores it exactly."""
        return {
            "version": 1,
            "assignments": self.assignments,
            "n": self._n,
            "reward_mean": self._reward_mean,
            "reward_m2": self._reward_m2,
            "valid": self._valid,
            "cost_mean": self._cost_mean,
            "cost_m2": self._cost_m2,
            "latency": self._latency.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> VariantStats:
        """Restore from :meth:`to_state` output.

        Raises
        ------
        StateError
            A missing key or a value of the wrong type.
        """
        try:
            s = cls()
            s.assignments = int(state["assignments"])
            s._n = int(state["n"])
            s._reward_mean = float(state["reward_mean"])
            s._reward_m2 = float(state["reward_m2"])
            s._valid = int(state["valid"])
            s._cost_mean = float(state["cost_mean"])
            s._cost_m2 = float(state["cost_m2"])
            s._latency = LatencyHistogram.from_state(dict(state["latency"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"variant stats state: {exc!r}") from None
        if s._latency.count != s._n:
            raise StateError(f"variant stats state: {s._latency.count} latencies for n={s._n}")
        return s

    def __repr__(self) -> str:
        return f"VariantStats(n={self._n}, mean_reward={self.mean_reward}, assignments={self.assignments})"


# --------------------------------------------------------------------------------------------
# comparisons


def diff_cs(
    ctrl: VariantStats, cand: VariantStats, alpha: float, target_n: int
) -> tuple[float, float, float, float] | None:
    """``(diff, low, high, p)`` of the reward-difference CS, ``None`` during the burn-in."""
    if ctrl.n < MIN_N_SEQUENTIAL or cand.n < MIN_N_SEQUENTIAL:
        return None
    va, vb = ctrl._var(), cand._var()
    diff = cand._reward_mean - ctrl._reward_mean
    low, high, p = cs(diff, va / ctrl.n + vb / cand.n, (va + vb) / target_n, alpha)
    return diff, low, high, p


Point = tuple[int, int, float, float, float]


class ComparisonHistory:
    """The reward-difference confidence sequence of one candidate against the control,
    over time: the running p-value minimum and CS intersection, and a thinned time series.

    Call :meth:`update` after every outcome of either variant (or at any other times: the
    guarantees hold at arbitrary, data-dependent times). ``points`` keeps
    ``(n_control, n_candidate, diff, cs_low, cs_high)`` at every ``stride``-th update; when
    it would exceed ``max_points`` every other point is dropped and the stride doubles, so
    it spans the whole experiment in at most ``max_points`` points.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ctl, cand, h = VariantStats(), VariantStats(), ComparisonHistory(max_points=50)
    >>> for _ in range(2000):
    ...     ctl.observe(float(rng.random() < 0.6), True, 100.0, 0.0)
    ...     cand.observe(float(rng.random() < 0.7), True, 100.0, 0.0)
    ...     h.update(ctl, cand, alpha=0.05)
    >>> len(h.points) <= 50, h.min_p_value < 0.05, h.cs_low > 0
    (True, True, True)
    >>> ComparisonHistory.from_state(h.to_state()).to_state() == h.to_state()
    True
    """

    def __init__(self, max_points: int = 500) -> None:
        if not isinstance(max_points, int) or max_points < 4:
            raise ConfigError("max_points", f"must be an integer >= 4, got {max_points!r}")
        self.max_points = max_points
        self._points: list[Point] = []
        self._stride = 1
        self._updates = 0
        self._min_p = 1.0
        self._low = -math.inf
        self._high = math.inf
        self._last: Point | None = None

    def update(
        self,
        control: VariantStats,
        candidate: VariantStats,
        *,
        alpha: float = 0.05,
        target_n: int = 10_000,
    ) -> None:
        """Evaluate the CS on the current statistics and record it (no-op in the burn-in)."""
        res = diff_cs(control, candidate, alpha, target_n)
        if res is None:
            return
        diff, low, high, p = res
        self.record(control.n, candidate.n, diff, low, high, p)

    def record(
        self, n_control: int, n_candidate: int, diff: float, low: float, high: float, p: float
    ) -> None:
        """Record one evaluated CS (what :meth:`update` does after computing it)."""
        pt: Point = (int(n_control), int(n_candidate), float(diff), float(low), float(high))
        self._min_p = min(self._min_p, float(p))
        self._low = max(self._low, pt[3])
        self._high = min(self._high, pt[4])
        self._last = pt
        if self._updates % self._stride == 0:
            self._points.append(pt)
            if len(self._points) > self.max_points:
                self._points = self._points[::2]
                self._stride *= 2
        self._updates += 1

    @property
    def points(self) -> list[Point]:
        """The thinned series ``(n_control, n_candidate, diff, cs_low, cs_high)``."""
        return list(self._points)

    @property
    def last(self) -> Point | None:
        """The latest evaluated point (kept even when thinned out of ``points``)."""
        return self._last

    @property
    def updates(self) -> int:
        """How many CS evaluations were recorded."""
        return self._updates

    @property
    def min_p_value(self) -> float:
        """Running minimum of the always-valid p-value (1 before any evaluation)."""
        return self._min_p

    @property
    def cs_low(self) -> float | None:
        """Running maximum of the lower bounds (the intersected CS), ``None`` if unbounded."""
        return self._low if math.isfinite(self._low) else None

    @property
    def cs_high(self) -> float | None:
        """Running minimum of the upper bounds, ``None`` if unbounded."""
        return self._high if math.isfinite(self._high) else None

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON state (unbounded ends are ``null``)."""
        return {
            "version": 1,
            "max_points": self.max_points,
            "points": [list(p) for p in self._points],
            "stride": self._stride,
            "updates": self._updates,
            "min_p": self._min_p,
            "low": self.cs_low,
            "high": self.cs_high,
            "last": list(self._last) if self._last is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ComparisonHistory:
        """Restore from :meth:`to_state` output (``StateError`` when malformed)."""

        def point(p: Any) -> Point:
            a, b, c, d, e = p
            return (int(a), int(b), float(c), float(d), float(e))

        try:
            h = cls(int(state["max_points"]))
            h._points = [point(p) for p in state["points"]]
            h._stride = int(state["stride"])
            h._updates = int(state["updates"])
            h._min_p = float(state["min_p"])
            h._low = -math.inf if state["low"] is None else float(state["low"])
            h._high = math.inf if state["high"] is None else float(state["high"])
            h._last = None if state["last"] is None else point(state["last"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"comparison history state: {exc!r}") from None
        return h
