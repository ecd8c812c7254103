"""Fixed-horizon and guardrail tests of an experiment: the Welch t-test (the secondary,
one-look view), the sample-ratio-mismatch check, the guardrails (with :func:`auto_stop`) and
the fixed-horizon sample size. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
from scipy import stats as sps

from routewise.controller.experiments.sequential import P95, VariantStats, cs, half_width
from routewise.errors import ConfigError
from routewise.types.experiments import ExperimentSpec, check_alpha

__all__ = [
    "SRM_THRESHOLD",
    "auto_stop",
    "guardrail_violations",
    "sample_size",
    "srm_p_value",
    "stats_for",
    "welch",
]

#: Sample-ratio mismatch is flagged below this chi-square p-value.
SRM_THRESHOLD: Final = 0.001


def srm_p_value(counts: Mapping[str, int], split: Mapping[str, float]) -> float | None:
    """Chi-square goodness-of-fit p-value of assignment ``counts`` against ``split``.

    ``None`` while some expected count is below 5 (the chi-square approximation is poor).

    Examples
    --------
    >>> srm_p_value({"a": 5500, "b": 4500}, {"a": 0.5, "b": 0.5}) < 0.001
    True
    >>> srm_p_value({"a": 5020, "b": 4980}, {"a": 0.5, "b": 0.5}) > 0.5
    True
    """
    keys = list(split)
    obs = np.array([int(counts.get(k, 0)) for k in keys], dtype=np.float64)
    shares = np.array([split[k] for k in keys], dtype=np.float64)
    total = obs.sum()
    exp = total * shares / shares.sum()
    if len(keys) < 2 or total <= 0 or exp.min() < 5:
        return None
    return float(sps.chisquare(obs, exp).pvalue)


def welch(
    ctrl: VariantStats, cand: VariantStats, alpha: float
) -> tuple[float | None, float | None, float | None]:
    """``(p, ci_low, ci_high)`` of the fixed-horizon Welch t-test of the reward difference
    (candidate − control) and its Welch–Satterthwaite ``1 − α`` interval; ``None`` values
    below 2 observations a side or with zero variance. Valid at one pre-planned look only."""
    if ctrl.n < 2 or cand.n < 2:
        return None, None, None
    va, vb = ctrl._var(), cand._var()
    sa, sb = va / ctrl.n, vb / cand.n
    se2 = sa + sb
    if se2 <= 0:
        return None, None, None
    res = sps.ttest_ind_from_stats(
        mean1=cand._reward_mean,
        std1=math.sqrt(vb),
        nobs1=cand.n,
        mean2=ctrl._reward_mean,
        std2=math.sqrt(va),
        nobs2=ctrl.n,
        equal_var=False,
    )
    df = se2 * se2 / (sa * sa / (ctrl.n - 1) + sb * sb / (cand.n - 1))
    half = float(sps.t.ppf(1.0 - alpha / 2.0, df)) * math.sqrt(se2)
    diff = cand._reward_mean - ctrl._reward_mean
    return float(res.pvalue), diff - half, diff + half


def _guardrail_checks(ctrl: VariantStats, cand: VariantStats, spec: ExperimentSpec) -> list[str]:
    g = spec.guardrails
    if ctrl.n < g.min_n or cand.n < g.min_n:
        return []
    alpha, nt = spec.alpha, spec.target_n
    out: list[str] = []
    # validity: upper bound of (p_cand − p_ctl) below −drop
    pa, pb = ctrl._valid / ctrl.n, cand._valid / cand.n
    va, vb = pa * (1 - pa), pb * (1 - pb)
    _, high, _ = cs(pb - pa, va / ctrl.n + vb / cand.n, (va + vb) / nt, alpha)
    if high < -g.validity_drop:
        out.append("validity")
    # p95 latency: quantile CSs from the indicator 1{X <= q}, whose variance is .95 · .05
    pv = P95 * (1 - P95)
    h_cand = half_width(pv / cand.n, pv / nt, alpha)
    h_ctl = half_width(pv / ctrl.n, pv / nt, alpha)
    if P95 - h_cand > 0 and P95 + h_ctl < 1:
        lb = cand.latency.quantile(P95 - h_cand)
        ub = ctrl.latency.quantile(P95 + h_ctl)
        if lb is not None and ub is not None and lb > g.p95_latency_ratio * ub:
            out.append("p95_latency")
    # cost: lower bound of (cost_cand − ratio · cost_ctl) above 0
    r = g.cost_ratio
    ca, cb = ctrl._cvar(), cand._cvar()
    low, _, _ = cs(
        cand._cost_mean - r * ctrl._cost_mean,
        cb / cand.n + r * r * ca / ctrl.n,
        (cb + r * r * ca) / nt,
        alpha,
    )
    if low > 0:
        out.append("cost")
    return out


def stats_for(spec: ExperimentSpec, stats: Mapping[str, VariantStats]) -> dict[str, VariantStats]:
    """``stats`` for every variant of ``spec``, in its order (empty ones for the missing)."""
    return {v: stats.get(v) or VariantStats() for v in spec.variants}


def guardrail_violations(
    spec: ExperimentSpec, stats: Mapping[str, VariantStats]
) -> dict[str, list[str]]:
    """Violated guardrails of every non-control variant (empty lists when none).

    A guardrail is violated when the variant is significantly worse than the control (see
    the module docstring); nothing is evaluated before both have ``guardrails.min_n``
    observations. A missing variant counts as having no observations.

    Examples
    --------
    >>> spec = ExperimentSpec(name="g", variants={"a": {}, "b": {}}, split={"a": .5, "b": .5})
    >>> a, b = VariantStats(), VariantStats()
    >>> for i in range(1000):
    ...     a.observe(1.0, i % 10 != 0, 500.0 + i % 50, 0.001)   # validity 0.9
    ...     b.observe(1.0, i % 10 < 7, 500.0 + i % 50, 0.001)    # validity 0.7
    >>> guardrail_violations(spec, {"a": a, "b": b})
    {'b': ['validity']}
    """
    vs = stats_for(spec, stats)
    ctrl = vs[spec.control]
    return {v: _guardrail_checks(ctrl, s, spec) for v, s in vs.items() if v != spec.control}


def auto_stop(spec: ExperimentSpec, stats: Mapping[str, VariantStats], ts: float) -> ExperimentSpec:
    """``spec`` stopped by its first guardrail violation, or ``spec`` itself (same object).

    Acts only on a running experiment whose ``guardrails.auto_stop`` is on; the stop records
    ``stopped_by_guardrail = "<variant>:<guardrail>[,<guardrail>…]"``.
    """
    if spec.status != "running" or not spec.guardrails.auto_stop:
        return spec
    for variant, names in guardrail_violations(spec, stats).items():
        if names:
            return spec.transition("stopped", ts, guardrail=f"{variant}:{','.join(names)}")
    return spec


def sample_size(
    mde: float, sd: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Fixed-horizon sample size of the control for a two-sided two-sample z-test.

    ``n = (z_{1−α/2} + z_{power})² · sd² · (1 + 1/ratio) / mde²``, rounded up; the candidate
    then needs ``ceil(ratio · n)`` (``ratio = n_candidate / n_control``; 1 = per variant).
    The always-valid test needs more for the same power (see ``benchmarks/experiments.py``).

    Examples
    --------
    >>> sample_size(mde=0.1, sd=1.0)
    1570
    >>> sample_size(mde=0.02, sd=(0.7 * 0.3) ** 0.5)
    8242
    """
    if not (isinstance(mde, int | float) and math.isfinite(mde) and mde != 0):
        raise ConfigError("mde", f"must be a finite non-zero effect, got {mde!r}")
    if not (isinstance(sd, int | float) and math.isfinite(sd) and sd > 0):
        raise ConfigError("sd", f"must be a finite number > 0, got {sd!r}")
    check_alpha(alpha, "alpha")
    check_alpha(power, "power")
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
        raise ConfigError("ratio", f"must be a finite number > 0, got {ratio!r}")
    z = float(sps.norm.ppf(1.0 - alpha / 2.0)) + float(sps.norm.ppf(power))
    return math.ceil(z * z * sd * sd * (1.0 + 1.0 / ratio) / (mde * mde) - 1e-9)
