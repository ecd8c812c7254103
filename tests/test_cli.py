"""The CLI, run as a real subprocess through the installed console script."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

import routewise as rw

EXE = shutil.which("routewise")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "routewise.cli", *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **(env or {})},
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


# ------------------------------------------------------------------ the operator path
def test_an_operator_action_on_a_held_store_gives_the_command_to_send_it(db: Path) -> None:
    """``pin --db`` while a sidecar holds the store: the refusal names the holder, gives the
    ``--url`` command with the token it needs, and says a tokenless sidecar must restart;
    ``experiment … --db`` gives the sidecar request. Lines are not cut (COLUMNS=60)."""
    writer = rw.Controller(store=db)  # holds the writer lock, like a running sidecar
    try:
        res = run("pin", "ollama:llama3/direct_emit", "--db", str(db), env={"COLUMNS": "60"})
        assert res.returncode == 2 and "Traceback" not in res.stderr
        err = res.stderr
        assert f"is in use by pid {os.getpid()}" in err
        assert (
            "\n  ROUTEWISE_TOKEN=<secret> routewise pin ollama:llama3/direct_emit "
            "--url http://127.0.0.1:8787\n" in err
        )
        assert "bearer token" in err and "restart it with one" in err
        res = run("experiment", "start", "ls", "--db", str(db))
        assert res.returncode == 2
        assert (
            "curl -X POST http://127.0.0.1:8787/v1/experiments/ls/start "
            "-H 'Authorization: Bearer <secret>'" in res.stderr
        )
        res = run("experiment", "create", "ls", "--variants", '{"a": {}, "b": {}}', "--db", str(db))
        assert res.returncode == 2
        assert '-d \'{"name": "ls", "variants": {"a": {}, "b": {}}' in res.stderr
    finally:
        writer.close()


@contextlib.contextmanager
def sidecar(db: Path, token: str | None = None) -> Iterator[str]:
    """The sidecar app on 127.0.0.1 (uvicorn in a thread); yields its URL."""
    import socket
    import threading

    import uvicorn

    from routewise.server import create_app

    ctl = rw.Controller(store=db)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ctl, token=token), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        ctl.close()


def test_url_refusals_print_the_servers_reason_and_exit_2(db: Path, tmp_path: Path) -> None:
    arm = "ollama:llama3/direct_emit"
    with sidecar(db) as url:  # the default sidecar: no token
        res = run("pin", arm, "--url", url)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "HTTP 403 Forbidden" in res.stderr
        assert "set ROUTEWISE_TOKEN=<secret>" in res.stderr
        assert "restart `routewise serve`" in res.stderr
        assert run("health", "--url", url, "--json").returncode == 0  # queries need no token
    with sidecar(db, token="s3cret-token") as url:
        res = run("pin", arm, "--url", url)
        assert res.returncode == 2 and "HTTP 401 Unauthorized" in res.stderr
        assert "the token this sidecar was started with" in res.stderr
        res = run("pin", arm, "--url", url, env={"ROUTEWISE_TOKEN": "s3cret-token"})
        assert res.returncode == 0, res.stderr
        assert f"{arm}: pinned" in res.stdout
    res = run("pin", arm, "--url", url)  # nothing listens there any more
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"cannot reach a sidecar at {url}" in res.stderr


# ------------------------------------------------------------------ help and demo
def test_help_shows_no_bool_placeholders_and_keeps_lines_whole() -> None:
    """Every command's --help (in-process: typer's CliRunner renders 80 columns): no
    ``<bool>`` after a flag, no command summary cut with '...', no line past the width."""
    from typer.testing import CliRunner

    from routewise.cli import app

    runner = CliRunner()
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    commands = [[name] for name in group.commands if name != "experiment"]
    sub = group.commands["experiment"]
    assert isinstance(sub, typer.core.TyperGroup)
    commands += [["experiment", name] for name in sub.commands]
    assert len(commands) == 23
    outputs = {}
    for args in [[], ["experiment"], *commands]:
        res = runner.invoke(app, [*args, "--help"], prog_name="routewise")
        assert res.exit_code == 0, res.output
        outputs[" ".join(args)] = res.output
        assert "<bool>" not in res.output, res.output
        lines = [line for line in res.output.splitlines() if not line.startswith("Usage:")]
        assert not any(line.endswith("...") for line in lines), res.output
        assert max(len(line) for line in res.output.splitlines()) <= 80, res.output
    assert "Usage: routewise pin [OPTIONS] {ARM}" in outputs["pin"]
    assert "  --live  " in outputs["demo"] and "  --view / --no-view  " in outputs["demo"]
    assert "  --json  " in outputs["policy"]


def test_demo_without_live_runs_the_simulated_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    res = run("demo", "-n", "600", "-d", "1", "--no-view", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "simulated backends" in res.stdout and "policy now ranks" in res.stdout
    rows = json.loads(out.read_text())
    assert len(rows) == 12 and sum(r["n"] for r in rows.values()) == 600


def test_the_simulated_demo_does_not_depend_on_its_pacing() -> None:
    from io import StringIO

    from rich.console import Console

    from routewise.demo import run_simulated_demo

    def rows(duration_s: float) -> dict[str, dict[str, float]]:
        out = StringIO()
        r = run_simulated_demo(
            rounds=600, duration_s=duration_s, live=False, console=Console(file=out, width=120)
        )
        assert "request 600 of 600" in out.getvalue()
        return r

    assert rows(0.0) == rows(0.5)
