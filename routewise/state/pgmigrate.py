"""Copy an SQLite store into an empty PostgreSQL store (``routewise migrate``).

Everything is copied with its sequence numbers: the configuration (meta), every decision,
feedback and Guardian/operator event (rows a crashed writer left in the ``.acklog`` included),
and the snapshots; the target's counter is set to the highest sequence number, so the first
new record continues the log. The copy is one transaction that holds the target's append lock
(a replica started meanwhile waits; an interrupted copy leaves the target empty), and the
row counts are verified after it. The source's writer lock is held while copying, so a sidecar
cannot write to it meanwhile (and one that does is refused before anything is copied).

Examples
--------
>>> import os, tempfile
>>> src = os.path.join(tempfile.mkdtemp(), "rw.db")
>>> SQLiteStore(src).close()
>>> migrate_sqlite_to_postgres(src, "postgresql://127.0.0.1:1/rw")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
routewise.errors.StateError: store 'postgresql://127.0.0.1:1/rw': connect failed (...)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from routewise.errors import ConfigError, StateError
from routewise.state import pgschema as q
from routewise.state.base import DecisionRecord, EventRecord, FeedbackRecord
from routewise.state.lock import lock_writer, unlock_writer
from routewise.state.postgres import PostgresStore
from routewise.state.schema import (
    DECISION_COLS,
    FEEDBACK_COLS,
    Row,
    decision_row,
    encode,
    feedback_row,
)
from routewise.state.sqlite import SQLiteStore

__all__ = ["MigrationReport", "migrate_sqlite_to_postgres"]

Progress = Callable[[int, int], None]  # (sequence number copied up to, highest in the source)

_COPY = {
    "decision": f"COPY rw_decisions ({DECISION_COLS}) FROM STDIN",
    "feedback": f"COPY rw_feedback ({FEEDBACK_COLS}) FROM STDIN",
    "event": f"COPY rw_events ({q.EVENT_COLS}) FROM STDIN",
}
_TABLE = {"decision": "rw_decisions", "feedback": "rw_feedback", "event": "rw_events"}


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate_sqlite_to_postgres` copied (counts verified in the target)."""

    source: str
    target: str  # password masked
    decisions: int
    feedback: int
    events: int
    snapshots: int
    meta: bool
    max_seq: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def migrate_sqlite_to_postgres(
    source: str | Path, target: str, *, progress: Progress | None = None, chunk: int = 5000
) -> MigrationReport:
    """Copy the SQLite store at ``source`` into the empty PostgreSQL store at ``target`` (a
    ``postgresql://`` URL; the tables are created if missing). Refuses (``StateError`` /
    ``ConfigError``) a missing or corrupt source, a source a sidecar is writing, and a target
    that holds anything; ``progress(seq, max_seq)`` is called as records are copied."""
    if chunk < 1:
        raise ConfigError("chunk", f"must be >= 1, got {chunk!r}")
    t0 = time.perf_counter()
    path = str(source)
    if not Path(path).is_file():
        raise ConfigError("--from", f"{path!r} does not exist (expected a routewise SQLite store)")
    lock = lock_writer(path)  # StoreInUse (a StateError) when a sidecar writes it
    try:
        src = SQLiteStore(path, read_only=True)
        try:
            dst = PostgresStore(target)
            try:
                counts, top = _copy(src, path, dst, progress or (lambda _s, _t: None), chunk)
            finally:
                dst.close()
        finally:
            src.close()
    finally:
        unlock_writer(lock, path)
    return MigrationReport(
        source=path,
        target=dst.path,
        decisions=counts["decision"],
        feedback=counts["feedback"],
        events=counts["event"],
        snapshots=counts["snapshot"],
        meta=bool(counts["meta"]),
        max_seq=top,
        seconds=time.perf_counter() - t0,
    )


def _copy(
    src: SQLiteStore, path: str, dst: PostgresStore, progress: Progress, chunk: int
) -> tuple[dict[str, int], int]:
    """The copy transaction, then the verification; returns the counts and the top seq."""
    try:
        meta = src.load_meta()
        total = src.max_seq()
        snapshots = _snapshot_rows(path)
        with dst.connection() as conn, conn.transaction():
            conn.execute(q.XACT_LOCK, (q.advisory_key(dst.schema, "append"),))
            _check_empty(conn, dst.path)
            if meta is not None:
                conn.execute(q.SAVE_META, (encode(meta),))
            counts, top = _copy_log(conn, _source_rows(src), total, progress, chunk)
            with conn.cursor().copy("COPY rw_snapshots (seq, ts, state) FROM STDIN") as cp:
                for row in snapshots:
                    cp.write_row(row)
            top = max([top, total] + [int(r[0]) for r in snapshots])
            conn.execute("UPDATE rw_counter SET seq = %s", (top,))
        counts.update(snapshot=len(snapshots), meta=int(meta is not None))
        with dst.connection() as conn:
            _verify(conn, dst.path, counts, top)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"store {path!r}: cannot read the SQLite store ({exc})") from None
    except psycopg.Error as exc:
        raise StateError(
            f"store {dst.path!r}: migration failed ({exc}); nothing was copied"
        ) from None
    return counts, top


def _source_rows(src: SQLiteStore) -> Iterator[tuple[str, int, Row]]:
    """The source's log as ``(kind, seq, target row)``, in sequence order."""
    for kind, rec in src.events_since(0):
        if isinstance(rec, DecisionRecord):
            yield kind, rec.seq, decision_row(rec)
        elif isinstance(rec, FeedbackRecord):
            yield kind, rec.seq, feedback_row(rec)
        elif isinstance(rec, EventRecord):
            yield kind, rec.seq, q.event_row_pg(rec)


def _copy_log(
    conn: psycopg.Connection[Any],
    rows: Iterator[tuple[str, int, Row]],
    total: int,
    progress: Progress,
    chunk: int,
) -> tuple[dict[str, int], int]:
    """COPY the log into its three tables, ``chunk`` rows per COPY and progress call."""
    counts = {"decision": 0, "feedback": 0, "event": 0}
    buffers: dict[str, list[Row]] = {k: [] for k in counts}
    top = 0

    def flush() -> None:
        for kind, buf in buffers.items():
            if buf:
                with conn.cursor().copy(_COPY[kind]) as cp:
                    for row in buf:
                        cp.write_row(row)
                counts[kind] += len(buf)
                buf.clear()
        progress(top, total)

    for n, (kind, seq, row) in enumerate(rows, 1):
        buffers[kind].append(row)
        top = max(top, seq)
        if n % chunk == 0:
            flush()
    flush()
    return counts, top


def _snapshot_rows(path: str) -> list[tuple[int, float, str]]:
    """Every snapshot of the SQLite store, oldest first (read-only connection)."""
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, ts, state FROM snapshots ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(int(s), float(t), str(st)) for s, t, st in rows]


def _check_empty(conn: psycopg.Connection[Any], where: str) -> None:
    counts = {t: _count(conn, t) for t in q.TABLES}
    row = conn.execute(q.COUNTER).fetchone()
    seq = int(row[0]) if row is not None else 0
    if seq or any(counts.values()):
        held = ", ".join(f"{n} in {t}" for t, n in counts.items() if n)
        raise StateError(
            f"store {where!r} is not empty ({held or 'no rows'}; sequence at {seq}): "
            "migrate into a new database, or a new schema (?options=-csearch_path%3DNAME)"
        )


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row is not None else 0


def _verify(conn: psycopg.Connection[Any], where: str, counts: dict[str, int], top: int) -> None:
    """Compare the target's row counts and counter with what was copied."""
    expected = {_TABLE[k]: counts[k] for k in _TABLE} | {
        "rw_snapshots": counts["snapshot"],
        "rw_meta": counts["meta"],
    }
    got = {t: _count(conn, t) for t in expected}
    row = conn.execute(q.COUNTER).fetchone()
    seq = int(row[0]) if row is not None else 0
    if got != expected or seq != top:
        raise StateError(
            f"store {where!r}: verification failed after the copy: expected {expected} and "
            f"sequence {top}, found {got} and sequence {seq}"
        )
