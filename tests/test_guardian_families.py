"""The environment families of ``benchmarks/guardian.py --families`` (``benchmarks/_families.py``)
are seeded and have the properties their docstrings claim."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _families as F

from routewise.reward import get_reward


def test_module_examples_run() -> None:
    result = doctest.testmod(F, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", sorted(F.FAMILIES))
def test_family_and_run_seeds_reproduce(name: str) -> None:
    a = F.FAMILIES[name](4).run(seed=1).batch(300)
    b = F.FAMILIES[name](4).run(seed=1).batch(300)
    assert a.contexts == b.contexts
    assert (a.valid, a.latency_ms, a.error) == (b.valid, b.latency_ms, b.error)
    np.testing.assert_array_equal(a.mu, b.mu)
    other_run = F.FAMILIES[name](4).run(seed=2).batch(300)
    assert other_run.contexts != a.contexts
    other_env = F.FAMILIES[name](5).run(seed=1).batch(300)
    assert other_env.p_valid.shape != a.p_valid.shape or not np.allclose(
        other_env.p_valid, a.p_valid
    )


def test_environments_have_the_claimed_shape() -> None:
    for seed in range(10):
        fam = F.Logistic(seed)
        keys = fam.space.keys
        assert 6 <= len(fam.arms) <= 12
        assert 5 <= len(keys) <= 10
        assert sum(k in F.CATEGORICAL for k in keys) >= 1
        assert sum(k in {f.name for f in F.NUMERIC} for k in keys) >= 2
        assert 2 <= len(fam.pairs) <= 4
    ctx = F.Logistic(0).run(0).batch(5).contexts[0]
    assert all(isinstance(v, int | float | str | bool) for v in ctx.values())


@pytest.mark.parametrize(
    ("name", "lo", "hi"), [("validity_high", 0.99, 1.0), ("validity_low", 0.5, 0.7)]
)
def test_validity_levels(name: str, lo: float, hi: float) -> None:
    for seed in range(3):
        b = F.FAMILIES[name](seed).run(0).batch(4000)
        assert lo <= float(b.p_valid.mean()) <= hi
        served = np.array(b.error) == 0
        assert lo - 0.02 <= float(np.array(b.valid)[served].mean()) <= hi + 0.02


def test_error_bursts_stationary_rate_and_bursty() -> None:
    fam = F.ErrorBursts(0)
    assert np.all((fam.rate >= 0.01) & (fam.rate <= 0.03))
    rng = np.random.default_rng(0)
    # 16 independent runs of 50k rounds, each starting in the stationary distribution
    rates = np.vstack([fam.error_rates(50_000, rng, fam.run(s)) for s in range(16)])
    errors = rng.random(rates.shape) < rates
    rate = errors.mean(axis=0)
    # the stationary long-run rate, per arm (bursts make the estimate noisy: ~10 % sd)
    # and over the arms
    np.testing.assert_allclose(rate, fam.rate, rtol=0.35)
    assert abs(float(np.mean(rate / fam.rate)) - 1.0) < 0.1
    after_error = (errors[1:] & errors[:-1]).sum(axis=0) / errors[:-1].sum(axis=0)
    assert np.all(after_error > 3.0 * rate)  # bursty: P(error | previous error) ≫ rate
    # an iid family's errors are not bursty, and rare
    iid = F.Logistic(0)
    e2 = rng.random((200_000, len(iid.arms))) < iid.error_rates(200_000, rng, iid.run(0))
    assert e2.mean() < 0.003
    after = (e2[1:] & e2[:-1]).sum(axis=0) / np.maximum(e2[:-1].sum(axis=0), 1)
    assert np.all(after < 0.05)


def test_error_outcomes_name_the_error() -> None:
    b = F.ErrorBursts(1).run(0).batch(3000)
    codes = np.array(b.error)
    i, k = map(int, np.argwhere(codes > 0)[0])
    out = b.outcome(i, k)
    assert out.error in {"timeout", "http_500"} and out.valid is False and out.cost_usd == 0.0


def test_pareto_tail() -> None:
    fam = F.ParetoLatency(0)
    b = fam.run(0).batch(10_000)
    ratio = np.array(b.latency_ms) / b.median_ms
    served = np.array(b.error) == 0
    for k, shape in enumerate(fam.shape):
        r = ratio[served[:, k], k]
        assert 1.5 <= shape <= 3.0
        # P(L > 4 × median) = 0.5 · 4^−shape for Pareto (≈ 0 for the lognormal families)
        assert abs(float((r > 4.0).mean()) / (0.5 * 4.0**-shape) - 1.0) < 0.35
    lognormal = F.Logistic(0).run(0).batch(10_000)
    assert float((np.array(lognormal.latency_ms) / lognormal.median_ms > 4.0).mean()) < 0.003


def test_hetero_latency_sd_depends_on_the_context() -> None:
    fam = F.HeteroLatency(0)
    _, design, raw = fam.space.sample(2000, np.random.default_rng(0))
    _, _, sd, _ = fam.params(design, raw)
    spread = sd.max(axis=0) / sd.min(axis=0)
    assert np.all(spread > 2.0)
    homo = F.Logistic(0)
    _, design, raw = homo.space.sample(200, np.random.default_rng(0))
    _, _, sd_homo, _ = homo.params(design, raw)
    assert np.allclose(sd_homo, sd_homo[0])  # the other families: one log-sd per arm


def test_drifting_mix_drifts_the_traffic_slowly() -> None:
    fam = F.DriftingMix(0)
    run = fam.run(0)
    start = run.batch(300)  # w < 0.002: mix A
    run.t = fam.drift_rounds  # the far end of the drift: mix B
    end = run.batch(3000)
    key = fam.space.categorical[0]
    levels = F.CATEGORICAL[key]

    def freq(contexts: list[dict[str, object]]) -> np.ndarray:
        return np.array([sum(c[key] == v for c in contexts) for v in levels]) / len(contexts)

    assert 0.5 * np.abs(freq(start.contexts) - freq(end.contexts)).sum() > 0.1
    # mix B brings categories the initial mix never shows (language and task always present)
    assert {"language", "task"} <= set(fam.space.keys)
    rng = np.random.default_rng(0)
    mix_a = freq(fam.space.sample(3000, rng)[0])
    mix_b = freq(fam.space.sample(3000, rng, np.ones(3000))[0])
    unseen = mix_a == 0.0
    assert unseen.any() and np.all(mix_b[unseen] > 0.0)
    # slowly: from all mix A to all mix B over drift_rounds, by at most 0.03 % per round
    w = fam.mix_weight(np.arange(fam.drift_rounds + 1))
    assert w is not None and w[0] == 0.0 and w[-1] == pytest.approx(1.0)
    assert np.all(np.diff(w) >= 0.0) and np.diff(w).max() < 3e-4
    assert F.Logistic(0).mix_weight(np.arange(10)) is None  # the other families do not drift


def test_degradation_and_exact_expected_reward() -> None:
    fam = F.Logistic(2)
    base = fam.run(3).batch(6000)
    k = 1
    deg = fam.run(3).batch(6000, F.Degradation(k, latency_factor=2.0, validity_drop=0.2))
    served = np.array(base.error)[:, k] == 0
    lat = np.array(deg.latency_ms)[:, k] / np.array(base.latency_ms)[:, k]
    np.testing.assert_allclose(lat[served], 2.0)
    np.testing.assert_allclose(deg.p_valid[:, k], np.maximum(base.p_valid[:, k] - 0.2, 0.0))
    # the exact expected reward matches the realized rewards of the real Scalarizer
    reward = get_reward("balanced")
    for b in (base, F.ParetoLatency(1).run(0).batch(6000)):
        for arm in range(3):
            got = np.mean([reward(b.outcome(i, arm)) for i in range(len(b.contexts))])
            assert abs(got - float(b.mu[:, arm].mean())) < 0.02
