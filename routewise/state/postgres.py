"""PostgreSQL store: one shared log for replicated sidecars (``store="postgresql://…"``).

Several controller processes (replicas) share one PostgreSQL database. Every decision,
feedback, Guardian/operator event and control record goes into one log with one sequence
number, assigned *by the store* when the record commits (records arrive with ``seq=0``; the
store writes the number back into the record before ``log_*``/:meth:`~PostgresStore.sync`
returns). Every replica reads the log in sequence order (:meth:`~PostgresStore.read_log`,
woken by :meth:`~PostgresStore.wait`) and applies each record exactly once.

**Commit order is sequence order (the gap problem).** A reader tails the log with ``seq >
last``. With a sequence column (``bigserial``) that loses records: transaction A takes 41,
transaction B takes 42 and commits first, the reader sees 42 and moves ``last`` to 42, then A
commits 41 — which the reader never reads. Here an append is one transaction that first takes
``pg_advisory_xact_lock(<append key>)``, then allocates its numbers from a one-row counter
(``UPDATE rw_counter SET seq = seq + n RETURNING seq``), inserts its rows, sends
``NOTIFY routewise_log`` and commits. The lock is held until the commit, and PostgreSQL makes
a transaction visible before it releases its locks, so the next append allocates only after
every smaller number is visible: any snapshot holds a *prefix* of the sequence (holes only
where ``ON CONFLICT`` dropped a row, which no later commit fills). :meth:`read_log` reads the
four tables in one REPEATABLE READ snapshot, so a page is such a prefix too. Appends from all
replicas are serialized by this lock — one append in flight per database — which is the price
of the guarantee: ~0.5 ms per one-record commit on a local server with
``synchronous_commit=on`` (~20 µs per record in a batch of 256: ``durability="batch"`` plus
:meth:`sync`, the sidecar's group commit). Notifications go to channel ``routewise_log``
(``routewise_log.<schema>`` outside ``public``), with the last sequence number as payload.

Exactly once: a second feedback for a decision is dropped (``ON CONFLICT (decision_id) DO
NOTHING``) and so is a second event with the same ``key``; the dropped record's ``seq`` stays
``0`` after the commit (that is how the caller learns it was a duplicate).

Durability: with ``"always"`` and ``"feedback"`` every ``log_*`` call commits before it
returns (every replica must see a decision before its feedback can arrive elsewhere);
``"batch"`` buffers records until :meth:`sync`/:meth:`flush` (or ``batch_size`` records), one
transaction per call. A failed commit raises :class:`~routewise.errors.StateError` and drops
its batch: nothing of it was written (a transaction), nothing was acknowledged. The one
ambiguous case is a connection lost *during* ``COMMIT``: the error says the outcome is
unknown (the records may be in the log, where every replica applies them).

Connections: a :class:`psycopg_pool.ConnectionPool` (autocommit connections) serves every
append and read from any thread; :meth:`wait` has its own ``LISTEN`` connection and
:meth:`try_lead` its own session (its advisory lock elects the one replica that takes
snapshots). A broken connection is discarded and the call retried once when nothing can have
been written (so a restarted server, or ``pg_terminate_backend``, costs at most one failed
call); while the server is down, calls fail with ``StateError`` after ``connect_timeout``.
Passwords never appear in :attr:`~PostgresStore.path`, logs or errors.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import psycopg
import structlog
from psycopg_pool import PoolClosed, PoolTimeout

from routewise.errors import ConfigError, StateError
from routewise.state import pgschema as q
from routewise.state.base import (
    ControlRecord,
    DecisionRecord,
    Durability,
    Event,
    EventRecord,
    FeedbackRecord,
    decode_snapshot,
    trace_line,
)
from routewise.state.pgconn import Conn, PgConnections, rollback
from routewise.state.schema import (
    Row,
    decision_from_row,
    decision_row,
    encode,
    feedback_from_row,
    feedback_row,
)

__all__ = ["PostgresStore"]

_log = structlog.get_logger("routewise.state")

_Item = tuple[str, Any, Row]  # (kind, record, row with its sequence slot still 0)
_SEQ_SLOT = {"decision": 1, "feedback": 1, "event": 0, "control": 0}
_PAGE = 1000  # records per read_log page of events_since


def _with_seq(kind: str, row: Row, seq: int) -> Row:
    i = _SEQ_SLOT[kind]
    return (*row[:i], seq, *row[i + 1 :])


def _check_arguments(
    durability: str, pool_size: int, connect_timeout: float, keep_snapshots: int, batch_size: int
) -> None:
    """Raise :class:`ConfigError` naming the first invalid :class:`PostgresStore` argument."""
    if durability not in ("always", "feedback", "batch"):
        raise ConfigError(
            "durability", f"must be 'always', 'feedback' or 'batch', got {durability!r}"
        )
    if not isinstance(pool_size, int) or pool_size < 1:
        raise ConfigError("pool_size", f"must be an integer >= 1, got {pool_size!r}")
    if not (isinstance(connect_timeout, int | float) and 0 < connect_timeout < math.inf):
        raise ConfigError("connect_timeout", f"must be > 0 seconds, got {connect_timeout!r}")
    if not isinstance(keep_snapshots, int) or keep_snapshots < 1:
        raise ConfigError("keep_snapshots", f"must be an integer >= 1, got {keep_snapshots!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", f"must be an integer >= 1, got {batch_size!r}")


class PostgresStore(PgConnections):
    """The shared log, snapshots and meta of replicated controllers in PostgreSQL.

    Parameters
    ----------
    url
        ``postgresql://user:password@host:port/database`` (libpq URL; e.g.
        ``?options=-csearch_path%3Dtenant_a`` puts the ``rw_*`` tables in schema ``tenant_a``).
    durability
        ``"always"`` / ``"feedback"`` (default): every ``log_*`` call commits before it
        returns. ``"batch"``: records are buffered until :meth:`sync`, :meth:`flush` or
        ``batch_size`` of them.
    read_only
        Query an existing store: nothing is created, migrated or written; a database without
        the tables is a ``StateError`` ("not a routewise store").
    origin
        This replica's id, recorded with its events and control records (default
        ``host:pid:random``).
    pool_size
        Most pooled connections (besides the ``LISTEN`` and leader ones).
    connect_timeout
        Seconds to wait for a connection before a call fails with ``StateError``.
    keep_snapshots
        Snapshots kept (older ones are deleted).
    batch_size
        With ``durability="batch"``, buffered records that trigger a commit.

    Examples
    --------
    The password never shows, not even when the server cannot be reached:

    >>> PostgresStore("postgresql://app:s3cret@127.0.0.1:1/rw", connect_timeout=1)
    Traceback (most recent call last):
    ...
    routewise.errors.StateError: store 'postgresql://app:***@127.0.0.1:1/rw': connect failed (...)
    """

    shared: ClassVar[bool] = True
    """Several replicas share this store: the controller applies the log read from it, and
    the store assigns the sequence numbers."""

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "feedback",
        read_only: bool = False,
        origin: str | None = None,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        keep_snapshots: int = 3,
        batch_size: int = 256,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError("store", "expected a postgresql:// URL")
        _check_arguments(durability, pool_size, connect_timeout, keep_snapshots, batch_size)
        self.durability: Durability = durability
        self.origin = origin or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.keep_snapshots = keep_snapshots
        self.batch_size = batch_size
        self._buf_lock = threading.Lock()  # the buffer and the in-flight indexes
        self._sync_lock = threading.Lock()  # one append transaction at a time
        self.failed_commits = 0
        """Commits that failed (their records dropped), ever. A caller that logged records and
        later sees this number changed cannot know whether the failed commit carried them —
        any thread's sync (a group commit, the follower's) takes the whole buffer — so the
        sidecar's group commit answers such a request 503 instead of acknowledging it."""
        self._buf: list[_Item] = []
        self._decisions: dict[str, DecisionRecord] = {}  # buffered or being committed
        self._feedback: dict[str, FeedbackRecord] = {}
        super().__init__(
            url, read_only=read_only, pool_size=pool_size, connect_timeout=connect_timeout
        )

    # ----------------------------------------------------------------- meta
    def load_meta(self) -> dict[str, Any] | None:
        row = self._run("load_meta", lambda c: c.execute(q.LOAD_META).fetchone())
        return None if row is None else dict(json.loads(row[0]))

    def save_meta(self, meta: dict[str, Any]) -> None:
        self._check_writable()
        text = encode(meta)
        self._run("save_meta", lambda c: c.execute(q.SAVE_META, (text,)))

    # ---------------------------------------------------------------- append
    def log_decision(self, rec: DecisionRecord) -> None:
        self._add("decision", rec, decision_row(rec))

    def log_feedback(self, rec: FeedbackRecord) -> None:
        self._add("feedback", rec, feedback_row(rec))

    def log_event(self, rec: EventRecord) -> None:
        if rec.origin is None:
            rec.origin = self.origin
        self._add("event", rec, q.event_row_pg(rec))

    def log_control(self, rec: ControlRecord) -> None:
        """Append a control-plane change (an experiment's lifecycle step); committed like
        :meth:`log_event` (buffered with ``durability="batch"``)."""
        if rec.origin is None:
            rec.origin = self.origin
        self._add("control", rec, q.control_row(rec))

    def _add(self, kind: str, rec: Any, row: Row) -> None:
        """Buffer (``"batch"``) or commit one record; the row is encoded by the caller, so a
        later change to the caller's objects does not change what is stored."""
        item = (kind, rec, row)
        if self.durability != "batch":
            with self._sync_lock:
                with self._buf_lock:
                    self._check_writable()
                    self._index(item)
                self._commit([item])
            return
        with self._buf_lock:
            self._check_writable()
            self._buf.append(item)
            self._index(item)
            full = len(self._buf) >= self.batch_size
        if full:
            self.sync()

    def _index(self, item: _Item) -> None:
        kind, rec, _ = item
        if kind == "decision":
            self._decisions[rec.decision_id] = rec
        elif kind == "feedback":  # the first one wins, as in the table
            self._feedback.setdefault(rec.decision_id, rec)

    def _unindex(self, batch: Sequence[_Item]) -> None:
        with self._buf_lock:
            for kind, rec, _ in batch:
                if kind not in ("decision", "feedback"):
                    continue
                index: dict[str, Any] = self._decisions if kind == "decision" else self._feedback
                did: str = rec.decision_id
                if index.get(did) is rec:
                    del index[did]

    def sync(self) -> None:
        """Commit every buffered record (one transaction); a no-op when there is none. May
        run on another thread than the ``log_*`` calls; one commit at a time."""
        if self.read_only or self._closed:
            return
        with self._sync_lock:
            with self._buf_lock:
                batch, self._buf = self._buf, []
            if batch:
                self._commit(batch)

    def flush(self) -> None:
        """Same as :meth:`sync`: a commit is durable and visible to every reader at once."""
        self.sync()

    def _commit(self, batch: list[_Item]) -> None:
        """Append ``batch`` (the caller holds the sync lock) and write the sequence numbers
        back into its records (``0`` for a row dropped as a duplicate)."""
        try:
            top, kept = self._append(batch)
        except StateError as exc:
            self.failed_commits += 1  # see failed_commits: the group commit checks it
            self._unindex(batch)
            _log.warning(
                "pgstore.append_failed", store=self.path, records=len(batch), error=str(exc)
            )
            raise
        except BaseException:
            self.failed_commits += 1
            self._unindex(batch)
            raise
        first = top - len(batch)
        for i, (_, rec, _) in enumerate(batch, 1):
            rec.seq = first + i if kept[i - 1] else 0
        self._unindex(batch)

    def _append(self, batch: list[_Item]) -> tuple[int, list[bool]]:
        """One append transaction; retried once when the connection broke before COMMIT
        (the server rolled it back: nothing was written)."""
        self._check_open()
        op = f"append of {len(batch)} record{'s' if len(batch) > 1 else ''}"
        for attempt in (0, 1):
            committing = False
            try:
                with self._pool.connection() as conn:
                    try:
                        top, kept = self._append_tx(conn, batch)
                        committing = True
                        conn.execute("COMMIT")
                    except BaseException:
                        rollback(conn)
                        raise
            except (PoolTimeout, PoolClosed) as exc:
                self._connected = False
                raise self._error(op, exc, "; nothing was written") from None
            except psycopg.OperationalError as exc:
                self._connected = False
                if committing:
                    msg = "; the connection was lost during COMMIT: they may be in the log or not"
                    raise self._error(op, exc, msg) from None
                if attempt == 0:
                    self._pool.check()
                    continue
                raise self._error(op, exc, "; nothing was written") from None
            except psycopg.Error as exc:
                raise self._error(op, exc, "; nothing was written") from None
            self._connected = True
            return top, kept
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_tx(self, conn: Conn, batch: list[_Item]) -> tuple[int, list[bool]]:
        """Everything of an append but the COMMIT, in one pipelined round trip: lock,
        allocate, insert (each row's seq relative to the counter), notify. Returns the last
        allocated number and, per record, whether its row was kept."""
        n = len(batch)
        rows: dict[str, list[Row]] = {"decision": [], "control": []}
        checked: list[tuple[int, Row, str]] = []  # rows that ON CONFLICT may drop
        for i, (kind, _, row) in enumerate(batch, 1):
            r = _with_seq(kind, row, i - n)
            if kind in rows:
                rows[kind].append(r)
            else:
                checked.append(
                    (i - 1, r, q.INSERT_FEEDBACK if kind == "feedback" else q.INSERT_EVENT)
                )
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(q.XACT_LOCK, (self._append_key,), prepare=True)
            alloc = conn.execute(q.ALLOCATE, (n,), prepare=True)
            if rows["decision"]:
                conn.cursor().executemany(q.INSERT_DECISION, rows["decision"])
            if rows["control"]:
                conn.cursor().executemany(q.INSERT_CONTROL, rows["control"])
            inserts = [(i, conn.execute(stmt, r, prepare=True)) for i, r, stmt in checked]
            conn.execute(q.NOTIFY, (self._channel,), prepare=True)
        got = alloc.fetchone()
        assert got is not None
        kept = [True] * n
        for i, cur in inserts:
            kept[i] = cur.rowcount == 1
        return int(got[0]), kept

    # ------------------------------------------------------------------ read
    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._buf_lock:
            rec = self._decisions.get(decision_id)
        if rec is not None:
            return rec
        row = self._run(
            "get_decision",
            lambda c: c.execute(q.DECISION_BY_ID, (decision_id,), prepare=True).fetchone(),
        )
        return None if row is None else decision_from_row(row)

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        with self._buf_lock:
            rec = self._feedback.get(decision_id)
        if rec is not None:
            return rec
        row = self._run(
            "get_feedback",
            lambda c: c.execute(q.FEEDBACK_BY_ID, (decision_id,), prepare=True).fetchone(),
        )
        return None if row is None else feedback_from_row(row)

    def read_log(self, after: int, limit: int = 500) -> list[Event]:
        """Every record with ``seq > after``, in sequence order, at most ``limit``: one
        snapshot of the four tables, so the page is a prefix of what will ever be committed
        after ``after`` (see the module docstring)."""
        return self.read_page(after, limit)[0]

    def read_page(self, after: int, limit: int = 500) -> tuple[list[Event], int]:
        """:meth:`read_log` and the position a reader has reached with it: the last record's
        sequence number, or — when the page holds everything committed — the counter as of the
        page's snapshot (past numbers of dropped duplicates, which no record will ever fill)."""
        if not isinstance(limit, int) or limit < 1:
            raise ConfigError("limit", f"must be an integer >= 1, got {limit!r}")
        params = (int(after), limit)

        def read(conn: Conn) -> list[list[tuple[Any, ...]]]:
            with conn.pipeline():
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                curs = [
                    conn.cursor(binary=True).execute(stmt, params, prepare=True)
                    for stmt in (
                        q.DECISIONS_AFTER,
                        q.FEEDBACK_AFTER,
                        q.EVENTS_AFTER,
                        q.CONTROL_AFTER,
                    )
                ]
                counter = conn.cursor().execute(q.COUNTER, prepare=True)
                conn.execute("COMMIT")
            return [cur.fetchall() for cur in curs] + [counter.fetchall()]

        d, f, e, c, n = self._run("read_log", read)
        out = self._merge_page(d, f, e, c, limit)
        truncated = len(d) + len(f) + len(e) + len(c) > len(out) or len(out) == limit
        position = out[-1][1].seq if out else int(after)
        if not truncated and n:
            position = max(position, int(n[0][0]))
            self._see(position)
        return out, position

    def _merge_page(
        self,
        d: list[tuple[Any, ...]],
        f: list[tuple[Any, ...]],
        e: list[tuple[Any, ...]],
        c: list[tuple[Any, ...]],
        limit: int,
    ) -> list[Event]:
        merged = heapq.merge(
            ((int(r[1]), 0, r) for r in d),
            ((int(r[1]), 1, r) for r in f),
            ((int(r[0]), 2, r) for r in e),
            ((int(r[0]), 3, r) for r in c),
        )
        out: list[Event] = []
        for _, kind, row in merged:
            if len(out) == limit:
                break
            if kind == 0:
                out.append(("decision", decision_from_row(row)))
            elif kind == 1:
                out.append(("feedback", feedback_from_row(row)))
            elif kind == 2:
                out.append(("event", q.event_from_row(row)))
            else:
                out.append(("control", q.control_from_row(row)))
        if out:
            self._see(out[-1][1].seq)
        return out

    def events_since(self, seq: int) -> Iterator[Event]:
        self._flush_if_buffered()
        after = seq
        while True:
            page = self.read_log(after, _PAGE)
            if not page:
                return
            yield from page
            after = page[-1][1].seq

    def _flush_if_buffered(self) -> None:
        """Like the SQLite store, whole-log reads first commit what this store buffered."""
        if self._buf and not self.read_only:
            self.flush()

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        if limit is not None and limit <= 0:
            return []

        def read(conn: Conn) -> list[tuple[Any, ...]]:
            if limit is None:
                return conn.execute(q.ALL_EVENTS).fetchall()
            return conn.execute(q.LAST_EVENTS, (limit,), prepare=True).fetchall()[::-1]

        return [q.event_from_row(r) for r in self._run("list_events", read)]

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        self._flush_if_buffered()
        if n <= 0:
            return []
        rows = self._run(
            "recent_decisions",
            lambda c: c.execute(q.RECENT_DECISIONS, (n,), binary=True).fetchall(),
        )
        return [decision_from_row(r) for r in reversed(rows)]

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Trace lines, decisions in sequence order, streamed with a server-side cursor."""
        self._flush_if_buffered()
        self._check_open()
        stmt = q.TRACE + (" WHERE d.ts >= %s" if since is not None else "") + " ORDER BY d.seq"
        params = (since,) if since is not None else None
        for attempt in (0, 1):
            started = False
            try:
                with (
                    self._pool.connection() as conn,
                    conn.transaction(),
                    conn.cursor(name="rw_trace", binary=True) as cur,
                ):
                    cur.itersize = 2000
                    cur.execute(stmt, params)
                    for row in cur:
                        started = True
                        d = decision_from_row(row[:11])
                        f = feedback_from_row(row[11:]) if row[11] is not None else None
                        yield trace_line(d, f)
            except psycopg.OperationalError as exc:
                self._connected = False
                if attempt == 0 and not started and not isinstance(exc, PoolTimeout | PoolClosed):
                    self._pool.check()  # a broken connection: once more on a good one
                    continue
                raise self._error("iter_trace", exc) from None
            except psycopg.Error as exc:
                raise self._error("iter_trace", exc) from None
            self._connected = True
            return

    def max_seq(self) -> int:
        """The last sequence number committed (the counter: a dropped duplicate's number
        counts)."""
        row = self._run("max_seq", lambda c: c.execute(q.COUNTER, prepare=True).fetchone())
        return int(row[0]) if row is not None else 0

    # ------------------------------------------------------------- snapshots
    def save_snapshot(self, seq: int, state: dict[str, Any]) -> None:
        self._check_writable()
        text = encode(state)

        def save(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(q.SAVE_SNAPSHOT, (int(seq), time.time(), text))
                conn.execute(q.PRUNE_SNAPSHOTS, (self.keep_snapshots,))

        self._run("save_snapshot", save)

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        row = self._run("latest_snapshot", lambda c: c.execute(q.LATEST_SNAPSHOT).fetchone())
        if row is None:
            return None
        return decode_snapshot(self.path, row[0], row[1])

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Commit what is buffered, then close the pool, the ``LISTEN`` and the leader
        connections (releasing the leader lock). Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._close_connections()

    def __repr__(self) -> str:
        return f"PostgresStore({self.path!r}, durability={self.durability!r})"
