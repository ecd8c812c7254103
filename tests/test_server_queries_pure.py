"""Every GET of the sidecar is pure (issue 12): with the sidecar quiescent, 100 calls each of
``GET /v1/arms``, ``/v1/health``, ``/v1/policy`` (with and without a context), ``/v1/events``
and ``/metrics`` — and of ``ctl.health()``, ``ctl.status()``, ``ctl.best_policy()`` — leave the
store's tables (and its acklog) byte-identical and the learned state unchanged, even while a
quarantine's cooldown has run out (which only the write path or ``tick()`` records)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from test_queries_pure import BAD, CONTEXT, Clock, dump, memory, quarantined_controller

from routewise.server import create_app
from routewise.state.sqlite import SQLiteStore

GETS = [
    "/v1/arms",
    "/v1/health",
    "/v1/policy",
    "/v1/policy?context=" + json.dumps(CONTEXT),
    "/v1/events",
    "/metrics",
]


async def _get_all(app: object, rounds: int) -> list[str]:
    transport = httpx.ASGITransport(app)  # type: ignore[arg-type]
    bodies: list[str] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://rw") as client:
        for _ in range(rounds):
            for path in GETS:
                r = await client.get(path, headers={"Authorization": "Bearer t"})
                assert r.status_code == 200, (path, r.text)
                bodies.append(r.text)
    return bodies


def test_sidecar_gets_and_library_queries_write_nothing(tmp_path: Path) -> None:
    db = tmp_path / "pure.db"
    clock = Clock()
    ctl = quarantined_controller(db, clock)
    try:
        app = create_app(ctl, token="t", registry=CollectorRegistry())
        ctl.store.flush()
        before, state = dump(db), memory(ctl)
        with capture_logs():
            bodies = asyncio.run(_get_all(app, 100))
        for _ in range(100):
            assert ctl.health()[BAD] == "probing"  # as of now, without recording it
            ctl.status()
            ctl.best_policy()
            ctl.best_policy(CONTEXT)
        assert dump(db) == before
        assert memory(ctl) == state
        health = json.loads(bodies[1])
        assert health["arms"][BAD] == "probing"
        # the quarantine's end is recorded by the write path, not by the reads above
        assert [e.to_state for e in ctl.tick()] == ["probing"]
        assert dump(db) != before
    finally:
        ctl.close()


def test_events_are_read_without_committing_buffered_rows(tmp_path: Path) -> None:
    """``GET /v1/events`` used to flush the store's buffered decisions into the tables."""
    db = tmp_path / "buffered.db"
    clock = Clock()
    # no background commits during the test: only a read that flushes could change the tables
    store = SQLiteStore(db, checkpoint_interval_s=3600.0)
    ctl = quarantined_controller(store, clock)  # type: ignore[arg-type]
    try:
        ctl.decide(CONTEXT)  # buffered (acknowledged through the acklog), not yet in the tables
        before = dump(db)
        assert any(e.to_state == "quarantined" for e in ctl.events())
        assert dump(db) == before
    finally:
        ctl.close()
        store.close()
