"""A/B experiments through the Controller: assignment, lifecycle, promote/abort, guardrail
auto-stop, persistence across restart, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from scipy import stats

import routewise as rw
from routewise.errors import ExperimentConflict, UnknownExperiment

ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"], ["direct_emit", "local_reconstructed"])
GOOD = "openai:gpt-5.4/direct_emit"
BAD = "ollama:llama3/local_reconstructed"
VARIANTS = {
    "control": {"policy": "squarecb"},
    "candidate": {"policy": "linucb", "reward": "low_latency"},
}


def outcome(arm: str, rng: np.random.Generator) -> rw.Outcome:
    p = 0.95 if arm == GOOD else 0.5
    return rw.Outcome(
        valid=bool(rng.random() < p), latency_ms=float(300 * rng.lognormal(0, 0.2)), cost_usd=0.0002
    )


def traffic(ctl: rw.Controller, n: int, seed: int = 0, units: int = 500) -> list[rw.Decision]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d = ctl.decide(
            {"task": "qa", "n": float(i % 5)}, unit_id=f"user-{int(rng.integers(units))}"
        )
        ctl.feedback(d.decision_id, outcome(d.arm.id, rng))
        out.append(d)
    return out


def test_lifecycle_assignment_and_status() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False)
    d = ctl.decide({}, unit_id="user-1")
    assert d.experiment is None and d.variant is None  # no experiment: unit_id ignored
    spec = ctl.create_experiment("ls-weights", VARIANTS, {"control": 0.5, "candidate": 0.5})
    assert spec.status == "draft" and spec.control == "control"
    ctl.start_experiment("ls-weights")
    ds = traffic(ctl, 1500)
    by_unit: dict[str, set[str]] = {}
    for dd in ds:
        assert dd.experiment == "ls-weights" and dd.variant in ("control", "candidate")
    # sticky per unit
    for _ in range(3):
        again = ctl.decide({}, unit_id="user-42")
        by_unit.setdefault("user-42", set()).add(str(again.variant))
    assert len(by_unit["user-42"]) == 1
    counts = [sum(dd.variant == v for dd in ds) for v in ("control", "candidate")]
    assert stats.chisquare(counts).pvalue > 1e-4
    rep = ctl.experiment_status("ls-weights")
    assert set(rep.variants) == {"control", "candidate"}
    c = rep.variants["candidate"]
    assert (
        c.n > 0
        and 0 <= c.mean_reward <= 1
        and c.validity is not None
        and c.p95_latency_ms is not None
    )
    cmp = rep.comparisons["candidate"]
    assert cmp.verdict in ("better", "worse", "inconclusive")
    assert rep.srm_p_value is not None and not rep.srm
    json.dumps(rep.to_dict(), allow_nan=False)
    ctl.stop_experiment("ls-weights")
    assert ctl.decide({}, unit_id="user-42").experiment is None


def test_promote_makes_the_winner_the_default() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False)
    ctl.create_experiment("e1", VARIANTS)
    ctl.start_experiment("e1")
    traffic(ctl, 600)
    ctl.promote_experiment("e1", "candidate")
    assert ctl.policy.name == "linucb" and ctl.reward.name == "low_latency"
    assert ctl.experiments()[0].status == "promoted" and ctl.experiments()[0].winner == "candidate"
    d = ctl.decide({}, unit_id="user-1")
    assert d.experiment is None and d.policy == "linucb"
    with pytest.raises(rw.ConfigError) as ei:
        ctl.promote_experiment("e1", "control")
    assert ei.value.field == "status"


def test_abort_keeps_the_default() -> None:
    ctl = rw.Controller(arms=ARMS, policy="squarecb", seed=0, log_events=False)
    ctl.create_experiment("e2", VARIANTS)
    ctl.start_experiment("e2")
    traffic(ctl, 100)
    ctl.abort_experiment("e2")
    assert ctl.policy.name == "squarecb"
    assert ctl.decide({}, unit_id="u").experiment is None


def test_bad_experiments_are_refused() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    with pytest.raises(rw.ConfigError):
        ctl.create_experiment("x", {"only": {"policy": "squarecb"}})
    with pytest.raises(rw.PolicyError):
        ctl.create_experiment("x", {"a": {"policy": "squarecb"}, "b": {"policy": "nope"}})
    with pytest.raises(rw.UnknownArm):
        ctl.create_experiment("x", {"a": {}, "b": {"arms": ["nope:x/direct_emit"]}})
    ctl.create_experiment("x", VARIANTS)
    with pytest.raises(rw.ConfigError):
        ctl.create_experiment("x", VARIANTS)
    ctl.create_experiment("y", VARIANTS)
    ctl.start_experiment("x")
    with pytest.raises(rw.ConfigError) as ei:
        ctl.start_experiment("y")
    assert "already running" in str(ei.value)


def test_guardrail_auto_stops_a_worse_variant() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False, guardian=False)
    ctl.create_experiment(
        "risky",
        {"control": {"arms": [GOOD]}, "candidate": {"arms": [BAD]}},
        guardrails={"min_n": 100},
    )
    ctl.start_experiment("risky")
    traffic(ctl, 3000)
    spec = ctl.experiments()[0]
    assert spec.status == "stopped"
    assert spec.stopped_by_guardrail is not None and spec.stopped_by_guardrail.startswith(
        "candidate:"
    )


def test_experiment_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    ctl = rw.Controller(arms=ARMS, store=db, seed=0, log_events=False, snapshot_every=97)
    ctl.create_experiment("e3", VARIANTS)
    ctl.start_experiment("e3")
    traffic(ctl, 700)
    before = ctl.experiment_status("e3").to_dict()
    variant_42 = ctl.decide({}, unit_id="user-42").variant
    ctl.close()
    again = rw.Controller(store=db, log_events=False)
    after = again.experiment_status("e3").to_dict()
    # one extra decision (assignment) was made for user-42 before closing
    assert after["variants"]["control"]["n"] == before["variants"]["control"]["n"]
    assert after["comparisons"] == before["comparisons"]
    assert again.decide({}, unit_id="user-42").variant == variant_42
    again.close()


EXE = shutil.which("routewise")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "routewise.cli", *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_cli_experiment_flow(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    rw.Controller(arms=ARMS, store=db, seed=0).close()
    res = run("experiment", "create", "ab", "--variants", json.dumps(VARIANTS), "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert run("experiment", "start", "ab", "--db", str(db)).returncode == 0
    ctl = rw.Controller(store=db, log_events=False)
    traffic(ctl, 400)
    ctl.close()
    png = tmp_path / "cs.png"
    res = run("experiment", "status", "ab", "--db", str(db), "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert "comparisons vs control" in res.stdout and png.stat().st_size > 1000
    res = run("experiment", "status", "ab", "--db", str(db), "--json")
    assert set(json.loads(res.stdout)["variants"]) == {"control", "candidate"}
    assert run("experiment", "stop", "ab", "--db", str(db)).returncode == 0
    res = run("experiment", "promote", "ab", "candidate", "--db", str(db))
    assert res.returncode == 0 and "promoted" in res.stdout
    res = run("experiment", "create", "bad", "--variants", "{not json", "--db", str(db))
    assert res.returncode == 2 and "--variants" in res.stderr


def test_cli_sample_size() -> None:
    res = run("experiment", "sample-size", "--mde", "0.02", "--sd", str((0.7 * 0.3) ** 0.5))
    assert res.returncode == 0, res.stderr
    assert "control: 8,242 requests" in res.stdout
    res = run("experiment", "sample-size", "--mde", "0", "--sd", "0.5")
    assert res.returncode == 2 and "mde" in res.stderr


@pytest.mark.parametrize(
    ("variants", "split", "error", "field"),
    [
        ({"a": {}}, None, rw.ConfigError, "variants"),
        ({"a": {}, "b": 3}, None, rw.ConfigError, "variants.b"),
        ({"a": {}, "b": {"arms": []}}, None, rw.ConfigError, "variants.b.arms"),
        ({"a": {}, "b": {"arms": ["x"]}}, None, rw.ConfigError, "variants.b.arms[0]"),
        ({"a": {}, "b": {"policy": 5}}, None, rw.ConfigError, "variants.b.policy"),
        ({"a": {}, "b": {"policy": {"alpha": 1}}}, None, rw.ConfigError, "variants.b.policy"),
        (
            {"a": {}, "b": {"policy": {"name": "linucb", "alpha": float("nan")}}},
            None,
            rw.ConfigError,
            "variants.b.policy.alpha",
        ),
        (
            {"a": {}, "b": {"policy": {"name": "linucb", "alpha": 10**400}}},
            None,
            rw.ConfigError,
            "variants.b.policy.alpha",
        ),
        ({"a": {}, "b": {"reward": "nope"}}, None, rw.ConfigError, "variants.b.reward"),
        ({"a": {}, "b": {"reward": {"w": 1}}}, None, rw.ConfigError, "variants.b.reward.w"),
        ({"a": {}, "b": {"extra": 1}}, None, rw.ConfigError, "variants.b.extra"),
        ({"a": {}, "b c": {}}, None, rw.ConfigError, "variants"),
        ({"a": {}, "b": {}}, {"a": 0.5, "b": 0.6}, rw.ConfigError, "split"),
        ({"a": {}, "b": {}}, {"a": 1.0}, rw.ConfigError, "split"),
        ({"a": {}, "b": {}}, {"a": 0.0, "b": 1.0}, rw.ConfigError, "split.a"),
    ],
)
def test_create_experiment_names_the_field(
    variants: dict[str, Any], split: dict[str, float] | None, error: type[Exception], field: str
) -> None:
    """The library names the request field itself (the sidecar only passes the body on)."""
    ctl = rw.Controller(arms=ARMS, seed=0)
    with pytest.raises(error) as ei:
        ctl.create_experiment("bad", variants, split)
    assert type(ei.value) is error and getattr(ei.value, "field", None) == field
    assert ctl.experiments() == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"salt": ""}, "salt"),
        ({"alpha": 1.5}, "alpha"),
        ({"guardrails": {"min_n": 1}}, "guardrails.min_n"),
        ({"guardrails": {"nope": 1}}, "guardrails.nope"),
        ({"status": "running"}, "status"),
    ],
)
def test_create_experiment_names_a_bad_option(options: dict[str, Any], field: str) -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    with pytest.raises(rw.ConfigError) as ei:
        ctl.create_experiment("x", VARIANTS, **options)
    assert ei.value.field == field and ctl.experiments() == []
    with pytest.raises(rw.ConfigError) as ei:
        ctl.create_experiment("x" * 129, VARIANTS)
    assert ei.value.field == "name"


def test_unknown_experiments_and_conflicts_are_typed(tmp_path: Path) -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False)
    for call in (
        lambda: ctl.start_experiment("nope"),
        lambda: ctl.stop_experiment("nope"),
        lambda: ctl.abort_experiment("nope"),
        lambda: ctl.promote_experiment("nope", "control"),
        lambda: ctl.experiment_status("nope"),
        lambda: ctl.plot_experiment("nope", tmp_path / "x.png"),
    ):
        with pytest.raises(UnknownExperiment) as unknown:
            call()
        assert unknown.value.field == "name" and unknown.value.name == "nope"
    ctl.create_experiment("x", VARIANTS)
    ctl.create_experiment("y", VARIANTS)
    with pytest.raises(ExperimentConflict) as conflict:
        ctl.stop_experiment("x")  # a draft cannot stop
    assert (conflict.value.field, conflict.value.name) == ("status", "x")
    ctl.start_experiment("x")
    with pytest.raises(UnknownExperiment):
        ctl.start_experiment("nope")  # unknown first, even while another runs
    with pytest.raises(ExperimentConflict) as conflict:
        ctl.start_experiment("y")
    assert conflict.value.field == "name" and "already running" in conflict.value.reason
    with pytest.raises(rw.ConfigError) as ei:
        ctl.promote_experiment("x", "nope")
    assert ei.value.field == "variant" and ctl.experiments()[0].status == "running"
    ctl.abort_experiment("x")
    with pytest.raises(ExperimentConflict) as conflict:
        ctl.experiment_status("x")  # its statistics were released
    assert conflict.value.field == "name"
    assert ctl.experiment_status("y").status == "draft"


def test_decision_log_names_the_policy_that_chose() -> None:
    ctl = rw.Controller(arms=ARMS, policy="squarecb", seed=0, log_decisions=True)
    ctl.create_experiment("e", {"control": {}, "candidate": {"policy": "linucb"}})
    ctl.start_experiment("e")
    with structlog.testing.capture_logs() as logs:
        ds = [ctl.decide({}, unit_id=f"user-{i}") for i in range(40)]
    lines = [e for e in logs if e["event"] == "decision"]
    assert [(e["policy"], e["experiment"], e["variant"]) for e in lines] == [
        (d.policy, "e", d.variant) for d in ds
    ]
    assert {e["policy"] for e in lines} == {"squarecb", "linucb"}
