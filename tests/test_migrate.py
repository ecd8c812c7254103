"""``routewise migrate``: an SQLite store copied into PostgreSQL gives a read-only controller
the same learned state (exact floats) and the same trace, and the read-only CLI commands work
on a ``postgresql://`` URL."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

import routewise as rw
from routewise.cli import app
from routewise.errors import StateError
from routewise.state.pgmigrate import migrate_sqlite_to_postgres
from routewise.state.postgres import PostgresStore

ARMS = ["a:fast/direct_emit", "b:slow/direct_emit", "c:cheap/transport_compressed"]
CONTEXTS = [
    {"task": "extraction", "n_fields": 3},
    {"task": "qa", "n_fields": 12},
    {"task": "classification", "n_fields": 1},
    {},
]


def _traffic(ctl: rw.Controller, rng: np.random.Generator, n: int) -> None:
    quality = {"a:fast": 0.9, "b:slow": 0.7, "c:cheap": 0.5}
    for i in range(n):
        d = ctl.decide(CONTEXTS[i % 3] | {"n_fields": int(rng.integers(1, 20))})
        backend = d.arm.id.split("/")[0]
        ctl.feedback(
            d.decision_id,
            rw.Outcome(
                valid=bool(rng.random() < quality[backend]),
                latency_ms=float(rng.gamma(4.0, 100.0)),
                cost_usd=float(rng.random() / 1000),
            ),
        )


@pytest.fixture()
def sqlite_store(tmp_path: Path) -> Path:
    """An SQLite store with traffic, an operator pin and release, a snapshot, more traffic
    after it, and a few decisions still waiting for feedback."""
    db = tmp_path / "routewise.db"
    rng = np.random.default_rng(7)
    with rw.Controller(arms=ARMS, store=db, seed=11) as ctl:
        _traffic(ctl, rng, 250)
        ctl.pin(ARMS[1])
        _traffic(ctl, rng, 20)
        ctl.release(ARMS[1])
        ctl.snapshot()
        _traffic(ctl, rng, 150)
        for ctx in CONTEXTS:
            ctl.decide(ctx)  # pending
    # drop the snapshot close() took: a restore replays the log after ctl.snapshot()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM snapshots WHERE seq = (SELECT max(seq) FROM snapshots)")
        assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (1,)
    return db


def _migrate(runner: CliRunner, src: Path, url: str) -> str:
    res = runner.invoke(app, ["migrate", "--from", str(src), "--to", url])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_migrated_store_restores_the_same_policy_and_trace(
    sqlite_store: Path, pg_url: str, tmp_path: Path
) -> None:
    out = _migrate(CliRunner(), sqlite_store, pg_url)
    assert "verified" in out and "424" in out  # 424 decisions
    lite = rw.Controller(store=sqlite_store, read_only=True)
    pg = rw.Controller(store=pg_url, read_only=True)
    try:
        for ctx in CONTEXTS:
            expected = [r.to_dict() for r in lite.best_policy(ctx)]
            assert [r.to_dict() for r in pg.best_policy(ctx)] == expected  # exact floats
        assert [r.to_dict() for r in pg.best_policy()] == [r.to_dict() for r in lite.best_policy()]
        assert pg.status().to_dict() == lite.status().to_dict()
        assert pg.health() == lite.health()
        assert [e.to_dict() for e in pg.events()] == [e.to_dict() for e in lite.events()]
        assert lite.export_trace(tmp_path / "lite.jsonl") == 424
        assert pg.export_trace(tmp_path / "pg.jsonl") == 424
        assert (tmp_path / "pg.jsonl").read_bytes() == (tmp_path / "lite.jsonl").read_bytes()
    finally:
        lite.close()
        pg.close()
    store = PostgresStore(pg_url, read_only=True)
    try:
        n = len(list(store.events_since(0)))
        assert store.max_seq() == n  # seqs kept: the log continues after the last one
        assert store.load_meta() is not None
        snap = store.latest_snapshot()
        assert snap is not None and 0 < snap[0] < n - 300  # 150 pairs to replay after it
    finally:
        store.close()


def test_read_only_cli_commands_accept_a_postgresql_url(sqlite_store: Path, pg_url: str) -> None:
    runner = CliRunner()
    _migrate(runner, sqlite_store, pg_url)
    ctx = json.dumps(CONTEXTS[0])
    for args in (
        ["policy", "--json", "--context", ctx],
        ["status", "--json"],
        ["events", "--json"],
        ["health", "--json"],
    ):
        on_pg = runner.invoke(app, [*args, "--db", pg_url])
        on_lite = runner.invoke(app, [*args, "--db", str(sqlite_store)])
        assert on_pg.exit_code == 0, on_pg.output
        assert json.loads(on_pg.stdout) == json.loads(on_lite.stdout)
    res = runner.invoke(app, ["export-trace", "-", "--db", pg_url])
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 424


def test_migrate_refuses_a_non_empty_target_and_a_bad_source(
    sqlite_store: Path, pg_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    _migrate(runner, sqlite_store, pg_url)
    again = runner.invoke(app, ["migrate", "--from", str(sqlite_store), "--to", pg_url])
    assert again.exit_code == 1 and "is not empty" in again.output
    assert "424 in rw_decisions" in again.output
    missing = runner.invoke(app, ["migrate", "--from", str(tmp_path / "no.db"), "--to", pg_url])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    corrupt = runner.invoke(app, ["migrate", "--from", str(junk), "--to", pg_url])
    assert corrupt.exit_code == 3 and "not a routewise store" in corrupt.output
    not_url = runner.invoke(app, ["migrate", "--from", str(sqlite_store), "--to", "x.db"])
    assert not_url.exit_code == 1 and "--to: expected a postgresql://" in not_url.output
    for res in (again, missing, corrupt, not_url):
        assert "Traceback" not in res.output


def test_migrate_refuses_a_source_a_sidecar_is_writing(sqlite_store: Path, pg_url: str) -> None:
    with rw.Controller(store=sqlite_store), pytest.raises(StateError, match="is in use"):
        migrate_sqlite_to_postgres(sqlite_store, pg_url)  # the controller holds the lock
    with psycopg.connect(pg_url) as conn:  # nothing copied
        assert conn.execute("SELECT to_regclass('rw_decisions')").fetchone() == (None,)


def test_migrate_masks_the_password_and_reports_progress(sqlite_store: Path, pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    seen: list[tuple[int, int]] = []
    report = migrate_sqlite_to_postgres(
        sqlite_store, url, progress=lambda s, t: seen.append((s, t)), chunk=100
    )
    assert "hunter2" not in report.target and "***" in report.target
    assert (report.decisions, report.snapshots, report.meta) == (424, 1, True)
    assert report.feedback == 420 and report.events == 2
    assert report.max_seq == report.decisions + report.feedback + report.events
    assert len(seen) > 5 and seen[-1][0] == seen[-1][1] == report.max_seq
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
