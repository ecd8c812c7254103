"""Trace-driven simulation: outcome models fitted to a logged trace, then simulated against."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import routewise as rw
from routewise.cli import app
from routewise.errors import ConfigError
from routewise.reward import get_reward
from routewise.simulations import (
    SyntheticEnvironment,
    TraceEnvironment,
    TraceError,
    load_scenario,
    simulate,
)
from routewise.simulations.outcomes import expected_reward, realize

ENV = SyntheticEnvironment.default()


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,000 uniformly routed requests of the synthetic environment, logged by a Controller."""
    path = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    n = 6000
    contexts, params = ENV.sample(n, np.random.default_rng(21))
    draws = realize(params, np.random.default_rng(22))
    ids = [a.id for a in ENV.arms]
    ctl = rw.Controller(arms=ENV.arms, policy="uniform", seed=0, guardian=False)
    for i in range(n):
        d = ctl.decide(contexts[i])
        ctl.feedback(d.decision_id, draws.outcome(i, ids.index(d.arm.id)))
    ctl.export_trace(path)
    return path


def test_fitted_models_recover_the_environment(trace: Path) -> None:
    env = TraceEnvironment.fit(trace)
    assert sorted(a.id for a in env.arms) == sorted(a.id for a in ENV.arms)
    contexts, fitted = env.sample(3000, np.random.default_rng(0))
    truth = ENV.params_for(contexts)
    order = [[a.id for a in ENV.arms].index(a.id) for a in env.arms]
    assert np.abs(fitted.p_valid.mean(axis=0) - truth.p_valid[:, order].mean(axis=0)).max() < 0.04
    assert np.abs(np.median(fitted.lat_mu - truth.lat_mu[:, order], axis=0)).max() < 0.1
    assert np.abs(fitted.lat_sigma[0] - truth.lat_sigma[0, order]).max() < 0.06
    rel_cost = fitted.cost.mean(axis=0) / truth.cost[:, order].mean(axis=0)
    assert np.all(np.abs(rel_cost - 1) < 0.15)
    mu_fit = expected_reward(fitted, get_reward())
    mu_true = expected_reward(truth, get_reward())[:, order]
    assert np.abs(mu_fit - mu_true).mean() < 0.05
    summary = env.describe()["fitted"]
    assert summary["events"] == 6000 and summary["bad_lines"] == 0


def test_simulating_new_policies_against_a_trace(trace: Path) -> None:
    env = TraceEnvironment.fit(trace, max_contexts=2000)
    res = simulate(
        load_scenario("stationary"), ["squarecb", "uniform"], rounds=3000, environment=env
    )
    by = {r["policy"]: r for r in res.summary()}
    assert by["squarecb"]["regret"]["mean"] < by["uniform"]["regret"]["mean"]
    assert res.environment["name"] == "trace:trace.jsonl"
    with pytest.raises(ConfigError, match="needs a synthetic environment"):
        simulate(load_scenario("mix-shift"), ["uniform"], rounds=100, environment=env)
    # events can target the trace's arms
    res = simulate(load_scenario("degradation"), ["uniform"], rounds=500, environment=env)
    assert [r for r, _ in res.events] == [200, 375]


def test_bad_lines_and_unroutable_arms(trace: Path, tmp_path: Path) -> None:
    lines = trace.read_text().splitlines()[:500]
    obj = json.loads(lines[3])
    obj["arm"] = "checkout-button-blue"  # not a backend/mode id: cannot be simulated
    lines[3] = json.dumps(obj)
    obj = json.loads(lines[6])
    obj["outcome"]["cost_usd"] = "free"
    lines[6] = json.dumps(obj)
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(lines) + "\n")
    env = TraceEnvironment.fit(p)
    s = env.describe()["fitted"]
    assert s["bad_lines"] == 2 and s["events"] == 498
    assert s["errors"][0].startswith(
        "line 4: arm: 'checkout-button-blue' is not a 'backend/mode' arm id"
    )
    with pytest.raises(TraceError, match="line 4: arm"):
        TraceEnvironment.fit(p, strict=True)


def test_simulate_from_trace_cli(trace: Path) -> None:
    res = CliRunner().invoke(
        app, ["simulate", "--from-trace", str(trace), "-p", "squarecb", "-n", "500", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["summary"][0]["policy"] == "squarecb"
