r"""Off-policy estimators on arrays, with the definitions of Open Bandit Pipeline (OBP).

For ``n`` logged rounds with reward ``r_t``, logging propensity ``p_t = π_b(a_t|x_t)`` (the
``pscore``), the target policy's probability of the logged action ``π_e(a_t|x_t)``
(``target_prob``), a reward model's prediction for the logged action ``q̂(x_t, a_t)``
(``q_logged``) and the model's value of the target policy ``Σ_a π_e(a|x_t)·q̂(x_t, a)``
(``target_value``), with importance weight ``w_t = π_e(a_t|x_t) / p_t``:

=========  ================================================================  ===================
estimator  value                                                             OBP class
=========  ================================================================  ===================
IPS        ``mean(w·r)``  (``w`` clipped at ``clip``)                          InverseProbabilityWeighting
SNIPS      ``Σ w·r / Σ w``                                                   SelfNormalizedInverseProbabilityWeighting
DM         ``mean(target_value)``                                            DirectMethod
DR         ``mean(target_value + w·(r − q_logged))``  (``w`` clipped)          DoublyRobust
Switch-DR  ``mean(target_value + 1{w ≤ τ}·w·(r − q_logged))``                 SwitchDoublyRobust
=========  ================================================================  ===================

Each estimator returns a float; its ``*_interval`` companion returns an :class:`Estimate`
(value and a bootstrap confidence interval). :func:`evaluate` computes all five with one
shared set of bootstrap resamples, and :func:`ess` is Kish's effective sample size of the
importance weights, ``(Σw)² / Σw²``.

Bootstrap: the percentile interval of ``n_boot`` resamples with replacement, as OBP's
``estimate_confidence_interval_by_bootstrap`` — except that SNIPS is resampled as the ratio it
is (numerator and denominator from the same resample) rather than with the full-sample
normalizer. When ``n · n_boot`` exceeds ``max_draws`` the resamples are drawn from a random
subsample of ``m = max_draws // n_boot`` rounds and their spread is rescaled by ``√(m/n)``
(the m-out-of-n bootstrap, valid for these mean-type estimators), so an interval on a million
rounds costs the same as on ``m``. Below that size the bootstrap is the plain one.

The intervals reflect sampling noise only: DM's (and, less so, DR's) does not include the reward
model's own error, so a biased model gives DM a tight interval around the wrong value — which
is why DR and SNIPS are the estimates to trust when the logging propensities are known.

Examples
--------
>>> import numpy as np
>>> reward = np.array([1.0, 0.0, 1.0, 1.0])
>>> pscore = np.array([0.5, 0.5, 0.25, 0.5])
>>> target = np.array([1.0, 0.0, 0.5, 1.0])
>>> ips(reward, pscore, target), snips(reward, pscore, target)
(1.5, 1.0)
>>> q_logged = np.array([0.8, 0.2, 0.6, 0.8])
>>> value = np.array([0.8, 0.7, 0.7, 0.8])
>>> round(dm(value), 4), round(dr(reward, pscore, target, q_logged, value), 4)
(0.75, 1.15)
>>> ess(pscore, target)
3.0
>>> est = dr_interval(reward, pscore, target, q_logged, value, n_boot=200, seed=0)
>>> est.ci_low <= est.value <= est.ci_high
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.errors import ConfigError

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "bootstrap_intervals",
    "dm",
    "dm_interval",
    "dr",
    "dr_interval",
    "ess",
    "evaluate",
    "ips",
    "ips_interval",
    "snips",
    "snips_interval",
    "switch_dr",
    "switch_dr_interval",
]

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

#: Estimator names, in report order.
ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr", "switch_dr")

DEFAULT_N_BOOT = 1000
DEFAULT_MAX_DRAWS = 20_000_000
DEFAULT_TAU = 100.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its ``1 − alpha`` confidence interval.

    Examples
    --------
    >>> Estimate(0.5, 0.4, float("nan")).to_dict()
    {'value': 0.5, 'ci_low': 0.4, 'ci_high': None}
    """

    value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able (a non-finite number, e.g. an estimate with no data, becomes ``None``)."""

        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {"value": num(self.value), "ci_low": num(self.ci_low), "ci_high": num(self.ci_high)}


# ----------------------------------------------------------------------------- checks
def _array(x: ArrayLike, name: str) -> FloatArray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(name, "must be an array of numbers") from None
    if a.ndim != 1:
        raise ConfigError(name, f"must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        raise ConfigError(name, "is empty")
    if not np.isfinite(a).all():
        i = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ConfigError(f"{name}[{i}]", f"must be finite, got {a[i]!r}")
    return a


def _arrays(**named: ArrayLike) -> list[FloatArray]:
    out = [_array(v, k) for k, v in named.items()]
    n = out[0].shape[0]
    for (k, _), a in zip(named.items(), out, strict=True):
        if a.shape[0] != n:
            first = next(iter(named))
            raise ConfigError(k, f"has {a.shape[0]} rounds, {first} has {n}")
    if "pscore" in named:
        p = out[list(named).index("pscore")]
        bad = (p <= 0.0) | (p > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"pscore[{i}]", f"must be in (0, 1], got {p[i]!r}")
    if "target_prob" in named:
        t = out[list(named).index("target_prob")]
        bad = (t < 0.0) | (t > 1.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"target_prob[{i}]", f"must be in [0, 1], got {t[i]!r}")
    return out


def _check_positive(name: str, v: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v) or v <= 0:
        raise ConfigError(name, f"must be a positive number, got {v!r}")
    return float(v)


# ----------------------------------------------------------------------- round terms
def _weights(pscore: FloatArray, target_prob: FloatArray, clip: float) -> FloatArray:
    w = target_prob / pscore
    return np.minimum(w, clip) if clip < math.inf else w


def _terms(
    reward: FloatArray,
    pscore: FloatArray,
    target_prob: FloatArray,
    q_logged: FloatArray | None,
    target_value: FloatArray | None,
    *,
    tau: float,
    clip: float,
) -> dict[str, tuple[FloatArray, FloatArray | None]]:
    """Per-round terms of every estimator: ``(numerator, denominator or None)``."""
    w_raw = target_prob / pscore
    w = np.minimum(w_raw, clip) if clip < math.inf else w_raw
    out: dict[str, tuple[FloatArray, FloatArray | None]] = {
        "ips": (w * reward, None),
        "snips": (w_raw * reward, w_raw),
    }
    if q_logged is not None and target_value is not None:
        resid = reward - q_logged
        out["dm"] = (target_value, None)
        out["dr"] = (target_value + w * resid, None)
        out["switch_dr"] = (target_value + np.where(w_raw <= tau, w_raw, 0.0) * resid, None)
    return out


def _point(num: FloatArray, den: FloatArray | None) -> float:
    if den is None:
        return float(num.mean())
    d = float(den.sum())
    return float(num.sum()) / d if d > 0 else 0.0


# --------------------------------------------------------------------- estimators
def ips(
    reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike, *, clip: float = math.inf
) -> float:
    """Inverse propensity scoring: ``mean(min(w, clip)·r)``."""
    r, p, t = _arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    return float((_weights(p, t, _check_positive("clip", clip)) * r).mean())


def snips(reward: ArrayLike, pscore: ArrayLike, target_prob: ArrayLike) -> float:
    """Self-normalized IPS: ``Σ w·r / Σ w`` (0 when every weight is 0)."""
    r, p, t = _arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    w = t / p
    return _point(w * r, w)


def dm(target_value: ArrayLike) -> float:
    """Direct method: ``mean(target_value)``, the reward model's value of the target policy."""
    (v,) = _arrays(target_value=target_value)
    return float(v.mean())


def dr(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    q_logged: ArrayLike,
    target_value: ArrayLike,
    *,
    clip: float = math.inf,
) -> float:
    """Doubly robust: ``mean(target_value + min(w, clip)·(r − q_logged))``."""
    r, p, t, q, v = _arrays(
        reward=reward,
        pscore=pscore,
        target_prob=target_prob,
        q_logged=q_logged,
        target_value=target_value,
    )
    return float((v + _weights(p, t, _check_positive("clip", clip)) * (r - q)).mean())


def switch_dr(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    q_logged: ArrayLike,
    target_value: ArrayLike,
    *,
    tau: float = DEFAULT_TAU,
) -> float:
    """Switch-DR (Wang, Agarwal & Dudík 2017): DR where ``w ≤ tau``, DM elsewhere."""
    r, p, t, q, v = _arrays(
        reward=reward,
        pscore=pscore,
        target_prob=target_prob,
        q_logged=q_logged,
        target_value=target_value,
    )
    w = t / p
    return float((v + np.where(w <= _check_positive("tau", tau), w, 0.0) * (r - q)).mean())


def ess(pscore: ArrayLike, target_prob: ArrayLike) -> float:
    """Kish's effective sample size of the importance weights, ``(Σw)² / Σw²`` (0 if all 0)."""
    p, t = _arrays(pscore=pscore, target_prob=target_prob)
    w = t / p
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0


# ---------------------------------------------------------------------- bootstrap
def check_bootstrap(alpha: float, n_boot: int) -> None:
    """Raise :class:`~routewise.errors.ConfigError` naming ``alpha`` or ``n_boot`` when a
    bootstrap cannot run with them."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError("alpha", f"must be in (0, 1), got {alpha!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ConfigError("n_boot", f"must be an integer >= 10, got {n_boot!r}")


def bootstrap_intervals(
    columns: Mapping[str, tuple[FloatArray, FloatArray | None]],
    *,
    n_total: int | None = None,
    point: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> dict[str, Estimate]:
    """Percentile bootstrap intervals for several estimators from one set of resamples.

    ``columns[name] = (numerator terms, denominator terms or None)`` over the same sampled
    rounds; the estimate is ``mean(num)`` or ``Σnum / Σden``. ``n_total`` is the number of
    rounds the ``point`` estimates were computed on when ``columns`` hold only a uniform
    sample of them (as :mod:`~routewise.simulations.replay` keeps for a long trace); the
    spread is then rescaled by ``√(m/n_total)``.
    """
    check_bootstrap(alpha, n_boot)
    if not columns:
        return {}
    rows = next(iter(columns.values()))[0].shape[0]
    total = rows if n_total is None else n_total
    if total < rows:
        raise ConfigError("n_total", f"must be >= the {rows} sampled rounds, got {total}")
    rng = np.random.default_rng(seed)
    m = rows
    sub: npt.NDArray[np.intp] | None = None
    if rows * n_boot > max_draws:
        m = max(2, max_draws // n_boot)
        sub = rng.choice(rows, size=m, replace=False)
    cols = {
        k: (
            num if sub is None else num[sub],
            None if den is None else (den if sub is None else den[sub]),
        )
        for k, (num, den) in columns.items()
    }
    full = {k: _point(*columns[k]) for k in columns} if point is None else dict(point)
    sampled = {k: _point(*cols[k]) for k in cols}
    scale = math.sqrt(m / total)
    reps = {k: np.empty(n_boot) for k in cols}
    block = max(1, min(n_boot, 2_000_000 // max(m, 1)))
    for b0 in range(0, n_boot, block):
        b = min(block, n_boot - b0)
        idx = rng.integers(0, m, size=(b, m))
        for k, (num, den) in cols.items():
            s_num = num[idx].sum(axis=1)
            if den is None:
                reps[k][b0 : b0 + b] = s_num / m
            else:
                s_den = den[idx].sum(axis=1)
                reps[k][b0 : b0 + b] = np.divide(
                    s_num, s_den, out=np.zeros_like(s_num), where=s_den > 0
                )
    out: dict[str, Estimate] = {}
    for k, r in reps.items():
        lo, hi = np.quantile(r, [alpha / 2.0, 1.0 - alpha / 2.0])
        v = full[k]
        out[k] = Estimate(
            v, v + scale * (float(lo) - sampled[k]), v + scale * (float(hi) - sampled[k])
        )
    return out


def evaluate(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    q_logged: ArrayLike | None = None,
    target_value: ArrayLike | None = None,
    *,
    tau: float = DEFAULT_TAU,
    clip: float = math.inf,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> dict[str, Any]:
    """Every estimator with its interval, plus ``n`` and ``ess``, sharing the resamples.

    Without ``q_logged``/``target_value`` only IPS and SNIPS are computed.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> n = 2000
    >>> r = rng.binomial(1, 0.6, n).astype(float)
    >>> out = evaluate(r, np.full(n, 0.5), np.full(n, 0.5), np.full(n, 0.6), np.full(n, 0.6))
    >>> sorted(out["estimates"]), round(out["ess"])
    (['dm', 'dr', 'ips', 'snips', 'switch_dr'], 2000)
    """
    if (q_logged is None) != (target_value is None):
        raise ConfigError("q_logged", "q_logged and target_value go together (both or neither)")
    q: FloatArray | None = None
    v: FloatArray | None = None
    if q_logged is not None and target_value is not None:
        r, p, t, q, v = _arrays(
            reward=reward,
            pscore=pscore,
            target_prob=target_prob,
            q_logged=q_logged,
            target_value=target_value,
        )
    else:
        r, p, t = _arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    cols = _terms(
        r, p, t, q, v, tau=_check_positive("tau", tau), clip=_check_positive("clip", clip)
    )
    est = bootstrap_intervals(cols, alpha=alpha, n_boot=n_boot, seed=seed, max_draws=max_draws)
    w = t / p
    s2 = float((w * w).sum())
    return {
        "n": int(r.shape[0]),
        "ess": float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0,
        "estimates": {k: est[k] for k in ESTIMATORS if k in est},
    }


def _interval(
    name: str,
    arrays: dict[str, ArrayLike],
    *,
    tau: float = DEFAULT_TAU,
    clip: float = math.inf,
    alpha: float,
    n_boot: int,
    seed: int | None,
    max_draws: int,
) -> Estimate:
    checked = _arrays(**arrays)
    named = dict(zip(arrays, checked, strict=True))
    n = checked[0].shape[0]
    ones = np.ones(n)
    cols = _terms(
        named.get("reward", ones),
        named.get("pscore", ones),
        named.get("target_prob", ones),
        named.get("q_logged", ones),
        named.get("target_value"),
        tau=_check_positive("tau", tau),
        clip=_check_positive("clip", clip),
    )
    return bootstrap_intervals(
        {name: cols[name]}, alpha=alpha, n_boot=n_boot, seed=seed, max_draws=max_draws
    )[name]


def ips_interval(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    *,
    clip: float = math.inf,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> Estimate:
    """:func:`ips` with its bootstrap confidence interval."""
    return _interval(
        "ips",
        {"reward": reward, "pscore": pscore, "target_prob": target_prob},
        clip=clip,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )


def snips_interval(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    *,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> Estimate:
    """:func:`snips` with its bootstrap confidence interval (ratio resampling)."""
    return _interval(
        "snips",
        {"reward": reward, "pscore": pscore, "target_prob": target_prob},
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )


def dm_interval(
    target_value: ArrayLike,
    *,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> Estimate:
    """:func:`dm` with its bootstrap confidence interval."""
    return _interval(
        "dm",
        {"target_value": target_value},
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )


def dr_interval(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    q_logged: ArrayLike,
    target_value: ArrayLike,
    *,
    clip: float = math.inf,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> Estimate:
    """:func:`dr` with its bootstrap confidence interval."""
    return _interval(
        "dr",
        {
            "reward": reward,
            "pscore": pscore,
            "target_prob": target_prob,
            "q_logged": q_logged,
            "target_value": target_value,
        },
        clip=clip,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )


def switch_dr_interval(
    reward: ArrayLike,
    pscore: ArrayLike,
    target_prob: ArrayLike,
    q_logged: ArrayLike,
    target_value: ArrayLike,
    *,
    tau: float = DEFAULT_TAU,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int | None = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
) -> Estimate:
    """:func:`switch_dr` with its bootstrap confidence interval."""
    return _interval(
        "switch_dr",
        {
            "reward": reward,
            "pscore": pscore,
            "target_prob": target_prob,
            "q_logged": q_logged,
            "target_value": target_value,
        },
        tau=tau,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )
