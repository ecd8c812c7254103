"""simulate(): the Controller path, determinism, Guardian events, report files and the CLI."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from routewise.cli import app
from routewise.errors import ConfigError
from routewise.simulations import load_scenario, parse_policy_spec, simulate


def _strip_timing(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip_timing(v) for k, v in d.items() if k not in ("elapsed_s", "rounds_per_s")}
    if isinstance(d, list):
        return [_strip_timing(v) for v in d]
    return d


def test_same_seed_same_results_and_realized_rewards_match_expectations() -> None:
    sc = load_scenario("degradation")
    a = simulate(sc, ["squarecb", "default"], rounds=1500, seeds=2)
    b = simulate(sc, ["squarecb", "default"], rounds=1500, seeds=2)
    assert _strip_timing(a.to_dict()) == _strip_timing(b.to_dict())
    c = simulate(sc, ["squarecb"], rounds=1500, seeds=2, seed=5)
    assert c.runs["squarecb"][0].regret != a.runs["squarecb"][0].regret
    for row in a.summary():  # feedback rewards (Scalarizer on drawn outcomes) ≈ exact expectation
        assert row["mean_reward"]["mean"] == pytest.approx(
            row["mean_expected_reward"]["mean"], abs=0.01
        )


def test_guardian_runs_inside_the_simulation() -> None:
    sc = load_scenario("outage")
    on = simulate(sc, ["uniform"], rounds=4000, seeds=1)
    off = simulate(sc, ["uniform"], rounds=4000, seeds=1, guardian=False)
    trips = [
        e
        for e in on.runs["uniform"][0].guardian_events
        if e["to"] == "quarantined" and e["round"] >= 1600
    ]
    assert trips and all(e["arm"].startswith("google_genai:") for e in trips[:3])
    assert off.runs["uniform"][0].guardian_events == []
    # quarantining the failing backend reduces uniform routing's regret during the outage
    assert on.runs["uniform"][0].regret < off.runs["uniform"][0].regret


def test_report_files(tmp_path: Path) -> None:
    res = simulate(
        load_scenario("mix-shift"), ["squarecb", "uniform"], rounds=2000, seeds=2, bins=50
    )
    paths = res.write(tmp_path / "report")
    assert sorted(p.name for p in paths.values()) == [
        "arm_share.png",
        "regret.png",
        "results.json",
        "reward.png",
    ]
    for key in ("regret", "arm_share", "reward"):
        head = paths[key].read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
        assert width >= 800 and height >= 400
    data = json.loads(paths["results"].read_text())
    assert data["rounds"] == 2000 and data["seeds"] == [0, 1]
    assert [e["round"] for e in data["events"]] == [1000]
    assert {p["name"] for p in data["policies"]} == {"squarecb", "uniform"}
    run = data["policies"][0]["runs"][0]
    assert len(run["curves"]["regret"]) == 50 and len(run["curves"]["arm_counts"][0]) == 12
    assert data["summary"][0]["regret"]["mean"] == pytest.approx(
        sum(r["regret"] for r in data["policies"][0]["runs"]) / 2
    )
    assert set(data["baselines"]) >= {"oracle_mean_reward", "best_fixed_arm", "best_fixed_regret"}


def test_policy_specs() -> None:
    assert parse_policy_spec("squarecb:gamma_scale=50:optimism=0.1").params == {
        "gamma_scale": 50,
        "optimism": 0.1,
    }
    for bad, msg in [
        ("bogus", "unknown policy"),
        ("linucb:alpha", "expected name:key=value"),
        ("linucb:seed=3", "seed comes from"),
        ("linucb:alpha=-1", "alpha"),
        ("default:x=1", "no parameters"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_policy_spec(bad)
    sc = load_scenario("stationary")
    with pytest.raises(ConfigError, match="listed twice"):
        simulate(sc, ["uniform", "uniform"], rounds=10)
    with pytest.raises(ConfigError, match="rounds"):
        simulate(sc, ["uniform"], rounds=0)
    with pytest.raises(ConfigError, match="seeds"):
        simulate(sc, ["uniform"], seeds=0)


def test_simulate_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--scenario",
            "degradation",
            "--policies",
            "squarecb,uniform",
            "--rounds",
            "800",
            "--seeds",
            "2",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "160"},
    )
    assert res.exit_code == 0, res.output
    assert (
        "squarecb" in res.stdout and "best fixed arm" in res.stdout and "regret ± sd" in res.stdout
    )
    assert (out / "regret.png").is_file() and (out / "results.json").is_file()
    res = runner.invoke(
        app,
        ["simulate", "-s", "stationary", "-p", "uniform", "-n", "300", "--json", "--no-guardian"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["summary"][0]["policy"] == "uniform" and "best_fixed_arm" in data["baselines"]
    res = runner.invoke(app, ["simulate", "-s", "nope", "-p", "uniform", "-n", "10"])
    assert isinstance(res.exception, ConfigError)
    # bad counts are refused before a progress bar is drawn (nothing on stdout)
    for flag, value in (("--rounds", "-5"), ("--seeds", "0")):
        res = runner.invoke(app, ["simulate", "-p", "uniform", flag, value])
        assert isinstance(res.exception, ConfigError) and res.exception.field == flag[2:]
        assert "simulating" not in res.output + res.stderr
