"""A/B experiment statistics: assignment, SRM, lifecycle, confidence sequences, guardrails,
Welch, sample size, state round trips and the streaming statistics against a batch oracle."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from routewise.controller.experiments import (
    GUARDRAILS,
    MIN_N_SEQUENTIAL,
    ComparisonHistory,
    ExperimentSpec,
    VariantStats,
    assign,
    auto_stop,
    experiment_report,
    guardrail_violations,
    mixing_ratio,
    normal_mixture_half_width,
    normal_mixture_p_value,
    plot_confidence_sequence,
    sample_size,
    srm_p_value,
)
from routewise.errors import ConfigError, InvalidOutcome, StateError


def make_spec(**kw: Any) -> ExperimentSpec:
    base: dict[str, Any] = {
        "name": "exp-1",
        "variants": {"control": {"policy": "squarecb"}, "candidate": {"policy": "linucb"}},
        "split": {"control": 0.5, "candidate": 0.5},
    }
    return ExperimentSpec(**{**base, **kw})


def feed(
    s: VariantStats,
    rng: np.random.Generator,
    n: int,
    *,
    p_reward: float = 0.7,
    validity: float = 0.9,
    latency_median: float = 800.0,
    cost: float = 0.001,
) -> None:
    rewards = (rng.random(n) < p_reward).astype(float)
    valid = rng.random(n) < validity
    lat = latency_median * rng.lognormal(0.0, 0.3, n)
    costs = cost * rng.lognormal(0.0, 0.2, n)
    for r, v, la, c in zip(rewards, valid, lat, costs, strict=True):
        s.assigned()
        s.observe(float(r), bool(v), float(la), float(c))


# ------------------------------------------------------------------------------- assignment


def test_assignment_is_deterministic_and_sticky() -> None:
    spec = make_spec()
    first = {f"user-{i}": spec.variant_for(f"user-{i}") for i in range(2000)}
    # a unit's variant depends on nothing but (salt, unit, split): same on every call, in any
    # order, and equal to the module function
    for unit in reversed(list(first)):
        assert spec.variant_for(unit) == first[unit] == assign(spec.salt, unit, spec.split)
    # a restarted process (a spec rebuilt from its JSON) assigns identically
    again = ExperimentSpec.model_validate_json(spec.model_dump_json())
    assert all(again.variant_for(u) == v for u, v in first.items())
    # reference values pin the hash (blake2b-64 of "salt:unit"): traces re-analysed offline
    # and other replicas must assign identically
    got = "".join(assign("salt", f"u{i}", {"a": 0.5, "b": 0.5}) for i in range(12))
    assert got == "bbababaaabab"


def test_assignment_split_accuracy_chi_square() -> None:
    split = {"a": 0.5, "b": 0.3, "c": 0.2}
    counts = dict.fromkeys(split, 0)
    n = 100_000
    for i in range(n):
        counts[assign("split-test", f"unit-{i}", split)] += 1
    p = stats.chisquare(list(counts.values()), [n * s for s in split.values()]).pvalue
    assert p > 0.01, (counts, p)
    assert srm_p_value(counts, split) == pytest.approx(p)


def test_new_salt_rerandomizes_independently() -> None:
    split = {"a": 0.5, "b": 0.5}
    units = [f"u{i}" for i in range(20_000)]
    x = np.array([assign("salt-1", u, split) == "a" for u in units])
    y = np.array([assign("salt-2", u, split) == "a" for u in units])
    table = np.array([[np.sum(x & y), np.sum(x & ~y)], [np.sum(~x & y), np.sum(~x & ~y)]])
    assert stats.chi2_contingency(table).pvalue > 0.001


def test_split_order_follows_variants() -> None:
    spec = make_spec(split={"candidate": 0.1, "control": 0.9})
    assert list(spec.split) == ["control", "candidate"]
    share = np.mean([spec.variant_for(str(i)) == "control" for i in range(10_000)])
    assert 0.88 < share < 0.92


@pytest.mark.parametrize(
    ("unit", "split", "field"),
    [(42, {"a": 1.0}, "unit_id"), ("u", {}, "split"), ("u", {"a": 0.0}, "split")],
)
def test_assignment_errors(unit: Any, split: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        assign("s", unit, split)
    assert exc.value.field == field


# -------------------------------------------------------------------------------------- SRM


def test_srm_detected_on_skewed_split() -> None:
    spec = make_spec()
    skewed = {"control": VariantStats(), "candidate": VariantStats()}
    skewed["control"].assigned(5500)
    skewed["candidate"].assigned(4500)
    rep = experiment_report(spec, skewed)
    assert rep.srm_p_value is not None and rep.srm_p_value < 1e-20
    assert rep.srm

    balanced = {"control": VariantStats(), "candidate": VariantStats()}
    for i in range(10_000):
        balanced[spec.variant_for(f"user-{i}")].assigned()
    rep = experiment_report(spec, balanced)
    assert rep.srm_p_value is not None and rep.srm_p_value > 0.001
    assert not rep.srm


def test_srm_undefined_for_tiny_counts() -> None:
    assert srm_p_value({"a": 3, "b": 2}, {"a": 0.5, "b": 0.5}) is None
    assert srm_p_value({}, {"a": 0.5, "b": 0.5}) is None


# -------------------------------------------------------------------------------- lifecycle

ALLOWED = {
    ("draft", "running"),
    ("draft", "aborted"),
    ("running", "stopped"),
    ("running", "aborted"),
    ("stopped", "promoted"),
    ("stopped", "aborted"),
}
PATHS = {
    "draft": [],
    "running": ["running"],
    "stopped": ["running", "stopped"],
    "promoted": ["running", "stopped", "promoted"],
    "aborted": ["aborted"],
}
STATUSES = list(PATHS)


def at(status: str) -> ExperimentSpec:
    spec = make_spec(created_ts=0.0)
    for i, step in enumerate(PATHS[status], start=1):
        spec = spec.transition(
            step, ts=float(i), winner="candidate" if step == "promoted" else None
        )
    return spec


@pytest.mark.parametrize("src", STATUSES)
@pytest.mark.parametrize("dst", STATUSES)
def test_lifecycle_transitions(src: str, dst: str) -> None:
    spec = at(src)
    assert spec.status == src
    winner = "candidate" if dst == "promoted" else None
    if (src, dst) in ALLOWED:
        new = spec.transition(dst, ts=100.0, winner=winner)
        assert new.status == dst and spec.status == src  # a new spec; the old one is unchanged
        assert new.salt == spec.salt and new.variants == spec.variants
    else:
        with pytest.raises(ConfigError) as exc:
            spec.transition(dst, ts=100.0, winner=winner)
        assert exc.value.field == "status"


def test_lifecycle_timestamps_and_winner() -> None:
    spec = make_spec(created_ts=1.0)
    running = spec.transition("running", ts=2.0)
    assert (running.created_ts, running.started_ts, running.stopped_ts) == (1.0, 2.0, None)
    stopped = running.transition("stopped", ts=3.0)
    promoted = stopped.transition("promoted", ts=4.0, winner="candidate")
    assert (promoted.stopped_ts, promoted.winner) == (3.0, "candidate")
    assert running.transition("aborted", ts=5.0).stopped_ts == 5.0
    assert stopped.transition("aborted", ts=6.0).stopped_ts == 3.0
    assert spec.transition("aborted", ts=7.0).winner is None
    with pytest.raises(ConfigError, match="needs a winner") as exc:
        stopped.transition("promoted", ts=4.0)
    assert exc.value.field == "winner"
    with pytest.raises(ConfigError, match="not a variant") as exc:
        stopped.transition("promoted", ts=4.0, winner="nope")
    assert exc.value.field == "winner"
    with pytest.raises(ConfigError) as exc:
        stopped.transition("aborted", ts=4.0, winner="candidate")
    assert exc.value.field == "winner"
    with pytest.raises(ConfigError) as exc:
        spec.transition("launched", ts=1.0)
    assert exc.value.field == "status"
    with pytest.raises(ConfigError) as exc:
        spec.transition("running", ts=math.nan)
    assert exc.value.field == "ts"
    with pytest.raises(ConfigError) as exc:
        spec.transition("running", ts=1.0, guardrail="candidate:cost")
    assert exc.value.field == "guardrail"
    with pytest.raises(Exception, match="frozen"):
        spec.status = "running"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"variants": {"control": {}}, "split": {"control": 1.0}}, "variants"),
        ({"split": {"control": 0.5, "other": 0.5}}, "split"),
        ({"split": {"control": 0.6, "candidate": 0.5}}, "split"),
        ({"split": {"control": 1.0, "candidate": 0.0}}, "split"),
        ({"alpha": 0.0}, "alpha"),
        ({"guardrails": {"min_n": 1}}, "guardrails.min_n"),
        ({"guardrails": {"cost_ratio": 0.5}}, "guardrails.cost_ratio"),
        ({"guardrails": {"surprise": 1}}, "guardrails.surprise"),
        ({"variants": {"control": {}, "candidate": {"arms": []}}}, "variants.candidate.arms"),
        ({"variants": {"control": {}, "candidate": {"policy": {}}}}, "variants.candidate.policy"),
        ({"variants": {"control": {}, "candidate": {"nope": 1}}}, "variants.candidate.nope"),
        ({"status": "promoted"}, "winner"),
        ({"winner": "candidate"}, "winner"),
        ({"target_n": 1}, "target_n"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_spec_errors_name_the_field(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make_spec(**kw)
    assert exc.value.field == field


def test_default_salt_and_explicit_salt() -> None:
    assert make_spec().salt == ExperimentSpec.default_salt("exp-1")
    assert make_spec(salt="fresh").salt == "fresh"
    assert make_spec().salt != make_spec(name="exp-2").salt


# ---------------------------------------------------------------------- confidence sequences


def running_cs(
    xa: np.ndarray, xb: np.ndarray, alpha: float, target_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorized (diff, half-width, p) after each pair of observations (rows = runs)."""
    n = np.arange(1, xa.shape[1] + 1, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = np.cumsum(xa, 1) / n, np.cumsum(xb, 1) / n
        va = np.maximum(np.cumsum(xa * xa, 1) - n * ma * ma, 0) / (n - 1)
        vb = np.maximum(np.cumsum(xb * xb, 1) - n * mb * mb, 0) / (n - 1)
    va[:, 0] = vb[:, 0] = 0.0
    var, vt = (va + vb) / n, (va + vb) / target_n
    return (
        mb - ma,
        normal_mixture_half_width(var, vt, alpha),
        normal_mixture_p_value(mb - ma, var, vt, alpha),
    )


@pytest.mark.parametrize(("pa", "pb"), [(0.7, 0.7), (0.7, 0.75), (0.2, 0.1)])
def test_difference_cs_time_uniform_coverage(pa: float, pb: float) -> None:
    rng = np.random.default_rng(20260101)
    runs, n = 400, 5000
    xa = (rng.random((runs, n)) < pa).astype(float)
    xb = (rng.random((runs, n)) < pb).astype(float)
    diff, hw, _ = running_cs(xa, xb, 0.05, 10_000)
    live = slice(MIN_N_SEQUENTIAL - 1, None)
    miss = np.any(np.abs(diff[:, live] - (pb - pa)) > hw[:, live], axis=1)
    # a peek after every pair: the miss rate over the whole path stays below alpha
    assert miss.mean() <= 0.05, miss.mean()


def test_mean_cs_coverage_on_skewed_rewards() -> None:
    # the per-variant interval: same construction for one mean, on a skewed reward
    rng = np.random.default_rng(7)
    runs, n = 400, 5000
    x = np.where(rng.random((runs, n)) < 0.85, rng.beta(5.0, 2.0, (runs, n)), 0.0)
    mu = 0.85 * 5.0 / 7.0
    k = np.arange(1, n + 1, dtype=float)
    m = np.cumsum(x, 1) / k
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.maximum(np.cumsum(x * x, 1) - k * m * m, 0) / (k - 1)
    hw = normal_mixture_half_width(
        v[:, MIN_N_SEQUENTIAL - 1 :] / k[MIN_N_SEQUENTIAL - 1 :],
        v[:, MIN_N_SEQUENTIAL - 1 :] / 10_000,
        0.05,
    )
    miss = np.any(np.abs(m[:, MIN_N_SEQUENTIAL - 1 :] - mu) > hw, axis=1)
    assert miss.mean() <= 0.05, miss.mean()


def test_p_value_and_cs_agree_and_mixing_ratio() -> None:
    r = mixing_ratio(0.05)
    assert math.log1p(1 / r) - 2 * math.log(0.05) == pytest.approx(1 / r)
    var, vt = 2e-4, 1e-4
    hw = float(normal_mixture_half_width(var, vt, 0.05))
    assert float(normal_mixture_p_value(hw, var, vt, 0.05)) == pytest.approx(0.05)
    assert float(normal_mixture_p_value(0.99 * hw, var, vt, 0.05)) > 0.05
    assert float(normal_mixture_p_value(1.01 * hw, var, vt, 0.05)) < 0.05
    # the width at the target is minimal over the mixing ratio (that is how r* is defined)
    widths = []
    for scale in (0.5, 1.0, 2.0):
        phi = 1.0 / (scale * r)
        widths.append((1 + phi) / phi * (math.log1p(phi) - 2 * math.log(0.05)))
    assert widths[1] < widths[0] and widths[1] < widths[2]


@pytest.mark.parametrize(
    ("diff", "var", "vt"),
    [(0.01, 2e-5, 4e-5), (-0.3, 1e-2, 1e-3), (0.0, 1e-4, 1e-4), (0.2, 0.0, 0.0), (0.0, 0.0, 0.0)],
)
def test_scalar_hot_path_matches_public_functions(diff: float, var: float, vt: float) -> None:
    from routewise.controller.experiments.sequential import cs as _cs

    low, high, p = _cs(diff, var, vt, 0.05)
    hw = float(normal_mixture_half_width(var, vt, 0.05))
    assert (high - diff) == pytest.approx(hw, rel=1e-12, abs=1e-15)
    assert (diff - low) == pytest.approx(hw, rel=1e-12, abs=1e-15)
    assert p == pytest.approx(float(normal_mixture_p_value(diff, var, vt, 0.05)), rel=1e-12)


def test_history_matches_vectorized_and_p_never_increases() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    xa = (rng.random((1, n)) < 0.6).astype(float)
    xb = (rng.random((1, n)) < 0.65).astype(float)
    diff, hw, p = running_cs(xa, xb, 0.05, 10_000)
    spec = make_spec().transition("running", ts=0.0)
    sa, sb, hist = VariantStats(), VariantStats(), ComparisonHistory(max_points=64)
    stats_ = {"control": sa, "candidate": sb}
    last_p = 1.0
    for i in range(n):
        sa.observe(float(xa[0, i]), True, 100.0, 0.0)
        sb.observe(float(xb[0, i]), True, 100.0, 0.0)
        hist.update(sa, sb, alpha=spec.alpha, target_n=spec.target_n)
        if i + 1 < MIN_N_SEQUENTIAL:
            assert hist.last is None
            continue
        assert hist.last is not None
        _, _, d, _lo, hi = hist.last
        assert d == pytest.approx(diff[0, i], abs=1e-12)
        assert hi - d == pytest.approx(hw[0, i], rel=1e-9)
        if i % 97 == 0 or i == n - 1:
            rep = experiment_report(spec, stats_, {"candidate": hist})
            c = rep.comparisons["candidate"]
            assert c.p_value <= last_p
            assert c.p_value == pytest.approx(min(p[0, MIN_N_SEQUENTIAL - 1 : i + 1]))
            last_p = c.p_value
            assert c.ci_low is not None and c.ci_high is not None
            assert c.diff == pytest.approx(diff[0, i], abs=1e-12)
            assert (c.verdict == "inconclusive") == (c.p_value > 0.05)
    assert len(hist.points) <= 64
    assert hist.points[0][:2] == (MIN_N_SEQUENTIAL, MIN_N_SEQUENTIAL)
    assert hist.updates == n - MIN_N_SEQUENTIAL + 1


def test_verdicts_better_worse_inconclusive() -> None:
    spec = make_spec()
    rng = np.random.default_rng(11)
    for p_cand, verdict in [(0.80, "better"), (0.60, "worse"), (0.70, "inconclusive")]:
        ctl, cand = VariantStats(), VariantStats()
        feed(ctl, rng, 3000, p_reward=0.70)
        feed(cand, rng, 3000, p_reward=p_cand)
        c = experiment_report(spec, {"control": ctl, "candidate": cand}).comparisons["candidate"]
        assert c.verdict == verdict, (p_cand, c)


def test_burn_in_reports_unbounded() -> None:
    spec = make_spec()
    ctl, cand = VariantStats(), VariantStats()
    feed(ctl, np.random.default_rng(0), MIN_N_SEQUENTIAL - 1)
    feed(cand, np.random.default_rng(1), 100)
    rep = experiment_report(spec, {"control": ctl, "candidate": cand})
    c = rep.comparisons["candidate"]
    assert (c.ci_low, c.ci_high, c.p_value, c.verdict) == (None, None, 1.0, "inconclusive")
    assert c.diff is not None and c.welch_p_value is not None
    assert rep.variants["control"].ci_low is None and rep.variants["candidate"].ci_low is not None
    json.dumps(rep.to_dict(), allow_nan=False)
    # a variant without stats at all is reported as empty
    rep = experiment_report(spec, {"control": ctl})
    assert rep.variants["candidate"].n == 0 and rep.comparisons["candidate"].diff is None


# -------------------------------------------------------------------------------- guardrails


@pytest.mark.parametrize(
    ("worse", "expected"),
    [
        ({"validity": 0.75}, ["validity"]),
        ({"latency_median": 2400.0}, ["p95_latency"]),
        ({"cost": 0.003}, ["cost"]),
        ({"validity": 0.7, "cost": 0.004}, ["validity", "cost"]),
        ({}, []),
        ({"validity": 0.88, "latency_median": 1000.0, "cost": 0.0012}, []),  # within tolerance
    ],
)
def test_guardrails_detect_a_clearly_worse_variant(
    worse: dict[str, float], expected: list[str]
) -> None:
    spec = make_spec().transition("running", ts=0.0)
    ctl, cand = VariantStats(), VariantStats()
    feed(ctl, np.random.default_rng(1), 1500)
    feed(cand, np.random.default_rng(2), 1500, **worse)
    assert guardrail_violations(spec, {"control": ctl, "candidate": cand}) == {
        "candidate": expected
    }
    rep = experiment_report(spec, {"control": ctl, "candidate": cand})
    assert rep.comparisons["candidate"].guardrails == {g: g in expected for g in GUARDRAILS}
    stopped = auto_stop(spec, {"control": ctl, "candidate": cand}, ts=9.0)
    if expected:
        assert stopped.status == "stopped" and stopped.stopped_ts == 9.0
        assert stopped.stopped_by_guardrail == f"candidate:{','.join(expected)}"
        assert experiment_report(stopped, {}).stopped_by_guardrail == stopped.stopped_by_guardrail
    else:
        assert stopped is spec


def test_guardrails_wait_for_min_n_and_respect_auto_stop_off() -> None:
    spec = make_spec().transition("running", ts=0.0)
    ctl, cand = VariantStats(), VariantStats()
    feed(ctl, np.random.default_rng(1), 150)
    feed(cand, np.random.default_rng(2), 150, validity=0.3)
    stats_ = {"control": ctl, "candidate": cand}
    assert guardrail_violations(spec, stats_) == {"candidate": []}  # n < min_n = 200
    feed(ctl, np.random.default_rng(3), 100)
    feed(cand, np.random.default_rng(4), 100, validity=0.3)
    assert guardrail_violations(spec, stats_) == {"candidate": ["validity"]}
    off = make_spec(guardrails={"auto_stop": False}).transition("running", ts=0.0)
    assert auto_stop(off, stats_, ts=1.0) is off
    assert auto_stop(make_spec(), stats_, ts=1.0).status == "draft"  # only a running one stops


def test_guardrails_quiet_on_aa_data() -> None:
    spec = make_spec()
    for seed in range(20):
        ctl, cand = VariantStats(), VariantStats()
        feed(ctl, np.random.default_rng(1000 + seed), 800)
        feed(cand, np.random.default_rng(2000 + seed), 800)
        assert guardrail_violations(spec, {"control": ctl, "candidate": cand}) == {"candidate": []}


# ------------------------------------------------------------------------ Welch, sample size


def test_welch_agrees_with_scipy() -> None:
    rng = np.random.default_rng(5)
    a = rng.beta(2.0, 3.0, 400)
    b = rng.beta(2.2, 3.0, 250) * 1.1
    sa, sb = VariantStats(), VariantStats()
    for x in a:
        sa.observe(float(x), True, 10.0, 0.0)
    for x in b:
        sb.observe(float(x), True, 10.0, 0.0)
    spec = make_spec(alpha=0.1)
    c = experiment_report(spec, {"control": sa, "candidate": sb}).comparisons["candidate"]
    ref = stats.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert c.welch_p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert c.welch_ci_low == pytest.approx(ci.low, rel=1e-9)
    assert c.welch_ci_high == pytest.approx(ci.high, rel=1e-9)
    assert c.diff == pytest.approx(b.mean() - a.mean(), rel=1e-12)
    # the always-valid CS is wider than the fixed-horizon interval
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_high - c.ci_low > ci.high - ci.low


def test_welch_undefined_without_variance() -> None:
    sa, sb = VariantStats(), VariantStats()
    for _ in range(50):
        sa.observe(1.0, True, 10.0, 0.0)
        sb.observe(1.0, True, 10.0, 0.0)
    c = experiment_report(make_spec(), {"control": sa, "candidate": sb}).comparisons["candidate"]
    assert (c.welch_p_value, c.welch_ci_low, c.verdict) == (None, None, "inconclusive")


def test_sample_size_known_values() -> None:
    # textbook: 2 (z_.975 + z_.8)² σ²/δ² = 1569.8 for δ = 0.1 σ
    assert sample_size(mde=0.1, sd=1.0) == 1570
    assert sample_size(mde=-0.1, sd=1.0) == 1570
    assert sample_size(mde=0.1, sd=1.0, ratio=2.0) == 1178  # candidate: 2356
    assert sample_size(mde=0.1, sd=1.0, alpha=0.01, power=0.9) == 2976
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert sample_size(0.02, math.sqrt(0.21)) == math.ceil(2 * z * z * 0.21 / 0.02**2)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"mde": 0.0}, "mde"),
        ({"sd": -1.0}, "sd"),
        ({"alpha": 1.0}, "alpha"),
        ({"power": 0.0}, "power"),
        ({"ratio": 0.0}, "ratio"),
    ],
)
def test_sample_size_errors(kw: dict[str, float], field: str) -> None:
    args: dict[str, float] = {"mde": 0.1, "sd": 1.0, **kw}
    with pytest.raises(ConfigError) as exc:
        sample_size(**args)
    assert exc.value.field == field


# --------------------------------------------------------------------- streaming statistics


def test_variant_stats_match_batch_oracle_at_every_step() -> None:
    rng = np.random.default_rng(9)
    n = 600
    rewards = rng.normal(0.5, 0.3, n)
    valid = rng.random(n) < 0.8
    lat = rng.lognormal(6.5, 0.5, n)
    cost = rng.gamma(2.0, 0.0005, n)
    s = VariantStats()
    for i in range(n):
        s.observe(float(rewards[i]), bool(valid[i]), float(lat[i]), float(cost[i]))
        k = i + 1
        assert s.n == k
        assert s.mean_reward == pytest.approx(rewards[:k].mean(), rel=1e-9, abs=1e-12)
        if k > 1:
            assert s.var_reward == pytest.approx(rewards[:k].var(ddof=1), rel=1e-9)
            assert s.var_cost == pytest.approx(cost[:k].var(ddof=1), rel=1e-9)
        else:
            assert s.var_reward is None
        assert s.validity == pytest.approx(valid[:k].mean(), rel=1e-12)
        assert s.cost_mean == pytest.approx(cost[:k].mean(), rel=1e-9)
        p95 = np.quantile(lat[:k], 0.95, method="inverted_cdf")
        assert s.p95_latency_ms == pytest.approx(p95, rel=0.011)


def test_variant_stats_merge_equals_sequential() -> None:
    rng = np.random.default_rng(2)
    whole, left, right = VariantStats(), VariantStats(), VariantStats()
    for i in range(500):
        obs = (float(rng.normal()), bool(rng.random() < 0.9), float(rng.lognormal(5, 1)), 0.001)
        whole.observe(*obs)
        (left if i % 3 else right).observe(*obs)
    left.assigned(7)
    right.assigned(5)
    left.merge(right)
    assert left.n == whole.n and left.assignments == 12
    for attr in ("mean_reward", "var_reward", "validity", "cost_mean", "p95_latency_ms"):
        assert getattr(left, attr) == pytest.approx(getattr(whole, attr), rel=1e-9)
    assert left.latency.to_state() == whole.latency.to_state()


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((math.nan, True, 1.0, 0.0), "reward"),
        ((0.5, True, -1.0, 0.0), "latency_ms"),
        ((0.5, True, 1.0, math.inf), "cost_usd"),
    ],
)
def test_observe_rejects_bad_outcomes_without_change(
    args: tuple[float, bool, float, float], field: str
) -> None:
    s = VariantStats()
    s.observe(0.5, True, 10.0, 0.001)
    before = s.to_state()
    with pytest.raises(InvalidOutcome) as exc:
        s.observe(*args)
    assert exc.value.field == field
    assert s.to_state() == before


observations = st.lists(
    st.tuples(
        st.floats(-1e6, 1e6, allow_nan=False),
        st.booleans(),
        st.floats(0.0, 1e7, allow_nan=False),
        st.floats(0.0, 10.0, allow_nan=False),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(obs=observations, assignments=st.integers(0, 10**6))
def test_variant_stats_state_round_trip(
    obs: list[tuple[float, bool, float, float]], assignments: int
) -> None:
    s = VariantStats()
    s.assigned(assignments)
    for o in obs:
        s.observe(*o)
    state = json.loads(json.dumps(s.to_state(), allow_nan=False))
    r = VariantStats.from_state(state)
    assert r.to_state() == s.to_state()
    for attr in ("n", "mean_reward", "var_reward", "validity", "p95_latency_ms", "cost_mean"):
        assert getattr(r, attr) == getattr(s, attr)


finite = st.floats(-10.0, 10.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 10**6),
            st.integers(1, 10**6),
            finite,
            finite,
            finite,
            st.floats(0.0, 1.0),
        ),
        max_size=80,
    ),
    max_points=st.integers(4, 12),
)
def test_comparison_history_state_round_trip(
    rows: list[tuple[int, int, float, float, float, float]], max_points: int
) -> None:
    h = ComparisonHistory(max_points=max_points)
    for n_a, n_b, d, a, b, p in rows:
        h.record(n_a, n_b, d, min(a, b), max(a, b), p)
    assert len(h.points) <= max_points
    state = json.loads(json.dumps(h.to_state(), allow_nan=False))
    r = ComparisonHistory.from_state(state)
    assert r.to_state() == h.to_state()
    assert (r.points, r.last, r.min_p_value, r.cs_low, r.cs_high) == (
        h.points,
        h.last,
        h.min_p_value,
        h.cs_low,
        h.cs_high,
    )
    # recording goes on identically after a restore
    h.record(1, 1, 0.0, -1.0, 1.0, 0.5)
    r.record(1, 1, 0.0, -1.0, 1.0, 0.5)
    assert r.to_state() == h.to_state()


@pytest.mark.parametrize(
    ("cls", "state"),
    [
        (VariantStats, {"n": 1}),
        (VariantStats, {**VariantStats().to_state(), "n": 3}),
        (ComparisonHistory, {"max_points": "x"}),
    ],
)
def test_malformed_state_raises_state_error(cls: Any, state: dict[str, Any]) -> None:
    with pytest.raises(StateError):
        cls.from_state(state)


# ------------------------------------------------------------------------------------- plot


def test_plot_confidence_sequence_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ctl, cand, h = VariantStats(), VariantStats(), ComparisonHistory(max_points=100)
    for _ in range(1500):
        ctl.observe(float(rng.random() < 0.6), True, 100.0, 0.0)
        cand.observe(float(rng.random() < 0.66), True, 100.0, 0.0)
        h.update(ctl, cand)
    out = tmp_path / "cs.png"
    plot_confidence_sequence(h, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.png"
    plot_confidence_sequence(ComparisonHistory(), empty)
    assert empty.stat().st_size > 0
