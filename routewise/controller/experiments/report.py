"""The experiment report: per-variant numbers, one always-valid comparison per candidate,
the SRM check and the guardrails, as an :class:`~routewise.types.ExperimentReport`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from routewise.controller.experiments.checks import (
    SRM_THRESHOLD,
    guardrail_violations,
    srm_p_value,
    stats_for,
    welch,
)
from routewise.controller.experiments.sequential import (
    MIN_N_SEQUENTIAL,
    ComparisonHistory,
    VariantStats,
    cs,
    diff_cs,
)
from routewise.types.experiments import (
    GUARDRAILS,
    Comparison,
    ExperimentReport,
    ExperimentSpec,
    VariantReport,
)

__all__ = ["experiment_report"]


def _variant_report(s: VariantStats, alpha: float, target_n: int) -> VariantReport:
    low = high = None
    if s.n >= MIN_N_SEQUENTIAL:
        v = s._var()
        low, high, _ = cs(s._reward_mean, v / s.n, v / target_n, alpha)
    return VariantReport(
        n=s.n,
        mean_reward=s.mean_reward,
        ci_low=low,
        ci_high=high,
        validity=s.validity,
        p95_latency_ms=s.p95_latency_ms,
        cost=s.cost_mean,
        assignments=s.assignments,
    )


def _comparison(
    ctrl: VariantStats,
    cand: VariantStats,
    spec: ExperimentSpec,
    history: ComparisonHistory | None,
    violated: list[str],
) -> Comparison:
    diff = cand._reward_mean - ctrl._reward_mean if ctrl.n and cand.n else None
    low: float | None = None
    high: float | None = None
    p = 1.0
    res = diff_cs(ctrl, cand, spec.alpha, spec.target_n)
    if res is not None:
        _, low, high, p = res
    if history is not None and history.updates:
        p = min(p, history.min_p_value)
        h_low = max(low if low is not None else -math.inf, history._low)
        h_high = min(high if high is not None else math.inf, history._high)
        if h_low <= h_high:  # an empty intersection (plug-in noise) falls back to the current CS
            low = h_low if math.isfinite(h_low) else None
            high = h_high if math.isfinite(h_high) else None
    verdict: Literal["better", "worse", "inconclusive"] = "inconclusive"
    if low is not None and low > 0:
        verdict = "better"
    elif high is not None and high < 0:
        verdict = "worse"
    wp, wlo, whi = welch(ctrl, cand, spec.alpha)
    return Comparison(
        diff=diff,
        ci_low=low,
        ci_high=high,
        p_value=p,
        verdict=verdict,
        welch_p_value=wp,
        welch_ci_low=wlo,
        welch_ci_high=whi,
        guardrails={g: g in violated for g in GUARDRAILS},
    )


def experiment_report(
    spec: ExperimentSpec,
    stats: Mapping[str, VariantStats],
    histories: Mapping[str, ComparisonHistory] | None = None,
) -> ExperimentReport:
    """Everything an operator looks at: per-variant numbers, one comparison per non-control
    variant, the SRM check and the guardrails.

    Parameters
    ----------
    spec
        The experiment.
    stats
        Statistics per variant (a missing variant counts as empty; extra keys are ignored).
    histories
        Optional :class:`ComparisonHistory` per non-control variant. With it the p-value is
        the running minimum and the CS the running intersection (the always-valid reading);
        without it, both are the current-time values.
    """
    vs = stats_for(spec, stats)
    control = spec.control
    violations = guardrail_violations(spec, vs)
    hist = histories or {}
    srm_p = srm_p_value({v: s.assignments for v, s in vs.items()}, spec.split)
    return ExperimentReport(
        name=spec.name,
        status=spec.status,
        control=control,
        variants={v: _variant_report(s, spec.alpha, spec.target_n) for v, s in vs.items()},
        comparisons={
            v: _comparison(vs[control], s, spec, hist.get(v), violations[v])
            for v, s in vs.items()
            if v != control
        },
        srm_p_value=srm_p,
        srm=srm_p is not None and srm_p < SRM_THRESHOLD,
        stopped_by_guardrail=spec.stopped_by_guardrail,
        alpha=spec.alpha,
        winner=spec.winner,
    )
