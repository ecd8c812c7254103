"""Acceptance: on the stationary scenario, squarecb and linucb beat uniform and the best fixed arm.

50,000 rounds through the full Controller path, one fixed seed (≈ 2.5 s per policy). The
regret is exact (expected rewards are closed-form), and so are the two references: the best
fixed arm in hindsight and uniform random, computed on the very same requests.

The Guardian is off here: this checks the *policies*. With the Guardian on, its latency
check trips on stationary traffic (the policy itself shifts which requests an arm serves), which
is reported separately (see the simulation report); ``benchmarks/simulation.py`` runs both.
"""

from __future__ import annotations

import pytest

from routewise.simulations import SimulationResult, load_scenario, simulate

ROUNDS = 50_000


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(
        load_scenario("stationary"),
        ["squarecb", "linucb", "uniform"],
        rounds=ROUNDS,
        seeds=[0],
        guardian=False,
    )


@pytest.mark.parametrize("policy", ["squarecb", "linucb"])
def test_learning_policies_beat_uniform_and_the_best_fixed_arm(
    result: SimulationResult, policy: str
) -> None:
    run = result.runs[policy][0]
    uniform = result.runs["uniform"][0]
    assert run.rounds == ROUNDS
    assert run.regret < 0.75 * run.best_fixed_regret, (run.regret, run.best_fixed_regret)
    assert run.regret < 0.25 * uniform.regret, (run.regret, uniform.regret)
    # and they keep learning: the regret rate over the last fifth is well below the best fixed arm's
    curve = run.regret_curve
    tail = (curve[-1] - curve[int(len(curve) * 0.8) - 1]) / (ROUNDS * 0.2)
    assert tail < 0.5 * run.best_fixed_regret / ROUNDS


def test_references_are_exact_and_shared(result: SimulationResult) -> None:
    runs = [result.runs[p][0] for p in ("squarecb", "linucb", "uniform")]
    # common random numbers: every policy saw the same requests, so the same oracle and arms
    assert len({r.oracle_sum for r in runs}) == 1
    assert len({tuple(r.arm_expected_sum) for r in runs}) == 1
    uniform = runs[2]
    # the uniform policy's realized regret matches the exact expectation of uniform routing
    assert uniform.regret == pytest.approx(uniform.uniform_regret, rel=0.03)
    assert uniform.uniform_regret > 2.5 * uniform.best_fixed_regret > 0
