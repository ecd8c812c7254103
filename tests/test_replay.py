"""Offline replay of logged traces: reading (JSONL, SQLite, bad lines), estimates, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import routewise as rw
from routewise.cli import app
from routewise.errors import ConfigError
from routewise.simulations import TraceError, TraceReader, ope, replay
from routewise.simulations.replay import StaticCandidate, parse_candidate

ARMS = ["alpha", "beta", "gamma"]  # opaque action names: logs of another system
Q = np.array([[0.9, 0.4, 0.2], [0.2, 0.7, 0.3], [0.3, 0.3, 0.8]])  # q[x, arm]


def write_uniform_trace(path: Path, n: int = 6000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with path.open("w") as fh:
        for i in range(n):
            x = int(rng.integers(3))
            a = int(rng.integers(3))
            r = float(rng.random() < Q[x, a])
            line = {
                "decision_id": f"d{i}",
                "ts": 1.0 + i,
                "context": {"segment": f"s{x}", "size": int(rng.integers(1, 100))},
                "arm": ARMS[a],
                "propensity": 1 / 3,
                "reward": r,
                "outcome": {"valid": bool(r), "latency_ms": 100.0 + 900.0 * a, "cost_usd": 0.001},
                "source": "other-system",
            }
            fh.write(json.dumps(line) + "\n")


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("replay") / "uniform.jsonl"
    write_uniform_trace(p)
    return p


def dist_file(tmp: Path, name: str, probs: dict[str, float]) -> Path:
    p = tmp / f"{name}.json"
    p.write_text(json.dumps(probs))
    return p


def arrays(path: Path, probs: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    r = np.array([x["reward"] for x in lines])
    p = np.array([x["propensity"] for x in lines])
    t = np.array([probs.get(x["arm"], 0.0) for x in lines])
    return r, p, t


def test_static_candidates_match_the_array_estimators_and_the_truth(
    trace: Path, tmp_path: Path
) -> None:
    best = {"alpha": 0.0, "beta": 0.0, "gamma": 0.0}
    mixed = {"alpha": 0.6, "beta": 0.3, "gamma": 0.1}
    f_mixed = dist_file(tmp_path, "mixed", mixed)
    res = replay(trace, [f_mixed], n_boot=300)
    assert res.n == 6000 and res.uniform
    c = res.candidates[0]
    r, p, t = arrays(trace, mixed)
    assert c.estimates["ips"].value == pytest.approx(ope.ips(r, p, t), rel=1e-12)
    assert c.estimates["snips"].value == pytest.approx(ope.snips(r, p, t), rel=1e-12)
    assert c.ess == pytest.approx(ope.ess(p, t), rel=1e-12)
    truth = float((Q @ np.array([0.6, 0.3, 0.1])).mean())  # segments are uniform
    for k in ("ips", "snips", "dr", "switch_dr"):
        e = c.estimates[k]
        assert e.ci_low <= truth <= e.ci_high, (k, e, truth)
    assert abs(c.estimates["dm"].value - truth) < 0.03
    del best


def test_json_has_exactly_the_issue_shape(trace: Path, tmp_path: Path) -> None:
    f = dist_file(tmp_path, "all_alpha", {"alpha": 1.0})
    out = replay(trace, [f, "squarecb"], n_boot=100).to_dict()
    assert set(out) == {"n", "candidates"}
    assert [c["name"] for c in out["candidates"]] == ["all_alpha", "squarecb"]
    for c in out["candidates"]:
        assert set(c) == {"name", "ess", "estimates"}
        assert list(c["estimates"]) == ["ips", "snips", "dm", "dr", "switch_dr"]
        for e in c["estimates"].values():
            assert set(e) == {"value", "ci_low", "ci_high"}
            assert e["ci_low"] <= e["value"] <= e["ci_high"]
    json.dumps(out, allow_nan=False)


def test_learning_policy_learns_while_replaying(trace: Path, tmp_path: Path) -> None:
    uniform = dist_file(tmp_path, "uniform", dict.fromkeys(ARMS, 1 / 3))
    res = replay(
        trace, [uniform, "linucb:alpha=0.2", "squarecb@low_latency"], n_boot=100, rejection=True
    )
    by = {c.name: c for c in res.candidates}
    oracle = float(Q.max(axis=1).mean())
    for name in ("linucb:alpha=0.2", "squarecb@low_latency"):
        dr = by[name].estimates["dr"].value
        assert dr > by["uniform"].estimates["dr"].value + 0.15, (name, dr)
        assert dr < oracle + 0.02
        rej = by[name].rejection
        assert rej is not None and 1700 < rej.accepted < 2300  # ≈ n / 3
        assert rej.estimate.value > by["uniform"].estimates["dr"].value
    # uniform over the logged arms = the logging policy: every weight is 1
    assert by["uniform"].ess == pytest.approx(res.n)
    assert by["uniform"].estimates["ips"].value == pytest.approx(res.logged.value)


def test_rejection_replay_needs_a_uniform_log(tmp_path: Path) -> None:
    p = tmp_path / "skewed.jsonl"
    p.write_text(
        "\n".join(
            json.dumps({"arm": a, "propensity": pr, "reward": 1.0, "context": {}})
            for a, pr in [("a", 0.8), ("b", 0.2)] * 20
        )
    )
    assert not replay(p, ["squarecb"], n_boot=50).uniform
    with pytest.raises(ConfigError, match="uniformly logged"):
        replay(p, ["squarecb"], rejection=True)


def test_bad_lines_are_skipped_with_line_numbers_or_fatal_with_strict(
    trace: Path, tmp_path: Path
) -> None:
    lines = trace.read_text().splitlines()[:300]
    lines[4] = '{"arm": "alpha", "propensity": 1.5, "reward": 1}'
    lines[9] = "{not json"
    lines[14] = json.dumps({"arm": "beta", "propensity": 0.5, "reward": "high"})
    lines[19] = json.dumps({"arm": "beta", "propensity": 0.5})  # no feedback yet: pending
    lines[24] = ""  # blank lines are ignored
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    reader = TraceReader(bad)
    assert sum(1 for _ in reader) == 295
    assert (reader.stats.bad, reader.stats.pending) == (3, 1)
    assert reader.stats.errors[0] == "line 5: propensity: must be in (0, 1], got 1.5"
    assert reader.stats.errors[1].startswith("line 10: line: not valid JSON")
    assert reader.stats.errors[2].startswith("line 15: reward: must be a finite number")
    res = replay(bad, ["squarecb"], n_boot=50)
    assert res.n == 295 and res.diagnostics()["bad"] == 3
    with pytest.raises(TraceError) as err:
        replay(bad, ["squarecb"], strict=True)
    assert (err.value.line, err.value.field) == (5, "propensity")
    assert "bad.jsonl line 5: propensity" in str(err.value)


def test_reward_preset_recomputes_from_outcomes(trace: Path, tmp_path: Path) -> None:
    lines = trace.read_text().splitlines()[:400]
    obj = json.loads(lines[7])
    del obj["outcome"]
    lines[7] = json.dumps(obj)
    obj = json.loads(lines[8])
    obj["outcome"]["latency_ms"] = -5
    lines[8] = json.dumps(obj)
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(lines) + "\n")
    f = dist_file(tmp_path, "gamma", {"gamma": 1.0})
    logged = replay(p, [f], n_boot=50)
    fast = replay(p, [f], reward="low_latency", n_boot=50)
    assert logged.n == 400 and fast.n == 398 and fast.skipped == 2
    assert fast.skip_errors[0].startswith("line 8: outcome: is required")
    assert fast.skip_errors[1] == "line 9: outcome.latency_ms: must be >= 0, got -5"
    # gamma is the slow arm: it is worth less under low_latency than under the logged reward
    assert fast.candidates[0].estimates["ips"].value < logged.candidates[0].estimates["ips"].value
    with pytest.raises(TraceError, match="line 8: outcome"):
        replay(p, [f], reward="low_latency", strict=True)


def test_sqlite_store_is_read_like_its_exported_trace(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    arms = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
    ctl = rw.Controller(arms=arms, policy="uniform", store=db, seed=0, guardian=False)
    rng = np.random.default_rng(0)
    for i in range(400):
        d = ctl.decide({"task": ["qa", "extraction"][i % 2], "n_fields": int(rng.integers(1, 30))})
        if i % 10 == 9:
            continue  # no feedback yet
        ok = bool(rng.random() < (0.9 if d.arm.backend == "openai:gpt-5.4" else 0.5))
        ctl.feedback(d.decision_id, rw.Outcome(valid=ok, latency_ms=500.0, cost_usd=0.001))
    jsonl = tmp_path / "trace.jsonl"
    ctl.export_trace(jsonl)
    ctl.close()
    from_db = TraceReader(db)
    assert from_db.kind == "sqlite"
    events_db = [(e.arm, e.propensity, e.reward) for e in from_db]
    events_js = [(e.arm, e.propensity, e.reward) for e in TraceReader(jsonl)]
    assert events_db == events_js and len(events_db) == 360
    assert from_db.stats.pending == 40
    f = dist_file(tmp_path, "openai", {"openai:gpt-5.4/direct_emit": 1.0})
    a = replay(db, [f], n_boot=50).to_dict()
    b = replay(jsonl, [f], n_boot=50).to_dict()
    assert a == b


def test_candidate_specs_and_errors(tmp_path: Path, trace: Path) -> None:
    assert isinstance(parse_candidate(str(dist_file(tmp_path, "d", {"a": 1.0}))), StaticCandidate)
    with pytest.raises(ConfigError, match="sum to 1"):
        parse_candidate(str(dist_file(tmp_path, "e", {"a": 0.5})))
    with pytest.raises(ConfigError, match="probability"):
        parse_candidate(str(dist_file(tmp_path, "f", {"a": -1.0, "b": 2.0})))
    with pytest.raises(ConfigError, match="unknown policy"):
        parse_candidate("bogus")
    with pytest.raises(ConfigError, match="preset"):
        parse_candidate("squarecb@fastest")
    with pytest.raises(ConfigError, match="listed twice"):
        replay(trace, ["squarecb", "squarecb"])
    with pytest.raises(ConfigError, match="does not exist"):
        replay(tmp_path / "missing.jsonl", ["squarecb"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"arm": "a", "propensity": 1.0}\n')
    with pytest.raises(ConfigError, match="no usable events"):
        replay(empty, ["squarecb"])
    # mass on arms the trace never logged is reported (IPS cannot value it)
    f = dist_file(tmp_path, "novel", {"alpha": 0.5, "delta": 0.5})
    c = replay(trace, [f], n_boot=50).candidates[0]
    assert c.unsupported_mass == pytest.approx(0.5)


def test_replay_cli_json_and_table(trace: Path, tmp_path: Path) -> None:
    f = dist_file(tmp_path, "alpha", {"alpha": 1.0})
    runner = CliRunner()
    res = runner.invoke(
        app, ["replay", str(trace), "--policy", f"squarecb,{f}", "--json", "--n-boot", "50"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n"] == 6000 and [c["name"] for c in out["candidates"]] == ["squarecb", "alpha"]
    res = runner.invoke(
        app,
        ["replay", str(trace), "-p", "linucb", "--rejection", "--n-boot", "50"],
        env={"COLUMNS": "220"},
    )
    assert res.exit_code == 0, res.output
    assert "Switch-DR" in res.stdout and "Li et al." in res.stdout and "linucb" in res.stdout


EXE = shutil.which("routewise")


def test_replay_cli_strict_exits_2_naming_the_line(trace: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = trace.read_text().splitlines()[:50]
    lines[2] = '{"arm": 3, "propensity": 0.5, "reward": 1}'
    bad.write_text("\n".join(lines) + "\n")
    cmd = [EXE] if EXE else [sys.executable, "-m", "routewise.cli"]
    common = ["replay", str(bad), "--policy", "uniform", "--n-boot", "20"]
    ok = subprocess.run([*cmd, *common, "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["n"] == 49
    assert (
        "skipped 1 unusable line(s) of 50 (first: line 3: arm: must be a non-empty string"
        in " ".join(ok.stderr.split())
    )
    strict = subprocess.run(
        [*cmd, *common, "--strict"], capture_output=True, text=True, timeout=120
    )
    assert strict.returncode == 2
    assert "bad.jsonl line 3: arm: must be a non-empty string, got 3" in strict.stderr


def test_bad_bootstrap_settings_are_named_before_reading(tmp_path: Path) -> None:
    """n_boot=0 used to divide by zero (max_draws // n_boot) after a whole pass over the trace."""
    missing = tmp_path / "never-read.jsonl"  # not even opened: the settings fail first
    with pytest.raises(ConfigError, match="n_boot"):
        replay(missing, ["squarecb"], n_boot=0)
    with pytest.raises(ConfigError, match="alpha"):
        replay(missing, ["squarecb"], alpha=1.5)
