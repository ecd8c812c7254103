"""Replicas on one PostgreSQL store learn as one (in-process: several Controllers, each with its
own PostgresStore, on one real database). The subprocess test with three sidecars, kill -9 and
a PostgreSQL restart is tests/test_replicas_subprocess.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import routewise as rw
from routewise.state.postgres import PostgresStore

ARMS = [
    "openai:gpt-5.4/direct_emit",
    "openai:gpt-5.4/local_reconstructed",
    "ollama:llama3/direct_emit",
]
CONTEXTS = [
    {"task": t, "schema_depth": d, "input_tokens": n}
    for t in ("extraction", "classification")
    for d in (1, 3)
    for n in (200, 2000)
]
REL_TOL = 1e-9  # replicas that applied the same log: same updates, same order (replica.py)


def _outcome(arm: str, ctx: dict[str, object], rng: np.random.Generator) -> rw.Outcome:
    good = {"openai:gpt-5.4/direct_emit": 0.9, "openai:gpt-5.4/local_reconstructed": 0.6}
    p = good.get(arm, 0.3) - (0.2 if ctx.get("schema_depth") == 3 and "llama" in arm else 0.0)
    return rw.Outcome(
        valid=bool(rng.random() < p), latency_ms=float(rng.uniform(200, 900)), cost_usd=0.0
    )


@pytest.fixture()
def replicas(pg_url: str) -> Iterator[Callable[..., rw.Controller]]:
    opened: list[rw.Controller] = []

    def open_replica(**kw: object) -> rw.Controller:
        kw.setdefault("seed", 3)
        kw.setdefault("log_events", False)
        ctl = rw.Controller(arms=ARMS, store=PostgresStore(pg_url), **kw)  # type: ignore[arg-type]
        opened.append(ctl)
        return ctl

    yield open_replica
    for ctl in opened:
        ctl.close()
        ctl.store.close()


def _settle(*ctls: rw.Controller, timeout: float = 10.0) -> None:
    """Wait until every replica applied the whole log (their followers run on their own)."""
    deadline = time.monotonic() + timeout
    head = max(c.store.max_seq() for c in ctls)  # the counter (dropped duplicates included)
    while time.monotonic() < deadline:
        if all((c.replication() or {})["applied_seq"] >= head for c in ctls):
            return
        time.sleep(0.01)
    raise AssertionError(f"replicas did not catch up to {head}: {[c.replication() for c in ctls]}")


def _scores(ctl: rw.Controller) -> list[tuple[str, float, float]]:
    return [
        (r.arm.id, r.expected_reward, r.uncertainty) for c in CONTEXTS for r in ctl.best_policy(c)
    ]


def _assert_same_policy(a: rw.Controller, b: rw.Controller) -> None:
    for (arm_a, m_a, u_a), (arm_b, m_b, u_b) in zip(_scores(a), _scores(b), strict=True):
        assert arm_a == arm_b
        assert m_a == pytest.approx(m_b, rel=REL_TOL, abs=1e-12)
        assert u_a == pytest.approx(u_b, rel=REL_TOL, abs=1e-12)


def test_feedback_on_another_replica_is_learned_once_by_all(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b, c = replicas(), replicas(), replicas()
    rng = np.random.default_rng(0)
    members = [a, b, c]
    for i in range(300):
        ctx = CONTEXTS[i % len(CONTEXTS)]
        d = members[i % 3].decide(ctx)
        r = members[(i + 1) % 3].feedback(d.decision_id, _outcome(d.arm.id, ctx, rng))
        assert not r.duplicate
    _settle(a, b, c)
    for ctl in members:
        st = ctl.status()
        assert (st.decisions, st.feedbacks, st.pending) == (300, 300, 0)
    _assert_same_policy(a, b)
    _assert_same_policy(a, c)
    # the policy learned something: the strong arm leads for an easy context
    assert a.best_policy(CONTEXTS[0])[0].arm.id == "openai:gpt-5.4/direct_emit"
    lines = []
    import io

    buf = io.StringIO()
    a.export_trace(buf)
    lines = [line for line in buf.getvalue().splitlines() if line]
    assert len(lines) == 300 and all('"reward"' in line for line in lines)


def test_a_repeated_feedback_is_a_duplicate_everywhere(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b = replicas(), replicas()
    d = a.decide(CONTEXTS[0])
    first = b.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=300.0, cost_usd=0.0))
    _settle(a, b)
    again = a.feedback(d.decision_id, rw.Outcome(valid=False, latency_ms=9000.0, cost_usd=0.0))
    assert again.duplicate and again.reward == first.reward
    assert a.status().feedbacks == b.status().feedbacks == 1


def test_concurrent_feedback_for_one_decision_is_learned_once(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b = replicas(), replicas()
    d = a.decide(CONTEXTS[1])
    # both replicas accept a feedback before either sees the other's: the database keeps one
    first = a.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=300.0, cost_usd=0.0))
    second = b.feedback(d.decision_id, rw.Outcome(valid=False, latency_ms=300.0, cost_usd=0.0))
    # b had not applied a's feedback yet: the database dropped b's, and b's answer says so
    assert not first.duplicate and second.duplicate and second.reward == first.reward
    _settle(a, b)
    assert a.status().feedbacks == b.status().feedbacks == 1
    _assert_same_policy(a, b)


def test_operator_quarantine_reaches_the_other_replicas_within_a_second(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b, c = replicas(), replicas(), replicas()
    target = ARMS[0]
    start = time.monotonic()
    a.quarantine(target)
    while not (b.health()[target] == c.health()[target] == "quarantined"):
        assert time.monotonic() - start < 1.0, "quarantine did not reach the replicas in 1 s"
        time.sleep(0.005)
    for _ in range(50):
        assert b.decide(CONTEXTS[0]).arm.id != target
        assert c.decide(CONTEXTS[2]).arm.id != target
    b.release(target)
    _settle(a, b, c)
    assert a.health()[target] == c.health()[target] == "healthy"
    # every transition is in the shared log once, and counted once on every replica
    reasons = [(e.arm, e.reason) for e in a.events()]
    assert reasons == [(target, "operator_quarantine"), (target, "operator_release")]
    assert a.transition_counts() == b.transition_counts() == c.transition_counts()


def test_a_guardian_trip_is_shared_and_recorded_once(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b = replicas(), replicas()
    bad = ARMS[2]
    rng = np.random.default_rng(1)
    tripped = False
    for i in range(3000):
        ctx = CONTEXTS[i % len(CONTEXTS)]
        d = (a, b)[i % 2].decide(ctx, arms=[bad] if i % 3 == 0 else None)
        late = i > 1200 and d.arm.id == bad
        outcome = rw.Outcome(
            cost_usd=0.0,
            valid=not late,
            latency_ms=float(rng.uniform(200, 300)),
            error="timeout" if late else None,
        )
        (b, a)[i % 2].feedback(d.decision_id, outcome)
        if i % 100 == 0:
            _settle(a, b)
            if a.health()[bad] != "healthy" and b.health()[bad] != "healthy":
                tripped = True
                break
    assert tripped, "the Guardian never quarantined the failing arm"
    _settle(a, b)
    quarantines = [e for e in a.events() if e.arm == bad and e.to_state == "quarantined"]
    assert len(quarantines) == 1, a.events()
    assert a.transition_counts() == b.transition_counts()


def test_experiments_are_the_same_on_every_replica(replicas: Callable[..., rw.Controller]) -> None:
    a, b = replicas(), replicas()
    a.create_experiment("ab", {"control": {"policy": "squarecb"}, "cand": {"policy": "linucb"}})
    a.start_experiment("ab")
    _settle(a, b)
    assert [(s.name, s.status) for s in b.experiments()] == [("ab", "running")]
    assert b.experiments()[0].started_ts == a.experiments()[0].started_ts
    units = [f"user-{i}" for i in range(40)]
    va = [a.decide(CONTEXTS[0], unit_id=u).variant for u in units]
    vb = [b.decide(CONTEXTS[0], unit_id=u).variant for u in units]
    assert va == vb and set(va) == {"control", "cand"}  # sticky assignment is identical
    b.stop_experiment("ab")
    _settle(a, b)
    assert a.experiments()[0].status == "stopped"


def test_a_restarted_replica_catches_up_from_the_snapshot_and_the_log(
    replicas: Callable[..., rw.Controller],
) -> None:
    a, b = replicas(snapshot_every=100), replicas(snapshot_every=100)
    rng = np.random.default_rng(2)
    for i in range(450):
        ctx = CONTEXTS[i % len(CONTEXTS)]
        d = a.decide(ctx)
        b.feedback(d.decision_id, _outcome(d.arm.id, ctx, rng))
    _settle(a, b)
    assert a.store.latest_snapshot() is not None  # the leader took snapshots
    c = replicas(snapshot_every=100)  # starts from the latest snapshot + the log after it
    _settle(a, b, c)
    assert c.status().feedbacks == 450
    _assert_same_policy(a, c)
    _assert_same_policy(b, c)
