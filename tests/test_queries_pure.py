"""Queries are pure (DESIGN.md): ``health``, ``status``, ``best_policy``, ``events``,
``experiments``, ``experiment_status`` and ``transition_counts`` write nothing to the store and
change nothing in memory — not even when a quarantine's cooldown has run out, which only the
write path or an explicit ``Controller.tick()`` records."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

import routewise as rw

ARMS = ["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit", "gemini:flash/direct_emit"]
BAD = ARMS[1]
CONTEXT = {"task": "qa", "n_fields": 4.0}


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def dump(db: Path) -> list[str]:
    """Every table's rows (a logical dump through a second connection) and the acklog bytes."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        lines = list(conn.iterdump())
    finally:
        conn.close()
    ack = Path(str(db) + ".acklog")
    if ack.exists():
        lines.append(ack.read_bytes().hex())
    return lines


def memory(ctl: rw.Controller) -> dict[str, Any]:
    assert ctl.guardian is not None
    return {
        "guardian": ctl.guardian.to_state(),
        "policy": ctl.policy.to_state(),
        "featurizer": ctl.featurizer.to_state(),
        "transitions": ctl.transition_counts(),
        "max_seq": ctl.store.max_seq(),
    }


def quarantined_controller(db: Path, clock: Clock) -> rw.Controller:
    """Some traffic, then an error burst that quarantines ``BAD``, then time past its cooldown."""
    ctl = rw.Controller(
        arms=ARMS,
        store=db,
        seed=0,
        clock=clock,
        log_events=False,
        guardian=rw.Guardian(min_samples=20, cooldown_s=5.0),
    )
    rng = np.random.default_rng(0)
    for _ in range(60):
        clock.t += 0.1
        d = ctl.decide(CONTEXT)
        ok = bool(rng.random() < 0.9)
        ctl.feedback(d.decision_id, rw.Outcome(valid=ok, latency_ms=300.0, cost_usd=0.001))
    for _ in range(10):
        clock.t += 0.1
        d = ctl.decide(CONTEXT, arms=[BAD])
        bad = rw.Outcome(valid=False, latency_ms=50.0, cost_usd=0.0, error="timeout")
        ctl.feedback(d.decision_id, bad)
    assert ctl.guardian is not None and ctl.guardian.state(BAD) == "quarantined"
    clock.t += 60.0  # the cooldown is over: the next tick moves BAD to probing
    return ctl


def test_queries_write_nothing_and_change_nothing(tmp_path: Path) -> None:
    db = tmp_path / "pure.db"
    clock = Clock()
    ctl = quarantined_controller(db, clock)
    ctl.store.flush()
    before, state = dump(db), memory(ctl)
    events = ctl.events()
    assert ctl.health()[BAD] == "probing"  # reported as of now …
    for _ in range(100):
        ctl.health()
        ctl.status()
        ctl.best_policy()
        ctl.best_policy(CONTEXT)
        ctl.events()
        ctl.transition_counts()
    assert dump(db) == before  # … but nothing recorded
    ctl.store.flush()
    assert dump(db) == before
    assert memory(ctl) == state
    assert ctl.events() == events
    assert ctl.guardian is not None and ctl.guardian.state(BAD) == "quarantined"
    assert ctl.status().arms[BAD].get("health") == "probing"

    recorded = ctl.tick()  # the explicit write path records the transition
    assert [(e.arm, e.from_state, e.to_state, e.reason) for e in recorded] == [
        (BAD, "quarantined", "probing", "cooldown_elapsed")
    ]
    assert ctl.events()[-1] == recorded[0]
    assert ctl.guardian.state(BAD) == "probing"
    counts = ctl.transition_counts()
    assert counts[(BAD, "probing", "guardian")] == 1
    assert counts == state["transitions"] | {(BAD, "probing", "guardian"): 1}
    assert ctl.tick() == []  # nothing left to move
    ctl.close()


def test_transition_counts_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "counts.db"
    clock = Clock()
    ctl = quarantined_controller(db, clock)
    ctl.tick()
    ctl.pin(ARMS[0])
    counts = ctl.transition_counts()
    expected: dict[tuple[str, str, str], int] = {}
    for e in ctl.events():
        key = (e.arm, e.to_state, e.source)
        expected[key] = expected.get(key, 0) + 1
    assert counts == expected and (ARMS[0], "pinned", "operator") in counts
    guardian_state = ctl.guardian.to_state() if ctl.guardian is not None else None
    ctl.close()
    again = rw.Controller(store=db, clock=clock, log_events=False, guardian=rw.Guardian())
    assert again.transition_counts() == counts
    assert again.guardian is not None and again.guardian.to_state() == guardian_state
    again.close()
    reader = rw.Controller(store=db, clock=clock, read_only=True, log_events=False)
    assert reader.transition_counts() == counts
    reader.close()


def test_experiment_queries_are_pure(tmp_path: Path) -> None:
    db = tmp_path / "exp.db"
    clock = Clock()
    ctl = rw.Controller(arms=ARMS, store=db, seed=1, clock=clock, log_events=False)
    ctl.create_experiment("ab", {"control": {}, "candidate": {"policy": "linucb"}})
    ctl.start_experiment("ab")
    for i in range(200):
        clock.t += 0.1
        d = ctl.decide(CONTEXT, unit_id=f"user-{i % 40}")
        ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=200.0, cost_usd=0.001))
    ctl.store.flush()
    before = dump(db)
    report = ctl.experiment_status("ab").to_dict()
    specs = ctl.experiments()
    for _ in range(50):
        assert ctl.experiment_status("ab").to_dict() == report
        assert ctl.experiments() == specs
    ctl.store.flush()
    assert dump(db) == before
    ctl.close()


def test_a_recorded_tick_is_replayed_on_restore(tmp_path: Path) -> None:
    """A transition made by ``tick()`` (not by a decision) is in the log, so a restart that
    replays the log moves the arm to probing at the same time: an outcome that arrives
    while it probes counts as a probe in the replay too."""
    db = tmp_path / "replay.db"
    clock = Clock()
    ctl = rw.Controller(
        arms=ARMS,
        store=db,
        seed=0,
        clock=clock,
        log_events=False,
        snapshot_every=1_000_000,
        guardian=rw.Guardian(min_samples=20, cooldown_s=5.0),
    )
    late = ctl.decide(CONTEXT, arms=[BAD])  # its outcome arrives after the tick
    for _ in range(10):
        clock.t += 0.1
        d = ctl.decide(CONTEXT, arms=[BAD])
        bad = rw.Outcome(valid=False, latency_ms=50.0, cost_usd=0.0, error="timeout")
        ctl.feedback(d.decision_id, bad)
    assert ctl.guardian is not None and ctl.guardian.state(BAD) == "quarantined"
    clock.t += 60.0
    assert [e.to_state for e in ctl.tick()] == ["probing"]
    ctl.feedback(late.decision_id, rw.Outcome(valid=True, latency_ms=50.0, cost_usd=0.0))
    ctl.store.flush()
    live = ctl.guardian.to_state()
    reader = rw.Controller(
        store=db,
        clock=clock,
        read_only=True,
        log_events=False,
        guardian=rw.Guardian(min_samples=20, cooldown_s=5.0),
    )
    assert reader.guardian is not None and reader.guardian.to_state() == live
    assert reader.transition_counts() == ctl.transition_counts()
    reader.close()
    ctl.close()
