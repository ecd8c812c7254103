"""PostgresStore against a real PostgreSQL (127.0.0.1:5432): the Store contract, the shared
log's sequence numbers (assigned at commit, written back, no gaps for a tailing reader),
exactly-once feedback and events, schema versions, NOTIFY wake-ups, the leader lock, and
recovery from connections killed with ``pg_terminate_backend``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from routewise.errors import ConfigError, StateError
from routewise.state.base import (
    ControlRecord,
    DecisionRecord,
    EventRecord,
    FeedbackRecord,
    Store,
)
from routewise.state.pgschema import SCHEMA_VERSION, advisory_key
from routewise.state.postgres import PostgresStore
from routewise.state.sqlite import SQLiteStore


@pytest.fixture()
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    try:
        yield s
    finally:
        s.close()


def _decision(did: str, ts: float = 1.0, **kw: Any) -> DecisionRecord:
    return DecisionRecord(
        decision_id=did,
        seq=0,
        ts=ts,
        context=kw.pop("context", {"task": "extraction", "n": 3}),
        arm=kw.pop("arm", "openai:gpt/direct_emit"),
        propensity=kw.pop("propensity", 0.25),
        features=kw.pop("features", np.array([1.0, 0.5, -2.0])),
        policy="squarecb",
        **kw,
    )


def _feedback(did: str, reward: float = 0.75, ts: float = 2.0) -> FeedbackRecord:
    return FeedbackRecord(did, 0, ts, {"valid": True, "latency_ms": 120.0}, reward)


def _event(arm: str = "a/direct_emit", ts: float = 3.0, key: str | None = None) -> EventRecord:
    ev = {"ts": ts, "arm": arm, "from": "healthy", "to": "pinned", "reason": "operator"}
    return EventRecord(0, ev, key=key)


def _kill_backends(admin_url: str, db_url: str) -> int:
    """``pg_terminate_backend`` on every connection to the database of ``db_url``, waiting
    (up to 5 s each) until the backends have exited and released their locks."""
    name = db_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    assert all(ok for (ok,) in rows)
    return len(rows)


# ----------------------------------------------------------------- contract
def test_is_a_shared_store(store: PostgresStore) -> None:
    assert isinstance(store, Store)
    assert PostgresStore.shared is True
    assert store.max_seq() == 0 and store.latest_snapshot() is None
    assert store.load_meta() is None and store.read_log(0) == []


def test_every_record_round_trips_and_gets_its_seq_written_back(store: PostgresStore) -> None:
    d = _decision(
        "d1",
        reward_spec={"preset": "low_latency"},
        eligible=["a/direct_emit", "b/direct_emit"],
        extra={"request_id": "r1", "experiment": "e"},
    )
    f = FeedbackRecord("d1", 0, 2.5, None, 0.5, defaulted=True)
    e = _event(key="k1")
    c = ControlRecord(0, 4.0, {"op": "start", "name": "exp1"})
    store.log_decision(d)
    store.log_feedback(f)
    store.log_event(e)
    store.log_control(c)
    assert [d.seq, f.seq, e.seq, c.seq] == [1, 2, 3, 4]
    assert e.origin == store.origin and c.origin == store.origin
    got = store.get_decision("d1")
    assert got is not None and got.features == [1.0, 0.5, -2.0]
    assert got == DecisionRecord(**{**_asdict(d), "features": [1.0, 0.5, -2.0]})
    assert store.get_feedback("d1") == f
    assert store.get_decision("nope") is None and store.get_feedback("nope") is None
    log = store.read_log(0)
    assert [k for k, _ in log] == ["decision", "feedback", "event", "control"]
    assert log[1][1] == f and log[2][1] == e and log[3][1] == c
    assert list(store.events_since(2)) == log[2:]
    assert store.list_events() == [e] and store.list_events(1) == [e]
    assert store.max_seq() == 4 and store.head == 4
    assert [r.decision_id for r in store.recent_decisions(5)] == ["d1"]


def _asdict(rec: DecisionRecord) -> dict[str, Any]:
    return {k: getattr(rec, k) for k in DecisionRecord.__slots__}  # type: ignore[attr-defined]


def test_a_second_feedback_and_a_repeated_event_key_are_dropped(pg_url: str) -> None:
    with_two = [PostgresStore(pg_url), PostgresStore(pg_url)]
    a, b = with_two
    try:
        a.log_decision(_decision("d1"))
        first, second = _feedback("d1", 0.9), _feedback("d1", 0.1)
        a.log_feedback(first)
        b.log_feedback(second)  # another replica got the same feedback
        assert first.seq == 2 and second.seq == 0  # 0: dropped, learning stays exactly once
        assert b.get_feedback("d1") == first
        e1, e2, e3 = _event(key="quarantine:a:1"), _event(key="quarantine:a:1"), _event()
        a.log_event(e1)
        b.log_event(e2)
        b.log_event(e3)
        b.log_event(_event())  # no key: never deduplicated
        assert e1.seq > 0 and e2.seq == 0 and e3.seq > 0
        assert [r.seq for r in a.list_events()] == [e1.seq, e3.seq, e3.seq + 1]
        kinds = [k for k, _ in a.read_log(0)]
        assert kinds == ["decision", "feedback", "event", "event", "event"]
        # in one batch the first wins as well
        batch = PostgresStore(pg_url, durability="batch")
        try:
            batch.log_decision(_decision("d2"))
            x, y = _feedback("d2", 0.3), _feedback("d2", 0.4)
            batch.log_feedback(x)
            batch.log_feedback(y)
            assert batch.get_feedback("d2") is x
            batch.sync()
            assert x.seq > 0 and y.seq == 0 and a.get_feedback("d2") == x
        finally:
            batch.close()
    finally:
        for s in with_two:
            s.close()


def test_batch_mode_buffers_until_sync_and_numbers_in_log_order(pg_url: str) -> None:
    writer = PostgresStore(pg_url, durability="batch", batch_size=1000)
    reader = PostgresStore(pg_url, read_only=True)
    try:
        recs: list[Any] = []
        for i in range(5):
            d = _decision(f"d{i}")
            writer.log_decision(d)
            recs.append(d)
            if i % 2:
                f = _feedback(f"d{i}")
                writer.log_feedback(f)
                recs.append(f)
        c = ControlRecord(0, 9.0, {"op": "stop", "name": "e"})
        writer.log_control(c)
        recs.append(c)
        assert all(r.seq == 0 for r in recs)
        assert writer.get_decision("d3") is recs[4]  # found while buffered
        assert reader.read_log(0) == []  # nothing committed yet
        writer.sync()
        assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
        assert [r.seq for _, r in reader.read_log(0)] == list(range(1, len(recs) + 1))
        writer.sync()  # nothing buffered: no transaction
        assert reader.max_seq() == len(recs)
    finally:
        writer.close()
        reader.close()


def test_batch_mode_commits_every_batch_size_records_and_on_close(pg_url: str) -> None:
    s = PostgresStore(pg_url, durability="batch", batch_size=3)
    r = PostgresStore(pg_url, read_only=True)
    try:
        for i in range(4):
            s.log_decision(_decision(f"d{i}"))
        assert r.max_seq() == 3  # the third record filled the batch
        s.close()
        assert r.max_seq() == 4  # close() committed the rest
        with pytest.raises(StateError, match="is closed"):
            s.log_decision(_decision("late"))
        s.close()  # idempotent
    finally:
        s.close()
        r.close()


def test_read_log_pages_in_seq_order_across_tables_and_writers(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url, origin="replica-b")
    try:
        expected: list[tuple[str, int]] = []
        for i in range(12):
            w = a if i % 2 else b
            d = _decision(f"d{i}")
            w.log_decision(d)
            expected.append(("decision", d.seq))
            if i % 3 == 0:
                f = _feedback(f"d{i}")
                (b if w is a else a).log_feedback(f)
                expected.append(("feedback", f.seq))
            if i % 4 == 0:
                e = _event(arm=f"arm{i}/direct_emit")
                w.log_event(e)
                expected.append(("event", e.seq))
            if i % 5 == 0:
                c = ControlRecord(0, float(i), {"op": "noop", "i": i})
                w.log_control(c)
                expected.append(("control", c.seq))
        assert [s for _, s in expected] == list(range(1, len(expected) + 1))
        got: list[tuple[str, int]] = []
        after, pages = 0, 0
        while page := a.read_log(after, limit=4):
            assert len(page) <= 4
            got += [(k, r.seq) for k, r in page]
            after = page[-1][1].seq
            pages += 1
        assert got == expected and pages == -(-len(expected) // 4)
        assert a.head == len(expected)
        assert [(k, r.seq) for k, r in b.events_since(5)] == expected[5:]
        origins = {r.origin for k, r in a.read_log(0, 1000) if k in ("event", "control")}
        assert origins == {a.origin, "replica-b"}
        with pytest.raises(ConfigError, match="limit"):
            a.read_log(0, limit=0)
    finally:
        a.close()
        b.close()


def test_iter_trace_equals_the_sqlite_stores(pg_url: str, tmp_path: Any) -> None:
    store = PostgresStore(pg_url, durability="batch", batch_size=500)
    lite = SQLiteStore(tmp_path / "t.db")
    try:
        rng = np.random.default_rng(0)
        recs: list[Any] = []
        for i in range(2600):  # more than one server-side cursor fetch (itersize 2000)
            d = _decision(
                f"d{i}",
                ts=float(i),
                features=rng.normal(size=4),
                context={"i": i, "t": ["a", "b"][i % 2]},
                extra={"request_id": f"r{i}"} if i % 7 == 0 else {},
            )
            store.log_decision(d)
            recs.append(d)
            if i % 3:
                f = FeedbackRecord(d.decision_id, 0, i + 0.5, None, 0.1, True)
                if i % 2:
                    f = _feedback(d.decision_id, reward=float(rng.random()), ts=i + 0.5)
                store.log_feedback(f)
                recs.append(f)
        store.sync()
        for r in recs:  # with the seqs the PostgreSQL store wrote back
            (lite.log_decision if isinstance(r, DecisionRecord) else lite.log_feedback)(r)
        lite.flush()
        assert list(store.iter_trace()) == list(lite.iter_trace())
        assert list(store.iter_trace(since=2500.0)) == list(lite.iter_trace(since=2500.0))
        assert len(list(store.iter_trace(since=2500.0))) == 100
    finally:
        lite.close()
        store.close()


def test_snapshots_keep_the_newest_n(pg_url: str) -> None:
    s = PostgresStore(pg_url, keep_snapshots=2)
    try:
        for seq in (5, 9, 7, 12):
            s.save_snapshot(seq, {"seq": seq, "x": [1.5, float("nan")], "n": np.int64(3)})
        got = s.latest_snapshot()
        assert got is not None and got[0] == 12
        assert got[1]["seq"] == 12 and got[1]["n"] == 3 and np.isnan(got[1]["x"][1])
        s.save_snapshot(12, {"seq": 12, "again": True})  # same seq: replaced
        with s.connection() as conn:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM rw_snapshots ORDER BY seq")]
        assert seqs == [9, 12]
        assert s.latest_snapshot() == (12, {"seq": 12, "again": True})
        with s.connection() as conn:
            conn.execute("UPDATE rw_snapshots SET state = '{oops' WHERE seq = 12")
        with pytest.raises(StateError, match="snapshot at seq 12 is corrupt"):
            s.latest_snapshot()
    finally:
        s.close()


def test_meta_round_trips_and_is_replaced(store: PostgresStore) -> None:
    store.save_meta({"arms": ["a/direct_emit"], "seed": 3})
    store.save_meta({"arms": ["a/direct_emit", "b/direct_emit"], "seed": 4})
    assert store.load_meta() == {"arms": ["a/direct_emit", "b/direct_emit"], "seed": 4}


# ------------------------------------------------------------------- schema
def test_a_newer_schema_version_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM rw_schema").fetchone() == (SCHEMA_VERSION,)
        conn.execute("UPDATE rw_schema SET version = %s", (SCHEMA_VERSION + 1,))
    msg = re.escape(
        f"schema version {SCHEMA_VERSION + 1} is newer than this routewise supports "
        f"({SCHEMA_VERSION}); upgrade routewise"
    )
    for read_only in (False, True):
        with pytest.raises(StateError, match=msg):
            PostgresStore(pg_url, read_only=read_only)


def test_several_replicas_starting_at_once_create_the_schema_once(pg_url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert not errors and len(stores) == 4
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM rw_counter").fetchone() == (1,)


def test_read_only_refuses_a_database_that_is_not_a_store_and_creates_nothing(
    pg_url: str,
) -> None:
    with pytest.raises(StateError, match="not a routewise store"):
        PostgresStore(pg_url, read_only=True)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('rw_schema')").fetchone() == (None,)
    PostgresStore(pg_url).close()
    ro = PostgresStore(pg_url, read_only=True)
    try:
        for call in (
            lambda: ro.log_decision(_decision("d")),
            lambda: ro.save_meta({}),
            lambda: ro.save_snapshot(1, {}),
        ):
            with pytest.raises(StateError, match="read-only"):
                call()
        assert ro.try_lead() is False
        ro.sync()  # nothing to do
    finally:
        ro.close()


def test_tables_live_in_the_schema_the_url_selects(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tenant_a")
    tenant = PostgresStore(pg_url + "?options=-csearch_path%3Dtenant_a")
    default = PostgresStore(pg_url)
    try:
        assert tenant.schema == "tenant_a" and default.schema == "public"
        default.log_decision(_decision("p1"))
        d = _decision("t1")
        tenant.log_decision(d)
        assert d.seq == 1  # its own counter
        assert tenant.get_decision("p1") is None and default.get_decision("t1") is None
        assert tenant.try_lead() and default.try_lead()  # one leader per store
        tenant.wait(0)  # listening
        default.log_decision(_decision("p2"))
        assert tenant.wait(0.3) is False  # not woken by another store's commits
    finally:
        tenant.close()
        default.close()


def test_bad_arguments_are_config_errors(pg_url: str) -> None:
    for kw, field in (
        ({"durability": "sometimes"}, "durability"),
        ({"pool_size": 0}, "pool_size"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"keep_snapshots": 0}, "keep_snapshots"),
        ({"batch_size": 0}, "batch_size"),
    ):
        with pytest.raises(ConfigError) as info:
            PostgresStore(pg_url, **kw)
        assert info.value.field == field


# -------------------------------------------------------- replicas: wake, lead
def test_wait_is_woken_by_another_stores_commit(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        assert a.wait(0.05) is False  # opens the LISTEN connection; nothing committed
        woke: list[tuple[bool, float]] = []

        def waiter() -> None:
            t0 = time.monotonic()
            woke.append((a.wait(5.0), time.monotonic() - t0))

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.2)
        d = _decision("d1")
        t_commit = time.monotonic()
        b.log_decision(d)
        t.join()
        assert woke[0][0] is True
        assert woke[0][1] < 2.0 and time.monotonic() - t_commit < 1.0
        assert a.head == d.seq  # from the NOTIFY payload
        assert a.wait(0.1) is False  # that one was consumed
        for i in range(3):  # several commits: one wake-up, head at the last
            b.log_decision(_decision(f"x{i}"))
        time.sleep(0.1)
        assert a.wait(1.0) is True and a.head == d.seq + 3
    finally:
        a.close()
        b.close()


def test_wait_after_reconnecting_reports_commits_it_missed(pg_url: str, pg_admin_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        assert a.wait(0.05) is False
        assert _kill_backends(pg_admin_url, pg_url) >= 1
        b.log_decision(_decision("d1"))  # retried on a fresh connection
        t0 = time.monotonic()
        assert a.wait(0.5) is False and time.monotonic() - t0 < 0.6  # the error: no raise
        assert a.connected is False
        assert a.wait(0.5) is True  # re-listening: the log is past what it has seen
        assert a.connected is True
        assert [r.seq for _, r in a.read_log(0)] == [1] and a.wait(0.1) is False
    finally:
        a.close()
        b.close()


def test_one_replica_leads_until_its_session_ends(pg_url: str, pg_admin_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        assert a.try_lead() is True and a.try_lead() is True
        assert b.try_lead() is False
        a.close()  # releases the lock
        assert a.try_lead() is False
        assert b.try_lead() is True
        _kill_backends(pg_admin_url, pg_url)
        assert b.try_lead() is False and b.connected is False  # the lock died with it
        assert b.try_lead() is True
    finally:
        a.close()
        b.close()


def test_wait_and_try_lead_never_raise_when_the_server_is_unreachable(pg_url: str) -> None:
    s = PostgresStore(pg_url, connect_timeout=1)
    try:
        s._url = "postgresql://postgres@127.0.0.1:1/nowhere"  # the server went away
        t0 = time.monotonic()
        assert s.wait(0.3) is False and time.monotonic() - t0 < 0.5
        assert s.try_lead() is False and s.connected is False
    finally:
        s.close()
    assert s.wait(1.0) is False and s.try_lead() is False  # closed


# ----------------------------------------------------------- failures
def test_killed_connections_fail_at_most_one_call_then_recover(
    pg_url: str, pg_admin_url: str
) -> None:
    s = PostgresStore(pg_url, pool_size=3)
    try:
        threads = [threading.Thread(target=lambda: s.read_log(0)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s.log_decision(_decision("d0"))
        for call in (
            lambda: s.log_decision(_decision("d1")),
            lambda: s.read_log(0),
            lambda: s.get_decision("d0"),
            lambda: list(s.iter_trace()),
            lambda: s.max_seq(),
            lambda: s.save_snapshot(1, {"a": 1}),
        ):
            assert _kill_backends(pg_admin_url, pg_url) >= 1
            try:
                call()
            except StateError as exc:  # allowed once: the next call must succeed
                assert s.path in str(exc)
                call()
            assert s.connected is True
        assert [r.decision_id for r in s.recent_decisions(10)] == ["d0", "d1"]
    finally:
        s.close()


def test_a_failed_commit_drops_its_batch_and_later_ones_succeed(pg_url: str) -> None:
    s = PostgresStore(pg_url, durability="batch")
    try:
        s.log_decision(_decision("dup"))
        s.sync()
        bad = [_decision("ok1"), _decision("dup")]  # a duplicate decision id: the batch fails
        for d in bad:
            s.log_decision(d)
        with pytest.raises(StateError, match=r"append of 2 records failed.*nothing was written"):
            s.sync()
        assert [d.seq for d in bad] == [0, 0]
        assert s.get_decision("ok1") is None  # dropped, not half-written
        good = _decision("ok2")
        s.log_decision(good)
        s.sync()
        assert good.seq == 2 and [r.seq for _, r in s.read_log(0)] == [1, 2]
    finally:
        s.close()


def test_errors_and_repr_never_show_the_password(pg_url: str) -> None:
    secret = "s3cr3t-pw"
    url = pg_url.replace("postgres@", f"postgres:{secret}@")  # trust auth ignores it
    s = PostgresStore(url)
    try:
        assert secret not in s.path and "***" in s.path and secret not in repr(s)
        with s.connection() as conn:
            conn.execute("DROP TABLE rw_feedback")
        with pytest.raises(StateError) as info:
            s.get_feedback("x")
        assert "get_feedback failed" in str(info.value) and secret not in str(info.value)
    finally:
        s.close()
    with pytest.raises(StateError) as info:
        PostgresStore(f"postgresql://app:{secret}@127.0.0.1:1/rw", connect_timeout=1)
    assert "connect failed" in str(info.value) and secret not in str(info.value)
    with pytest.raises(StateError) as info:
        PostgresStore(f"postgresql://127.0.0.1:1/rw?password={secret}&connect_timeout=x")
    assert secret not in str(info.value)


# ------------------------------------------------------ concurrency, gaps
def test_log_on_several_threads_while_sync_runs_on_another(pg_url: str) -> None:
    s = PostgresStore(pg_url, durability="batch", batch_size=10_000)
    stop = threading.Event()
    syncs: list[int] = []
    misses: list[str] = []

    def syncer() -> None:
        while not stop.is_set():
            s.sync()
            syncs.append(1)

    def writer(w: int) -> None:
        for i in range(300):
            d = _decision(f"w{w}-{i}")
            s.log_decision(d)
            if s.get_decision(d.decision_id) is None:  # buffered, in flight or committed
                misses.append(d.decision_id)

    recs: list[DecisionRecord] = []
    t_sync = threading.Thread(target=syncer)
    t_sync.start()
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    try:
        for t in writers:
            t.start()
        for t in writers:
            t.join()
    finally:
        stop.set()
        t_sync.join()
        s.sync()
    try:
        assert not misses and len(syncs) > 1
        log = s.read_log(0, limit=10_000)
        recs = [r for _, r in log]  # type: ignore[misc]
        assert len(recs) == 900 and [r.seq for r in recs] == list(range(1, 901))
        per_writer = {
            w: [
                int(r.decision_id.split("-")[1]) for r in recs if r.decision_id.startswith(f"w{w}-")
            ]
            for w in range(3)
        }
        assert all(v == list(range(300)) for v in per_writer.values())  # log order kept
    finally:
        s.close()


def test_a_tailing_reader_never_skips_a_seq_committed_late(pg_url: str) -> None:
    """Writer A holds the append lock with a slow transaction (allocates, inserts, sleeps 1 s,
    commits) while writer B appends and a reader tails ``read_log(last)``: the reader sees every
    seq exactly once, in order; B's appends wait for A and get larger numbers."""
    b = PostgresStore(pg_url)
    reader = PostgresStore(pg_url, read_only=True)
    key = advisory_key(b.schema, "append")
    a_holds_lock = threading.Event()
    a_seq: list[int] = []
    b_seqs: list[int] = []

    def slow_writer() -> None:
        with psycopg.connect(pg_url) as conn:  # one transaction, committed on exit
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            row = conn.execute("UPDATE rw_counter SET seq = seq + 1 RETURNING seq").fetchone()
            assert row is not None
            a_seq.append(int(row[0]))
            conn.execute(
                "INSERT INTO rw_decisions (decision_id, seq, ts, arm, propensity, policy, "
                "context, features) VALUES ('slow', %s, 0, 'a/direct_emit', 1, 'p', '{}', %s)",
                (row[0], np.zeros(3).tobytes()),
            )
            a_holds_lock.set()
            time.sleep(1.0)

    def fast_writer() -> None:
        for i in range(20):
            d = _decision(f"b{i}")
            b.log_decision(d)
            b_seqs.append(d.seq)

    seen: list[int] = []
    try:
        for i in range(3):
            b.log_decision(_decision(f"before{i}"))
        ta = threading.Thread(target=slow_writer)
        ta.start()
        assert a_holds_lock.wait(5)
        tb = threading.Thread(target=fast_writer)
        tb.start()
        last, deadline = 0, time.monotonic() + 15
        while len(seen) < 24 and time.monotonic() < deadline:
            for _, rec in reader.read_log(last, limit=5):
                assert rec.seq > last, "went past a seq it later found smaller"
                seen.append(rec.seq)
                last = rec.seq
        ta.join()
        tb.join()
        assert seen == list(range(1, 25))  # every seq exactly once, in order
        assert a_seq == [4] and b_seqs == list(range(5, 25))  # B waited for A
    finally:
        b.close()
        reader.close()


def test_a_postgresql_url_is_a_store_setting_and_opens_this_store(pg_url: str) -> None:
    from routewise.config import load_settings
    from routewise.controller.setup import new_store_file, open_store

    assert load_settings(db=pg_url).db == pg_url
    assert "postgres@" not in repr(load_settings(db=pg_url))  # a URL may hold a password
    with pytest.raises(ConfigError) as info:
        load_settings(db="mysql://u:pw@h/db")
    assert info.value.field == "db" and "pw" not in str(info.value)
    assert new_store_file(pg_url) is None and new_store_file(pg_url.replace("ql", "")) is None
    s = open_store(pg_url.replace("postgresql://", "postgres://"), "batch", False)
    try:
        assert isinstance(s, PostgresStore) and s.durability == "batch"
    finally:
        s.close()
