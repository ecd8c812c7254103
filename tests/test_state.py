"""Persistence: restart restores the policy exactly; durability; store round-trips."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import routewise as rw
from routewise.state import DecisionRecord, FeedbackRecord, MemoryStore, SQLiteStore

ARMS = rw.make_arms(["openai:gpt-5.4", "gemini:flash", "ollama:llama3", "bedrock:claude"])
PROBES = [
    {
        "task": "extraction",
        "schema_depth": 3,
        "n_fields": 12,
        "input_tokens": 900,
        "language": "zh",
    },
    {"task": "qa", "schema_depth": 1, "n_fields": 2, "input_tokens": 80, "language": "en"},
    {"task": "classification", "language": "de"},
    {},
]


def traffic(ctl: rw.Controller, n: int, seed: int = 0, feedback_share: float = 0.9) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n):
        ctx = {
            "task": str(rng.choice(["extraction", "qa", "classification"])),
            "schema_depth": int(rng.integers(1, 6)),
            "n_fields": int(rng.integers(1, 40)),
            "input_tokens": float(rng.integers(50, 5000)),
            "language": str(rng.choice(["en", "zh", "de", "ja"])),
        }
        d = ctl.decide(ctx)
        ids.append(d.decision_id)
        if rng.random() < feedback_share:
            valid = bool(rng.random() < (0.9 if "gemini" in d.arm.backend else 0.6))
            ctl.feedback(
                d.decision_id,
                rw.Outcome(valid=valid, latency_ms=float(rng.gamma(4, 200)), cost_usd=0.0003),
            )
    return ids


def scores(ctl: rw.Controller) -> list[tuple[str, float, float]]:
    out = []
    for ctx in [*PROBES, None]:
        out += [(r.arm.id, r.expected_reward, r.uncertainty) for r in ctl.best_policy(ctx)]
    return out


@pytest.mark.parametrize("policy", ["squarecb", "linucb", "lints", "thompson", "ucb1"])
@pytest.mark.parametrize("snapshot_every", [7, 100_000])
def test_reopen_restores_policy_exactly(tmp_path: Path, policy: str, snapshot_every: int) -> None:
    db = tmp_path / "state.db"
    ctl = rw.Controller(arms=ARMS, policy=policy, store=db, seed=3, snapshot_every=snapshot_every)
    traffic(ctl, 400)
    before = scores(ctl)
    status_before = ctl.status().to_dict()
    ctl.close()

    again = rw.Controller(store=db)  # arms, policy, seed come from the store
    assert again.policy.name == policy
    assert scores(again) == before  # bit-identical
    assert again.status().to_dict() == status_before
    again.close()


def test_restart_without_close_keeps_every_acknowledged_feedback(tmp_path: Path) -> None:
    """kill -9 of a real process: every feedback acknowledged before the kill is in the store,
    and reopening gives exactly the policy the process had at its last acknowledged feedback."""
    db = tmp_path / "state.db"
    out = tmp_path / "acked.jsonl"
    script = textwrap.dedent(
        f"""
        import json, sys
        import routewise as rw
        ctl = rw.Controller(arms={[a.id for a in ARMS]!r}, policy="linucb", store={str(db)!r}, seed=1,
                            snapshot_every=50)
        probe = {{"task": "qa", "n_fields": 3, "language": "en"}}
        with open({str(out)!r}, "a", buffering=1) as fh:
            for i in range(100000):
                d = ctl.decide({{"task": ["qa", "extraction"][i % 2], "n_fields": i % 9, "language": "en"}})
                r = ctl.feedback(d.decision_id, rw.Outcome(valid=i % 3 != 0, latency_ms=100.0 + i % 50, cost_usd=0.0))
                ranked = [[x.arm.id, x.expected_reward, x.uncertainty] for x in ctl.best_policy(probe)]
                fh.write(json.dumps({{"id": d.decision_id, "reward": r.reward, "ranked": ranked}}) + "\\n")
                if i == 300:
                    print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    acked = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert len(acked) > 300
    # Before any writer reopens it, a read-only store already sees every acknowledged
    # feedback: those the process had not yet copied to the tables are in the acklog.
    ro = SQLiteStore(db, read_only=True)
    for a in acked:
        prior = ro.get_feedback(a["id"])
        assert prior is not None and prior.reward == a["reward"]
    ro.close()
    ctl = rw.Controller(store=db)  # a writer copies the acklog rows into the tables
    conn = sqlite3.connect(db)
    stored = dict(conn.execute("SELECT decision_id, reward FROM feedback").fetchall())
    conn.close()
    for a in acked:
        assert stored[a["id"]] == a["reward"]
    assert Path(str(db) + ".acklog").stat().st_size == 0
    last = acked[-1]
    assert len(stored) in (len(acked), len(acked) + 1)  # +1: killed between commit and ack line
    if len(stored) == len(acked):
        ranked = [
            [x.arm.id, x.expected_reward, x.uncertainty]
            for x in ctl.best_policy({"task": "qa", "n_fields": 3, "language": "en"})
        ]
        assert ranked == last["ranked"]
    assert ctl.status().feedbacks == len(stored)
    ctl.close()


@pytest.mark.parametrize(("durability", "feedback_every"), [("feedback", 0), ("batch", 3)])
def test_restart_without_close_keeps_every_synced_record(
    tmp_path: Path, durability: str, feedback_every: int
) -> None:
    """kill -9 of a real process that calls ``store.sync()`` every 4 decisions (decide-only
    with the default durability; decide + some feedback with ``"batch"``): every record
    logged before a returned ``sync()`` is in the store, and the stored sequence has no hole."""
    db = tmp_path / "state.db"
    out = tmp_path / "acked.jsonl"
    script = textwrap.dedent(
        f"""
        import json
        import routewise as rw
        ctl = rw.Controller(arms={[a.id for a in ARMS]!r}, store={str(db)!r}, seed=1,
                            durability={durability!r}, snapshot_every=50)
        pending = []
        with open({str(out)!r}, "a", buffering=1) as fh:
            for i in range(100000):
                d = ctl.decide({{"task": ["qa", "extraction"][i % 2], "n_fields": i % 9}})
                acked = {{"id": d.decision_id}}
                if {feedback_every} and i % {feedback_every or 1} == 0:
                    r = ctl.feedback(d.decision_id, rw.Outcome(valid=i % 2 == 0, latency_ms=10.0, cost_usd=0.0))
                    acked["reward"] = r.reward
                pending.append(acked)
                if i % 4 == 3:
                    ctl.store.sync()
                    fh.write("".join(json.dumps(a) + "\\n" for a in pending))
                    pending = []
                if i == 300:
                    print("ready", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    acked = [json.loads(line) for line in out.read_text().splitlines() if line.endswith("}")]
    assert len(acked) >= 300
    with_feedback = [a for a in acked if "reward" in a]
    assert bool(with_feedback) == bool(feedback_every)
    ro = SQLiteStore(db, read_only=True)  # sees the acklog rows before any writer reopens
    for a in acked:
        assert ro.get_decision(a["id"]) is not None
    for a in with_feedback:
        prior = ro.get_feedback(a["id"])
        assert prior is not None and prior.reward == a["reward"]
    ro.close()
    rw.Controller(store=db).close()  # a writer copies the acklog rows into the tables
    conn = sqlite3.connect(db)
    decided = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
    rewards = dict(conn.execute("SELECT decision_id, reward FROM feedback").fetchall())
    seqs = sorted(
        r[0]
        for r in conn.execute(
            "SELECT seq FROM decisions UNION ALL SELECT seq FROM feedback "
            "UNION ALL SELECT seq FROM events"
        )
    )
    conn.close()
    assert {a["id"] for a in acked} <= decided
    assert {a["id"]: a["reward"] for a in with_feedback}.items() <= rewards.items()
    assert seqs == list(range(1, len(seqs) + 1))  # lost records are a suffix, never a hole
    assert not Path(str(db) + ".acklog").exists()  # emptied, then removed by a clean close


def _decision(i: int) -> DecisionRecord:
    return DecisionRecord(f"d{i}", i, float(i), {"n": i}, "a:m/direct_emit", 0.5, [1.0], "x")


@pytest.mark.parametrize("durability", ["feedback", "batch"])
def test_sync_appends_what_is_not_durable_yet_and_the_acklog_stays_bounded(
    tmp_path: Path, durability: str
) -> None:
    """One acklog line per ``sync()`` with the records logged since the last line (none when
    there are none); every table commit empties the acklog, so it never holds more than a
    batch. The background thread never runs here: the bound does not depend on it."""
    db = tmp_path / "s.db"
    acklog = Path(str(db) + ".acklog")
    store = SQLiteStore(
        db,
        durability=durability,  # type: ignore[arg-type]
        batch_size=40,
        checkpoint_interval_s=3600,
    )
    biggest = 0
    for i in range(1, 1001):
        store.log_decision(_decision(i))
        if i % 5 == 2:  # with "feedback", a line of its own (and of the decisions before it)
            store.log_feedback(FeedbackRecord(f"d{i}", i + 10**6, float(i), None, 0.5))
        if i % 5 == 0:
            lines = acklog.read_bytes().count(b"\n") if acklog.exists() else 0
            store.sync()
            assert acklog.read_bytes().count(b"\n") in (lines + 1, 0)  # 0: batch committed
            size = acklog.stat().st_size
            store.sync()  # nothing new: nothing written
            assert acklog.stat().st_size == size
            biggest = max(biggest, size)
    assert 0 < biggest < 40 * 400  # at most a batch of rows (~200 bytes each)
    store.close()
    assert not acklog.exists()


def test_sync_is_a_no_op_when_every_record_is_durable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", durability="always")
    store.log_decision(_decision(1))
    store.sync()
    assert not Path(str(tmp_path / "s.db") + ".acklog").exists()
    store.close()
    mem = MemoryStore()
    mem.log_decision(_decision(1))
    mem.sync()
    assert mem.get_decision("d1") == _decision(1)
    in_memory = SQLiteStore(":memory:", durability="batch")  # nothing to make durable
    in_memory.log_decision(_decision(1))
    in_memory.sync()
    assert in_memory.get_decision("d1") == _decision(1)
    in_memory.close()


def test_acklog_recovery_of_decision_only_and_event_only_lines(tmp_path: Path) -> None:
    """A ``sync()`` of decisions without feedback writes a decision-only line; a line may also
    hold only events. A read-only store reads both, a writer copies both into the tables."""
    from routewise.state.acklog import ack_line
    from routewise.state.base import EventRecord
    from routewise.state.schema import event_row

    db = tmp_path / "live.db"
    store = SQLiteStore(db, batch_size=10**6, checkpoint_interval_s=3600)
    for i in (1, 2, 3):
        store.log_decision(_decision(i))
    store.sync()
    crashed = tmp_path / "crashed.db"
    _crash_image(db, crashed)
    store.close()
    event = EventRecord(4, {"ts": 4.0, "arm": "a:m/direct_emit", "from": "healthy", "to": "x"})
    with Path(str(crashed) + ".acklog").open("ab") as fh:
        fh.write(b"\n" + ack_line([], [], [event_row(event)]))

    ro = SQLiteStore(crashed, read_only=True)
    assert [ro.get_decision(f"d{i}") for i in (1, 2, 3)] == [_decision(i) for i in (1, 2, 3)]
    assert ro.list_events() == [event] and ro.list_events(limit=0) == []
    assert list(ro.events_since(1)) == [
        ("decision", _decision(2)),
        ("decision", _decision(3)),
        ("event", event),
    ]
    assert ro.max_seq() == 4
    ro.close()
    again = SQLiteStore(crashed)
    assert again.list_events() == [event]
    assert [k for k, _ in again.events_since(0)] == ["decision"] * 3 + ["event"]
    again.close()


def test_acklog_lines_of_the_first_format_are_still_read() -> None:
    """A crash image left by a writer of the previous version (one feedback per line, no
    events) recovers like a current one."""
    import zlib

    from routewise.state.acklog import parse_acklog

    payload = b'[[["d1",1,0.5,"a:m/direct_emit",1.0,"x",{"n":1},"AAAAAAAA8D8=",null,null,null]],["d1",2,0.75,{"valid":true},0.25,0]]'
    rows = parse_acklog(b"\n%08x %b" % (zlib.crc32(payload), payload))
    one = np.float64(1.0).tobytes()
    assert rows.decisions == [
        ("d1", 1, 0.5, "a:m/direct_emit", 1.0, "x", '{"n":1}', one, None, None, None)
    ]
    assert rows.feedback == [("d1", 2, 0.75, '{"valid":true}', 0.25, 0)]
    assert (rows.events, rows.bad) == ([], 0)


def test_feedback_after_restart_for_decision_before_it(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    ctl = rw.Controller(arms=ARMS, store=db, seed=0, durability="always", snapshot_every=1)
    d = ctl.decide({"task": "qa"})
    d2 = ctl.decide({"task": "qa"})
    ctl.feedback(
        d2.decision_id, rw.Outcome(valid=True, latency_ms=1.0, cost_usd=0.0)
    )  # snapshot after d
    ctl.close()
    again = rw.Controller(store=db)
    r = again.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=1.0, cost_usd=0.0))
    assert not r.duplicate and r.arm == d.arm
    assert again.feedback(
        d2.decision_id, rw.Outcome(valid=False, latency_ms=1.0, cost_usd=0.0)
    ).duplicate
    again.close()


def test_reopen_with_other_policy_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rw.Controller(arms=ARMS, policy="linucb", store=db, seed=0).close()
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller(store=db, policy="squarecb")
    assert ei.value.field == "policy"


def test_reopen_with_new_arm(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    ctl = rw.Controller(arms=ARMS, store=db, seed=0)
    traffic(ctl, 50)
    ctl.close()
    new = [*ARMS, rw.Arm("azure_openai:gpt-4o", "direct_emit")]
    ctl = rw.Controller(arms=new, store=db)
    assert {a.id for a in ctl.arms} == {a.id for a in new}
    d = ctl.decide({}, arms=["azure_openai:gpt-4o/direct_emit"])
    assert d.arm.backend == "azure_openai:gpt-4o"
    ctl.close()


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller(arms=ARMS, store=tmp_path / "nope" / "s.db")
    assert ei.value.field == "store"


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_text("this is not sqlite" * 100)
    with pytest.raises(rw.StateError):
        rw.Controller(arms=ARMS, store=bad)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    context=st.dictionaries(st.text(min_size=1, max_size=10), json_scalars, max_size=6),
    features=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=30
    ),
    propensity=st.floats(min_value=1e-9, max_value=1.0),
    reward=st.floats(min_value=0.0, max_value=1.0),
    outcome=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {
                "valid": st.booleans(),
                "latency_ms": st.floats(0, 1e6),
                "cost_usd": st.floats(0, 10),
                "error": st.one_of(st.none(), st.text(max_size=10)),
            }
        ),
    ),
)
def test_store_roundtrip(context, features, propensity, reward, outcome) -> None:  # type: ignore[no-untyped-def]
    for store in (MemoryStore(), SQLiteStore(":memory:")):
        d = DecisionRecord(
            "d1",
            1,
            1.5,
            context,
            "a:b/direct_emit",
            propensity,
            features,
            "linucb",
            reward_spec={"name": "x"},
            eligible=["a:b/direct_emit"],
            extra={"request_id": "r"},
        )
        f = FeedbackRecord("d1", 2, 2.5, outcome, reward, defaulted=outcome is None)
        store.log_decision(d)
        store.log_feedback(f)
        got_d = store.get_decision("d1")
        got_f = store.get_feedback("d1")
        assert got_d == d
        assert got_f == f
        events = list(store.events_since(0))
        assert [k for k, _ in events] == ["decision", "feedback"]
        (line,) = list(store.iter_trace())
        assert json.loads(json.dumps(line))["context"] == context
        store.close()


def test_read_only_controller(tmp_path: Path) -> None:
    db = tmp_path / "ro.db"
    ctl = rw.Controller(arms=ARMS, store=db, seed=0)
    traffic(ctl, 50)
    expected = scores(ctl)
    ro = rw.Controller(store=db, read_only=True)  # next to a live writer
    assert scores(ro) == expected
    with pytest.raises(rw.StateError, match="read-only"):
        ro.decide({})
    ro.close()
    with pytest.raises(rw.StateError, match="in use"):
        rw.Controller(store=db)
    ctl.close()
    rw.Controller(store=db).close()  # the lock went with the writer
    with pytest.raises(rw.ConfigError):
        rw.Controller(store=tmp_path / "missing.db", read_only=True)


@pytest.mark.parametrize("interval", [0.005, 3600.0])
def test_wal_stays_bounded_under_sustained_writes(tmp_path: Path, interval: float) -> None:
    """A busy writer never lets a passive checkpoint restart the WAL; the store's safety
    valve (a TRUNCATE checkpoint once the WAL holds ``wal_limit_frames``) keeps it bounded.
    The writer runs the valve after its own commits, so the bound holds whether the
    background checkpoint thread runs often (5 ms) or never (3600 s)."""

    def run(limit: int) -> int:
        path = tmp_path / f"wal-{limit}.db"
        # a commit per record (durability="always") is the heaviest WAL traffic there is
        store = SQLiteStore(
            path, durability="always", wal_limit_frames=limit, checkpoint_interval_s=interval
        )
        ctl = rw.Controller(["a:m/direct_emit", "b:m/direct_emit"], store=store, seed=0)
        wal = Path(str(path) + "-wal")
        biggest = 0
        for i in range(1500):
            d = ctl.decide({"n": float(i % 17), "lang": "en" if i % 2 else "zh"})
            ctl.feedback(
                d.decision_id, rw.Outcome(valid=True, latency_ms=100.0 + i % 7, cost_usd=0.0)
            )
            if i % 50 == 0:
                biggest = max(biggest, wal.stat().st_size if wal.exists() else 0)
        ctl.close()
        store.close()
        return biggest

    unbounded, bounded = run(10**9), run(64)
    assert bounded < 4 * 1024 * 1024, bounded
    assert bounded <= 32 + (64 + 8) * (4096 + 24), bounded  # the limit + one commit's pages
    assert bounded * 3 < unbounded, (bounded, unbounded)


def _crash_image(src: Path, dst: Path) -> None:
    """Copy a live writer's files (database, WAL, acklog) as a crash would leave them."""
    for suffix in ("", "-wal", ".acklog"):
        f = Path(str(src) + suffix)
        if f.exists():
            Path(str(dst) + suffix).write_bytes(f.read_bytes())


def test_acklog_recovery_skips_a_torn_last_line(tmp_path: Path) -> None:
    """A writer that dies mid-``write`` leaves a torn last line: it was never acknowledged, so
    the next open copies every intact line into the tables, skips that one and says so."""
    from structlog.testing import capture_logs

    db = tmp_path / "live.db"
    store = SQLiteStore(db, batch_size=10**6, checkpoint_interval_s=3600)
    ctl = rw.Controller(arms=ARMS, store=store, seed=3)
    rewards = {}
    for i in range(40):
        d = ctl.decide({"task": ["qa", "extraction"][i % 2], "n": i})
        rewards[d.decision_id] = ctl.feedback(
            d.decision_id, rw.Outcome(valid=i % 3 != 0, latency_ms=50.0 + i, cost_usd=0.0)
        ).reward
    pending = ctl.decide({"task": "qa", "n": 99})  # logged, no feedback: not yet durable
    crashed = tmp_path / "crashed.db"
    _crash_image(db, crashed)
    ctl.close()
    acklog = Path(str(crashed) + ".acklog")
    data = acklog.read_bytes()
    assert data.count(b"\n") == 40  # one line per acknowledged feedback, none in the tables yet
    acklog.write_bytes(data[:-7])  # the last write was cut short
    last = list(rewards)[-1]

    ro = SQLiteStore(crashed, read_only=True)
    assert ro.get_feedback(last) is None
    assert ro.get_decision(pending.decision_id) is None
    for did, r in list(rewards.items())[:-1]:
        got = ro.get_feedback(did)
        assert got is not None and got.reward == r
    assert [k for k, _ in ro.events_since(0)].count("feedback") == 39
    assert len(list(ro.iter_trace())) == 39  # the torn line held the 40th decision too
    ro.close()

    with capture_logs() as logs:
        again = rw.Controller(store=crashed)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["acklog.torn_lines"]
    assert again.status().feedbacks == 39
    again.close()
    conn = sqlite3.connect(crashed)
    stored = dict(conn.execute("SELECT decision_id, reward FROM feedback").fetchall())
    conn.close()
    assert stored == dict(list(rewards.items())[:-1])
    assert not acklog.exists()  # a clean close leaves no acklog


@pytest.mark.parametrize("durability", ["always", "batch"])
def test_acklog_is_recovered_by_a_writer_in_another_durability_mode(
    tmp_path: Path, durability: str
) -> None:
    db = tmp_path / "live.db"
    ctl = rw.Controller(
        arms=ARMS, store=SQLiteStore(db, batch_size=10**6, checkpoint_interval_s=3600), seed=6
    )
    traffic(ctl, 25, feedback_share=1.0)
    crashed = tmp_path / "crashed.db"
    _crash_image(db, crashed)
    expected = scores(ctl)
    ctl.close()
    again = rw.Controller(store=SQLiteStore(crashed, durability=durability))  # type: ignore[arg-type]
    assert again.status().feedbacks == 25
    assert scores(again) == expected
    assert not Path(str(crashed) + ".acklog").exists()
    again.close()


def test_acklog_recovery_ignores_rows_the_tables_already_hold(tmp_path: Path) -> None:
    """Killed between a table commit and emptying the acklog: its rows are not added twice."""
    db = tmp_path / "live.db"
    store = SQLiteStore(db, batch_size=10**6, checkpoint_interval_s=3600)
    ctl = rw.Controller(arms=ARMS, store=store, seed=4)
    traffic(ctl, 30, feedback_share=1.0)
    acked = Path(str(db) + ".acklog").read_bytes()
    store.flush()  # rows in the tables, acklog emptied
    assert Path(str(db) + ".acklog").stat().st_size == 0
    traffic(ctl, 5, seed=1, feedback_share=1.0)
    crashed = tmp_path / "crashed.db"
    _crash_image(db, crashed)
    expected = scores(ctl)
    ctl.close()
    with Path(str(crashed) + ".acklog").open("r+b") as fh:  # the old lines, as if never emptied
        tail = fh.read()
        fh.seek(0)
        fh.write(acked + tail)
    again = rw.Controller(store=crashed)
    assert again.status().feedbacks == 35
    assert scores(again) == expected
    again.close()


def test_acklog_write_failure_writes_nothing_and_learns_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, batch_size=10**6, checkpoint_interval_s=3600)
    ctl = rw.Controller(arms=ARMS, store=store, seed=5)
    traffic(ctl, 20, feedback_share=1.0)
    size = Path(str(db) + ".acklog").stat().st_size
    d = ctl.decide({"task": "qa"})
    before = scores(ctl)
    assert store._acklog is not None
    good_fd = store._acklog.fd
    full = os.open("/dev/full", os.O_WRONLY)  # every write fails with ENOSPC
    store._acklog.fd = full
    try:
        with pytest.raises(rw.StateError, match="nothing was written"):
            ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=10.0, cost_usd=0.0))
    finally:
        store._acklog.fd = good_fd
        os.close(full)
    assert scores(ctl) == before
    assert Path(str(db) + ".acklog").stat().st_size == size
    r = ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=10.0, cost_usd=0.0))
    assert not r.duplicate
    assert ctl.status().feedbacks == 21
    ctl.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    context=st.dictionaries(st.text(min_size=1, max_size=10), json_scalars, max_size=6),
    arm=st.sampled_from(
        ["a:b/direct_emit", "ü:\n\"x'/local_reconstructed", "c:d/transport_compressed"]
    ),
    extra=st.dictionaries(st.sampled_from(["request_id", "unit_id"]), st.text(max_size=8)),
    reward_spec=st.one_of(st.none(), st.fixed_dictionaries({"name": st.text(max_size=8)})),
    outcome=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"valid": st.booleans(), "latency_ms": st.floats(0, 1e6), "error": st.text(max_size=6)}
        ),
    ),
    reward=st.floats(min_value=0.0, max_value=1.0),
)
def test_acklog_rows_read_back_exactly(context, arm, extra, reward_spec, outcome, reward) -> None:  # type: ignore[no-untyped-def]
    """What a read-only store reads from the acklog equals what the writer logged."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        store = SQLiteStore(path, batch_size=10**6, checkpoint_interval_s=3600)
        d = DecisionRecord(
            "d1", 1, 1.25, context, arm, 0.5, [0.1, -2.0, 1e-300], "squarecb",
            reward_spec=reward_spec, eligible=[arm, "x:y/direct_emit"], extra=extra,
        )  # fmt: skip
        f = FeedbackRecord("d1", 2, 2.5, outcome, reward, defaulted=outcome is None)
        store.log_decision(d)
        store.log_feedback(f)
        ro = SQLiteStore(path, read_only=True)
        assert ro.get_decision("d1") == d
        assert ro.get_feedback("d1") == f
        assert list(ro.events_since(0)) == [("decision", d), ("feedback", f)]
        assert ro.max_seq() == 2
        ro.close()
        store.close()


def test_acklog_under_concurrent_feedback_and_background_flushes(tmp_path: Path) -> None:
    """Threads deciding and sending feedback while the background thread flushes to the
    tables every millisecond: a crash image at any point holds every acknowledged feedback."""
    import threading

    db = tmp_path / "live.db"
    store = SQLiteStore(db, batch_size=7, checkpoint_interval_s=0.001)
    ctl = rw.Controller(arms=ARMS, store=store, seed=8)
    acked: list[tuple[str, float]] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(150):
            d = ctl.decide({"task": ["qa", "extraction"][(i + w) % 2], "n": i % 5})
            r = ctl.feedback(
                d.decision_id,
                rw.Outcome(valid=(i + w) % 4 != 0, latency_ms=20.0 + i % 13, cost_usd=0.0),
            )
            with lock:
                acked.append((d.decision_id, r.reward))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    crashed = tmp_path / "crashed.db"
    with store._lock:  # a consistent image: no write in flight
        _crash_image(db, crashed)
    expected = scores(ctl)
    ctl.close()
    again = rw.Controller(store=crashed)
    assert again.status().feedbacks == 600
    assert scores(again) == expected
    again.close()
    conn = sqlite3.connect(crashed)
    stored = dict(conn.execute("SELECT decision_id, reward FROM feedback").fetchall())
    conn.close()
    assert stored == dict(acked)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_numpy_scalars_in_a_context_are_logged_as_plain_json(tmp_path: Path, store: str) -> None:
    """A context built from numpy/pandas values (np.int64, np.float32, np.bool_, np.str_) is
    featurized like the plain values and logged, exported and restored as plain JSON."""
    db = tmp_path / "s.db" if store == "sqlite" else None
    ctl = rw.Controller(arms=ARMS, store=db, seed=2)
    plain = {"n_fields": 3, "input_tokens": 1.5, "strict": True, "language": "en"}
    ctx = {
        "n_fields": np.int64(3),
        "input_tokens": np.float32(1.5),
        "strict": np.bool_(True),
        "language": np.str_("en"),
    }
    twin = rw.Controller(arms=ARMS, seed=2)
    for _ in range(5):
        d, t = ctl.decide(ctx), twin.decide(plain)
        assert d.arm == t.arm and d.probabilities == t.probabilities
        ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=10.0, cost_usd=0.0))
        twin.feedback(t.decision_id, rw.Outcome(valid=True, latency_ms=10.0, cost_usd=0.0))
    out = tmp_path / "t.jsonl"
    assert ctl.export_trace(out) == 5
    assert [json.loads(line)["context"] for line in out.read_text().splitlines()] == [plain] * 5
    if db is not None:
        expected = scores(ctl)
        ctl.close()
        again = rw.Controller(store=db)
        assert scores(again) == expected
        again.close()


def test_store_arguments_are_checked_by_name(tmp_path: Path) -> None:
    for kw, field in (
        ({"checkpoint_interval_s": 0}, "checkpoint_interval_s"),
        ({"keep_snapshots": 0}, "keep_snapshots"),
        ({"batch_size": 0}, "batch_size"),
        ({"wal_limit_frames": 0}, "wal_limit_frames"),
    ):
        with pytest.raises(rw.ConfigError, match=rf"^{field}: must be"):
            SQLiteStore(tmp_path / "s.db", **kw)  # type: ignore[arg-type]
    store = SQLiteStore(tmp_path / "s.db")
    acklog = Path(str(tmp_path / "s.db") + ".acklog")
    assert acklog.stat().st_mode & 0o111 == 0  # a data file, not executable
    store.close()


# ------------------------------------------------------------------ the writer lock file
@pytest.mark.parametrize("durability", ["feedback", "batch", "always"])
def test_a_cleanly_closed_store_is_one_file(tmp_path: Path, durability: str) -> None:
    """``ctl.close()`` (the library example) removes the lock file, the acklog and SQLite's
    -wal/-shm: what is left is the database, which a new writer opens (and locks) again."""
    db = tmp_path / "routewise.db"
    ctl = rw.Controller(arms=ARMS, store=db, seed=0, durability=durability)  # type: ignore[arg-type]
    traffic(ctl, 50)
    ctl.store.sync()  # the sidecar's group commit: "batch" opens its acklog too
    assert {p.name for p in tmp_path.iterdir()} >= {"routewise.db", "routewise.db.lock"}
    expected = scores(ctl)
    ctl.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routewise.db"]
    with rw.Controller(store=db) as again:
        assert scores(again) == expected
        with pytest.raises(rw.StateError, match="in use by pid"):
            rw.Controller(store=db)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routewise.db"]


def test_a_writer_that_locks_a_deleted_lock_file_takes_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlink/open race: B opens ``<db>.lock``, A closes (deletes the file, releases),
    B's flock then succeeds on the deleted file. B must notice and lock the file now at the
    path, or a third writer C would create a new file, lock it too, and both would write."""
    import fcntl

    from routewise.state.lock import StoreInUse

    db = tmp_path / "x.db"
    a = SQLiteStore(db)
    real_flock = fcntl.flock
    calls: list[int] = []

    def racing_flock(fd: int, op: int) -> None:
        calls.append(fd)
        if len(calls) == 1:  # B has opened A's lock file; A closes now
            a.close()
            assert not Path(str(db) + ".lock").exists()
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", racing_flock)
    b = SQLiteStore(db)
    monkeypatch.setattr(fcntl, "flock", real_flock)
    try:
        assert len(calls) == 2  # the first lock was on the deleted file: dropped, retried
        lock = Path(str(db) + ".lock")
        assert lock.read_text() == f"pid {os.getpid()}"
        with pytest.raises(StoreInUse) as err:
            SQLiteStore(db)  # C
        assert err.value.holder == f"pid {os.getpid()}"
    finally:
        b.close()
    assert not Path(str(db) + ".lock").exists()


_LOCK_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from routewise.state.lock import StoreInUse, lock_writer, unlock_writer
    path, marker, go = sys.argv[1], sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    until = time.monotonic() + 1.5
    held = refused = 0
    while time.monotonic() < until:
        try:
            fh = lock_writer(path)
        except StoreInUse:
            refused += 1
            continue
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if 2 writers
        os.close(fd)
        os.unlink(marker)
        unlock_writer(fh, path)
        held += 1
    print(held, refused)
    """
)


def test_the_writer_lock_admits_one_writer_under_contention(tmp_path: Path) -> None:
    """Four processes take and release the lock (which deletes its file) as fast as they can;
    each marks its turn with an O_EXCL file, which fails if two ever hold the lock at once."""
    path, marker, go = (str(tmp_path / n) for n in ("x.db", "holder", "go"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCK_WORKER, path, marker, go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        Path(go).touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    counts = [tuple(int(x) for x in out.split()) for out, _ in results]
    assert sum(h for h, _ in counts) > 100 and sum(r for _, r in counts) > 100  # contended
    assert not os.path.exists(path + ".lock")
