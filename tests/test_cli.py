"""The CLI, run as a real subprocess through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import routewise as rw

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


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    ctl = rw.Controller(
        arms=rw.make_arms(["openai:gpt-5.4", "ollama:llama3"]), policy="linucb", store=path, seed=0
    )
    for i in range(200):
        d = ctl.decide({"task": ["qa", "extraction"][i % 2]})
        ctl.feedback(
            d.decision_id,
            rw.Outcome(valid=d.arm.backend == "ollama:llama3", latency_ms=300.0, cost_usd=0.001),
        )
    ctl.close()
    return path


def test_policy_table(db: Path) -> None:
    res = run("policy", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "ollama:llama3" in res.stdout and "expected reward" in res.stdout


def test_policy_json_matches_library(db: Path) -> None:
    res = run("policy", "--db", str(db), "--context", '{"task": "qa"}', "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    with rw.Controller(store=db) as ctl:
        expected = [r.to_dict() for r in ctl.best_policy({"task": "qa"})]
    assert rows == expected
    assert rows[0]["arm"]["backend"] == "ollama:llama3"


def test_status_table(db: Path) -> None:
    res = run("status", "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "200 decisions" in res.stdout and "p95 ms" in res.stdout


def test_export_trace(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    res = run("export-trace", str(out), "--db", str(db))
    assert res.returncode == 0, res.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 200
    assert {"decision_id", "ts", "context", "arm", "propensity", "outcome", "reward"} <= set(
        json.loads(lines[0])
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("policy", "--db", "/nonexistent/x.db"), "db"),
        (("policy", "--context", "{bad json"), "--context"),
        (("status",), "db"),
    ],
)
def test_errors_are_one_clear_line(args: tuple[str, ...], needle: str, db: Path) -> None:
    full = args if "--db" in args or args == ("status",) else (*args, "--db", str(db))
    res = run(*full)
    assert res.returncode == 2
    assert "error:" in res.stderr and needle in res.stderr
    assert "Traceback" not in res.stderr


def test_guardian_commands(db: Path) -> None:
    arm = "ollama:llama3/direct_emit"
    res = run("pin", arm, "--db", str(db))
    assert res.returncode == 0, res.stderr
    assert "pinned" in res.stdout
    res = run("health", "--db", str(db), "--json")
    assert json.loads(res.stdout)[arm] == "pinned"
    res = run("release", arm, "--db", str(db))
    assert res.returncode == 0 and "healthy" in res.stdout
    res = run("quarantine", "openai:gpt-5.4/direct_emit", "--db", str(db))
    assert res.returncode == 0 and "quarantined" in res.stdout
    res = run("events", "--db", str(db), "--json")
    reasons = [e["reason"] for e in json.loads(res.stdout)]
    assert reasons == ["operator_pin", "operator_release", "operator_quarantine"]
    res = run("events", "--db", str(db))
    assert res.returncode == 0 and "operator_quarantine" in res.stdout
    res = run("pin", "nope:x/direct_emit", "--db", str(db))
    assert res.returncode == 2 and "nope:x/direct_emit" in res.stderr


def test_queries_are_read_only_and_writers_are_exclusive(db: Path) -> None:
    writer = rw.Controller(store=db)  # holds the writer lock, like a running sidecar
    try:

        def snapshot_rows() -> list[tuple[int, float]]:
            import sqlite3

            conn = sqlite3.connect(db)
            try:
                return conn.execute("SELECT seq, ts FROM snapshots ORDER BY seq").fetchall()
            finally:
                conn.close()

        before = snapshot_rows()
        res = run("status", "--db", str(db))
        assert res.returncode == 0, res.stderr
        assert snapshot_rows() == before  # a query never writes a snapshot
        res = run("pin", "ollama:llama3/direct_emit", "--db", str(db))
        assert res.returncode == 2
        assert "in use by pid" in res.stderr and "--url" in res.stderr
    finally:
        writer.close()
    assert run("pin", "ollama:llama3/direct_emit", "--db", str(db)).returncode == 0
