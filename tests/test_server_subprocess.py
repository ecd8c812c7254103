"""``routewise serve`` as a real process: kill -9 loses no acknowledged decision or feedback,
restart restores the policy exactly, SIGTERM drains and snapshots, the token is enforced."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import routewise as rw
from routewise.client import APIError, Client
from routewise.server import DEMO_BACKENDS
from routewise.state.sqlite import SQLiteStore

EXE = shutil.which("routewise")
TOKEN = "subprocess-test-token-81c2"
CONTEXTS = [
    {
        "task": "extraction",
        "schema_depth": 3,
        "n_fields": 12,
        "input_tokens": 900,
        "language": "zh",
    },
    {
        "task": "classification",
        "schema_depth": 1,
        "n_fields": 2,
        "input_tokens": 250,
        "language": "en",
    },
    {"task": "qa", "schema_depth": 2, "n_fields": 6, "input_tokens": 1500, "language": "en"},
]


class Daemon:
    """A ``routewise serve --port 0`` subprocess; its JSON log lines are collected."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        cmd = [EXE] if EXE else [sys.executable, "-m", "routewise.cli"]
        cmd += ["serve", "--port", "0", "--log-json", *args]
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={**base, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.url = self._wait_listening()
        except BaseException:
            self._close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if '"serve.listening"' in line:
                url: str = json.loads(line)["url"]
                return url
        self.proc.kill()
        raise AssertionError("routewise serve did not start:\n" + "\n".join(self.lines))

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._close()

    def _close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)  # collects the last lines
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def stored(db: Path) -> tuple[set[str], dict[str, float]]:
    """What a restarted writer finds: opening the store recovers what the killed process
    acknowledged (its acklog) into the tables."""
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        decisions = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
        feedback = dict(conn.execute("SELECT decision_id, reward FROM feedback").fetchall())
    return decisions, feedback


def traffic(
    url: str,
    n_pairs: int,
    acked_d: dict[str, str],
    acked_f: dict[str, float],
    stop: threading.Event,
    seed: int,
) -> None:
    """decide+feedback pairs until n_pairs are done, the server dies or ``stop`` is set."""
    with Client(url, timeout=10) as client:
        for i in range(n_pairs):
            if stop.is_set():
                return
            ctx = CONTEXTS[(i + seed) % len(CONTEXTS)]
            try:
                d = client.decide(ctx, request_id=f"t{seed}-{i}")
                acked_d[d.decision_id] = d.arm.id
                if i % 10 == 9:
                    continue  # some decisions never get feedback
                ok = d.arm.backend != "ollama:devstral-2" or i % 3 == 0
                outcome = rw.Outcome(valid=ok, latency_ms=300.0 + 10 * (i % 7), cost_usd=0.0002)
                r = client.feedback(d.decision_id, outcome)
                acked_f[d.decision_id] = r.reward
            except httpx.TransportError:
                return


def run_traffic(url: str, threads: int, n_pairs: int) -> tuple[dict[str, str], dict[str, float]]:
    acked_d: dict[str, str] = {}
    acked_f: dict[str, float] = {}
    stop = threading.Event()
    ts = [
        threading.Thread(target=traffic, args=(url, n_pairs, acked_d, acked_f, stop, k))
        for k in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    return acked_d, acked_f


def policy_snapshot(client: Client) -> list[Any]:
    return [
        [r.to_dict() for r in client.best_policy()],
        *([r.to_dict() for r in client.best_policy(ctx)] for ctx in CONTEXTS),
    ]


def test_kill_9_restart_restores_everything_then_sigterm_snapshots(tmp_path: Path) -> None:
    # A fresh machine: no config, no --db -> ./routewise.db with the demo arm set.
    d1 = Daemon(tmp_path)
    db = tmp_path / "routewise.db"
    try:
        assert db.is_file()
        events = d1.events()
        demo = [e for e in events if e["event"] == "serve.demo_arms"]
        assert demo and len(demo[0]["arms"]) == 3 * len(DEMO_BACKENDS)
        listening = next(e for e in events if e["event"] == "serve.listening")
        assert listening["host"] == "127.0.0.1" and listening["durability"] == "batch"

        acked_d, acked_f = run_traffic(d1.url, threads=4, n_pairs=60)
        assert len(acked_d) == 240 and len(acked_f) == 4 * 54
        with Client(d1.url) as client:
            before_policy = policy_snapshot(client)
            before_status = client.status()
    finally:
        rc = d1.stop(signal.SIGKILL)
    assert rc == -signal.SIGKILL

    decisions, feedback = stored(db)
    assert set(acked_d) <= decisions
    assert {k: feedback[k] for k in acked_f} == acked_f  # every acknowledged feedback, same reward

    # Restart (now with a token): the learned policy is exactly what it was.
    d2 = Daemon(tmp_path, env={"ROUTEWISE_TOKEN": TOKEN})
    try:
        with Client(d2.url) as anon:
            with pytest.raises(APIError) as err:
                anon.best_policy()
            assert err.value.status_code == 401 and err.value.error == "Unauthorized"
            assert anon.alive()
        with Client(d2.url, token=TOKEN) as client:
            assert policy_snapshot(client) == before_policy
            after_status = client.status()
            assert after_status.to_dict() == before_status.to_dict()
            # and it keeps learning: acknowledged feedback on a decision made before the kill
            pending = next(i for i in acked_d if i not in acked_f)
            r = client.feedback(pending, rw.Outcome(valid=True, latency_ms=100.0, cost_usd=0.0))
            assert not r.duplicate
            again = client.feedback(
                next(iter(acked_f)), {"valid": False, "latency_ms": 1.0, "cost_usd": 0.0}
            )
            assert again.duplicate and again.reward == acked_f[again.decision_id]
            trace = list(client.trace())
            assert {t["decision_id"] for t in trace} == decisions
    finally:
        rc = d2.stop(signal.SIGTERM)
    assert rc == 0, "\n".join(d2.lines)
    events = d2.events()
    assert any(e["event"] == "serve.stopped" for e in events)
    assert TOKEN not in "\n".join(d2.lines)
    assert any(e["event"] == "request" and e.get("status") == 401 for e in events)
    with sqlite3.connect(db) as conn:  # graceful stop snapshotted everything
        snap = conn.execute("SELECT max(seq) FROM snapshots").fetchone()[0]
        top = conn.execute(
            "SELECT max(seq) FROM (SELECT seq FROM decisions UNION ALL SELECT seq FROM feedback)"
        ).fetchone()[0]
    assert snap == top


def test_kill_9_under_load_loses_no_acknowledgement(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    d = Daemon(tmp_path, "--db", str(db))
    acked_d: dict[str, str] = {}
    acked_f: dict[str, float] = {}
    stop = threading.Event()
    ts = [
        threading.Thread(target=traffic, args=(d.url, 100_000, acked_d, acked_f, stop, k))
        for k in range(6)
    ]
    try:
        for t in ts:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked_f) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        d.stop(signal.SIGKILL)  # requests are in flight
        stop.set()
        for t in ts:
            t.join(timeout=30)
    assert len(acked_f) >= 300
    decisions, feedback = stored(db)
    assert set(acked_d) <= decisions
    assert {k: feedback[k] for k in acked_f} == acked_f
    # the store restarts cleanly after the crash and knows every acknowledged feedback
    ctl = rw.Controller(store=db)
    try:
        assert ctl.status().feedbacks == len(feedback) >= len(acked_f)
    finally:
        ctl.close()


def test_serve_reports_a_busy_port_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cmd = [EXE] if EXE else [sys.executable, "-m", "routewise.cli"]
        res = subprocess.run(
            [*cmd, "serve", "--port", str(port), "--db", str(tmp_path / "x.db")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")},
        )
    assert res.returncode == 2
    assert "port" in res.stderr and str(port) in res.stderr


def test_sigterm_leaves_only_the_database(tmp_path: Path) -> None:
    """The README's first command on a fresh directory creates ./routewise.db; a clean stop
    (SIGTERM) leaves exactly that file: no lock file, no acklog, no -wal/-shm."""
    d = Daemon(tmp_path)
    try:
        assert {p.name for p in tmp_path.iterdir()} >= {"routewise.db", "routewise.db.lock"}
        run_traffic(d.url, threads=1, n_pairs=20)
    finally:
        rc = d.stop(signal.SIGTERM)
    assert rc == 0, "\n".join(d.lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routewise.db"]
    # and it opens again: a new sidecar on the same directory takes the lock
    d2 = Daemon(tmp_path)
    assert d2.stop(signal.SIGTERM) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routewise.db"]


def test_sigterm_right_after_the_listening_line_stops_the_server(tmp_path: Path) -> None:
    """A SIGTERM sent as soon as ``serve.listening`` is logged (before uvicorn installed its own
    handlers) used to be swallowed: the sidecar never stopped. It now exits cleanly."""
    for _ in range(3):
        d = Daemon(tmp_path)  # returns as soon as the listening line is read
        t0 = time.monotonic()
        rc = d.stop(signal.SIGTERM)
        assert rc == 0, "\n".join(d.lines)
        assert time.monotonic() - t0 < 15
        assert any(e["event"] == "serve.stopped" for e in d.events())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["routewise.db"]
