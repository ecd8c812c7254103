"""Embedded SQLite store (sqlite-utils, WAL journal).

Schema (created with sqlite-utils, written on the hot path with prepared statements)::

    meta(key PK, value JSON)
    decisions(seq INTEGER PK, decision_id UNIQUE, ts, arm, propensity, policy, context JSON,
              features BLOB float64, reward_spec JSON, eligible JSON, extra JSON)
    feedback(seq INTEGER PK, decision_id UNIQUE, ts, outcome JSON, reward, defaulted)
    events(seq INTEGER PK, ts, arm, event JSON)  -- Guardian / operator health transitions
    snapshots(seq PK, ts, state JSON)          -- the newest ``keep_snapshots`` are kept

Durability: the database runs in WAL mode with ``synchronous=NORMAL``: a committed
transaction is in the WAL file before ``COMMIT`` returns, so it survives ``kill -9`` of the
process (an OS crash or power loss may lose the last transactions; set
``synchronous="FULL"`` to fsync every commit). Decisions are buffered and committed in the
same transaction as the next feedback (``durability="feedback"``, the default), or at once
(``"always"``), or every ``batch_size`` records (``"batch"``, fastest, may lose the last batch).
Lost records are always a suffix of the log, never a hole. WAL checkpoints (copying the
log back into the database, with its fsyncs) run on a background thread every
``checkpoint_interval_s`` instead of inside a commit, which keeps them off the hot path.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlite_utils

from routewise.errors import ConfigError, StateError
from routewise.state.base import (
    DecisionRecord,
    Durability,
    Event,
    EventRecord,
    FeedbackRecord,
    trace_line,
)

__all__ = ["SQLiteStore"]

_SCHEMA_VERSION = 1

_INSERT_DECISION = (
    "INSERT INTO decisions (decision_id, seq, ts, arm, propensity, policy, context, features, "
    "reward_spec, eligible, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_FEEDBACK = "INSERT INTO feedback (decision_id, seq, ts, outcome, reward, defaulted) VALUES (?, ?, ?, ?, ?, ?)"
_DECISION_COLS = (
    "decision_id, seq, ts, arm, propensity, policy, context, features, reward_spec, eligible, extra"
)


# json.dumps(obj, separators=(",", ":")) without building an encoder per call (same output)
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _dumps(obj: Any) -> str | None:
    return None if obj is None else _encode(obj)


def _decision_row(rec: DecisionRecord) -> tuple[Any, ...]:
    return (
        rec.decision_id,
        rec.seq,
        rec.ts,
        rec.arm,
        rec.propensity,
        rec.policy,
        _encode(rec.context),
        np.asarray(rec.features, dtype=np.float64).tobytes(),
        _dumps(rec.reward_spec),
        _dumps(rec.eligible),
        _dumps(rec.extra) if rec.extra else None,
    )


def _decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    return DecisionRecord(
        decision_id=row[0],
        seq=int(row[1]),
        ts=float(row[2]),
        arm=row[3],
        propensity=float(row[4]),
        policy=row[5],
        context=json.loads(row[6]),
        features=np.frombuffer(row[7], dtype=np.float64).tolist(),
        reward_spec=json.loads(row[8]) if row[8] is not None else None,
        eligible=json.loads(row[9]) if row[9] is not None else None,
        extra=json.loads(row[10]) if row[10] is not None else {},
    )


def _feedback_from_row(row: Sequence[Any]) -> FeedbackRecord:
    return FeedbackRecord(
        decision_id=row[0],
        seq=int(row[1]),
        ts=float(row[2]),
        outcome=json.loads(row[3]) if row[3] is not None else None,
        reward=float(row[4]),
        defaulted=bool(row[5]),
    )


class SQLiteStore:
    """Decision/feedback log, snapshots and meta in one SQLite file.

    Parameters
    ----------
    path
        Database file (created if missing) or ``":memory:"``.
    durability
        ``"feedback"`` (default): a feedback commits before returning, together with every
        decision logged before it. ``"always"``: decisions commit before returning too.
        ``"batch"``: commit every ``batch_size`` records and on :meth:`flush`/:meth:`close`.
    synchronous
        SQLite ``synchronous`` pragma: ``"NORMAL"`` survives process kills, ``"FULL"`` also
        survives power loss at the price of an fsync per commit.

    Examples
    --------
    >>> from routewise.state import SQLiteStore
    >>> store = SQLiteStore(":memory:")
    >>> store.save_meta({"arms": ["a/direct_emit"]})
    >>> store.load_meta()
    {'arms': ['a/direct_emit']}
    >>> store.close()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        durability: Durability = "feedback",
        batch_size: int = 256,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
        keep_snapshots: int = 3,
        checkpoint_interval_s: float = 0.25,
        wal_limit_frames: int = 16384,
        read_only: bool = False,
    ) -> None:
        if durability not in ("always", "feedback", "batch"):
            raise ConfigError(
                "durability", f"must be 'always', 'feedback' or 'batch', got {durability!r}"
            )
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size!r}")
        if synchronous not in ("OFF", "NORMAL", "FULL"):
            raise ConfigError("synchronous", f"must be OFF, NORMAL or FULL, got {synchronous!r}")
        self.path = str(path)
        self.durability = durability
        self.batch_size = batch_size
        self.synchronous = synchronous
        self.keep_snapshots = keep_snapshots
        if wal_limit_frames < 1:
            raise ConfigError("wal_limit_frames", f"must be >= 1, got {wal_limit_frames!r}")
        self.checkpoint_interval_s = checkpoint_interval_s
        self.wal_limit_frames = wal_limit_frames
        self.read_only = read_only
        self._lockfile: Any = None
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError("store", f"directory {str(parent)!r} does not exist")
            if read_only and not Path(self.path).is_file():
                raise ConfigError("store", f"{self.path!r} does not exist")
            if not read_only:
                self._acquire_writer_lock()
        try:
            if read_only and self.path != ":memory:":
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                self._conn = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
                self._db = sqlite_utils.Database(self._conn)
                self._check_schema()
            else:
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
                self._db = sqlite_utils.Database(self._conn)
                if self.path != ":memory:":
                    self._db.enable_wal()
                    # checkpoints (the fsync-heavy part of WAL) run on a background thread
                    self._conn.execute("PRAGMA wal_autocheckpoint=0")
                self._conn.execute(f"PRAGMA synchronous={synchronous}")
                self._create_schema()
        except sqlite3.DatabaseError as exc:
            self._release_writer_lock()
            raise StateError(f"store {self.path!r}: cannot open SQLite database ({exc})") from None
        self._lock = threading.RLock()
        self._buf_decisions: list[tuple[Any, ...]] = []
        self._buf_index: dict[str, DecisionRecord] = {}
        self._buf_feedback: list[tuple[Any, ...]] = []
        self._buf_feedback_index: dict[str, FeedbackRecord] = {}
        self._max_seq = int(
            self._conn.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM decisions), 0), "
                "coalesce((SELECT max(seq) FROM feedback), 0), "
                "coalesce((SELECT max(seq) FROM events), 0))"
            ).fetchone()[0]
        )
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:" and not read_only:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="routewise-wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _acquire_writer_lock(self) -> None:
        """One writer per store: an advisory ``flock`` on ``<path>.lock``, released by the OS
        when the process dies (so ``kill -9`` never leaves a stale lock)."""
        import fcntl
        import os

        lock_path = Path(self.path + ".lock")
        fh = lock_path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StateError(
                f"store {self.path!r} is in use by {holder} (one writer at a time); stop it, "
                "open the store read-only, or send the command to the running sidecar (--url)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lockfile = fh

    def _release_writer_lock(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()  # closing the descriptor releases the flock
            self._lockfile = None

    def _check_schema(self) -> None:
        tables = set(self._db.table_names())
        missing = {"meta", "decisions", "feedback", "events", "snapshots"} - tables
        if missing:
            raise StateError(
                f"store {self.path!r}: not a routewise store (missing {sorted(missing)})"
            )

    def _checkpoint_loop(self) -> None:
        """Copy the WAL back into the database every ``checkpoint_interval_s`` (PASSIVE: never
        blocks the writer). Keeps checkpoint fsyncs off the decide/feedback path; the writer's
        commits only append to the WAL, which is what makes them survive ``kill -9``.

        Under sustained load a passive checkpoint never finds the WAL fully copied at the
        moment the writer starts a transaction, so the WAL would never restart and would grow
        without bound. Once it holds ``wal_limit_frames`` frames (~64 MB with 4 KiB pages),
        the checkpointer pauses the writer (the store lock) for one TRUNCATE checkpoint: a
        short stall every ~64 MB of log in exchange for a bounded file."""
        # a short busy timeout bounds the stall if a reader (another process) holds an old
        # snapshot: the TRUNCATE gives up and is retried next round
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=0.1
        )
        try:
            while not self._stop.wait(self.checkpoint_interval_s):
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if row is not None and row[1] >= self.wal_limit_frames:
                        with self._lock:
                            if self._closed:
                                break
                            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error:  # busy/locked (e.g. a reader): retry next round
                    continue
        finally:
            conn.close()

    def _create_schema(self) -> None:
        db = self._db
        db.table("meta").create({"key": str, "value": str}, pk="key", if_not_exists=True)
        db.table("decisions").create(
            {
                "decision_id": str,
                "seq": int,
                "ts": float,
                "arm": str,
                "propensity": float,
                "policy": str,
                "context": str,
                "features": bytes,
                "reward_spec": str,
                "eligible": str,
                "extra": str,
            },
            pk="seq",
            not_null={"decision_id", "ts", "arm", "propensity", "context", "features"},
            if_not_exists=True,
        )
        db.table("decisions").create_index(["decision_id"], unique=True, if_not_exists=True)
        db.table("feedback").create(
            {
                "decision_id": str,
                "seq": int,
                "ts": float,
                "outcome": str,
                "reward": float,
                "defaulted": int,
            },
            pk="seq",
            not_null={"decision_id", "ts", "reward"},
            if_not_exists=True,
        )
        db.table("feedback").create_index(["decision_id"], unique=True, if_not_exists=True)
        db.table("events").create(
            {"seq": int, "ts": float, "arm": str, "event": str}, pk="seq", if_not_exists=True
        )
        db.table("snapshots").create(
            {"seq": int, "ts": float, "state": str}, pk="seq", if_not_exists=True
        )
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                (json.dumps(_SCHEMA_VERSION),),
            )
        elif json.loads(row[0]) != _SCHEMA_VERSION:
            raise StateError(
                f"store {self.path!r}: schema version {row[0]} is not supported (expected {_SCHEMA_VERSION})"
            )

    # ----------------------------------------------------------------- meta
    def load_meta(self) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def save_meta(self, meta: dict[str, Any]) -> None:
        with self._lock:
            self._check_open()
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('config', ?)", (json.dumps(meta),)
            )

    # ---------------------------------------------------------------- write
    def log_decision(self, rec: DecisionRecord) -> None:
        row = _decision_row(rec)
        with self._lock:
            self._check_open()
            self._buf_decisions.append(row)
            self._buf_index[rec.decision_id] = rec
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            if self.durability == "always" or (
                self.durability == "batch" and self._buffered() >= self.batch_size
            ):
                self._commit()

    def log_feedback(self, rec: FeedbackRecord) -> None:
        row = (
            rec.decision_id,
            rec.seq,
            rec.ts,
            None if rec.outcome is None else _encode(rec.outcome),
            rec.reward,
            int(rec.defaulted),
        )
        with self._lock:
            self._check_open()
            self._buf_feedback.append(row)
            self._buf_feedback_index[rec.decision_id] = rec
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            if self.durability != "batch" or self._buffered() >= self.batch_size:
                self._commit()

    def log_event(self, rec: EventRecord) -> None:
        text = json.dumps(rec.event, separators=(",", ":"))
        with self._lock:
            self._check_open()
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            self._commit(
                (
                    "INSERT INTO events (seq, ts, arm, event) VALUES (?, ?, ?, ?)",
                    (rec.seq, float(rec.event["ts"]), rec.event["arm"], text),
                )
            )

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        self.flush()
        with self._lock:
            if limit is None:
                rows = self._conn.execute("SELECT seq, event FROM events ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT seq, event FROM events ORDER BY seq DESC LIMIT ?", (limit,)
                ).fetchall()[::-1]
        return [EventRecord(int(r[0]), json.loads(r[1])) for r in rows]

    def _buffered(self) -> int:
        return len(self._buf_decisions) + len(self._buf_feedback)

    def _commit(self, extra: tuple[str, tuple[Any, ...]] | None = None) -> None:
        if not self._buf_decisions and not self._buf_feedback and extra is None:
            return
        conn = self._conn
        try:
            conn.execute("BEGIN")
            if self._buf_decisions:
                conn.executemany(_INSERT_DECISION, self._buf_decisions)
            if self._buf_feedback:
                conn.executemany(_INSERT_FEEDBACK, self._buf_feedback)
            if extra is not None:
                conn.execute(*extra)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"store {self.path!r}: write failed ({exc}); nothing was written"
            ) from exc
        self._buf_decisions.clear()
        self._buf_index.clear()
        self._buf_feedback.clear()
        self._buf_feedback_index.clear()

    def flush(self) -> None:
        with self._lock:
            if not self._closed and not self.read_only:
                self._commit()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"store {self.path!r} is closed")
        if self.read_only:
            raise StateError(f"store {self.path!r} is open read-only")

    # ----------------------------------------------------------------- read
    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._lock:
            rec = self._buf_index.get(decision_id)
            if rec is not None:
                return rec
            row = self._conn.execute(
                f"SELECT {_DECISION_COLS} FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return None if row is None else _decision_from_row(row)

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        with self._lock:
            rec = self._buf_feedback_index.get(decision_id)
            if rec is not None:
                return rec
            row = self._conn.execute(
                "SELECT decision_id, seq, ts, outcome, reward, defaulted FROM feedback WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        return None if row is None else _feedback_from_row(row)

    def save_snapshot(self, seq: int, state: dict[str, Any]) -> None:
        text = json.dumps(state, separators=(",", ":"))
        with self._lock:
            self._check_open()
            self._commit(
                (
                    "INSERT OR REPLACE INTO snapshots (seq, ts, state) VALUES (?, ?, ?)",
                    (seq, time.time(), text),
                )
            )
            self._conn.execute(
                "DELETE FROM snapshots WHERE seq NOT IN (SELECT seq FROM snapshots ORDER BY seq DESC LIMIT ?)",
                (self.keep_snapshots,),
            )

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, state FROM snapshots ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        try:
            return int(row[0]), json.loads(row[1])
        except json.JSONDecodeError as exc:
            raise StateError(
                f"store {self.path!r}: snapshot at seq {row[0]} is corrupt ({exc})"
            ) from None

    def events_since(self, seq: int) -> Iterator[Event]:
        self.flush()
        dcur = self._conn.execute(
            f"SELECT {_DECISION_COLS} FROM decisions WHERE seq > ? ORDER BY seq", (seq,)
        )
        fcur = self._conn.execute(
            "SELECT decision_id, seq, ts, outcome, reward, defaulted FROM feedback WHERE seq > ? ORDER BY seq",
            (seq,),
        )
        ecur = self._conn.execute(
            "SELECT seq, event FROM events WHERE seq > ? ORDER BY seq", (seq,)
        )
        drows = ((int(r[1]), 0, "decision", r) for r in dcur)
        frows = ((int(r[1]), 1, "feedback", r) for r in fcur)
        erows = ((int(r[0]), 2, "event", r) for r in ecur)
        for _, _, kind, row in heapq.merge(drows, frows, erows):
            if kind == "decision":
                yield "decision", _decision_from_row(row)
            elif kind == "feedback":
                yield "feedback", _feedback_from_row(row)
            else:
                yield "event", EventRecord(int(row[0]), json.loads(row[1]))

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        self.flush()
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_DECISION_COLS} FROM decisions ORDER BY seq DESC LIMIT ?", (n,)
            ).fetchall()
        return [_decision_from_row(r) for r in reversed(rows)]

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        self.flush()
        cols = ", ".join(f"d.{c.strip()}" for c in _DECISION_COLS.split(","))
        sql = (
            f"SELECT {cols}, f.decision_id, f.seq, f.ts, f.outcome, f.reward, f.defaulted "
            "FROM decisions d LEFT JOIN feedback f ON f.decision_id = d.decision_id "
        )
        params: tuple[Any, ...] = ()
        if since is not None:
            sql += "WHERE d.ts >= ? "
            params = (since,)
        sql += "ORDER BY d.seq"
        for row in self._conn.execute(sql, params):
            d = _decision_from_row(row[:11])
            f = _feedback_from_row(row[11:]) if row[11] is not None else None
            yield trace_line(d, f)

    def max_seq(self) -> int:
        return self._max_seq

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if not self.read_only:
                self._commit()
            self._closed = True
            self._stop.set()
        # joined outside the lock: the checkpointer may be waiting for it (its WAL valve)
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._checkpointer is not None:
                # may fail if another process is reading; the WAL is checkpointed later
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._conn.close()
            self._release_writer_lock()

    def __del__(self) -> None:
        # an unclosed store must not keep the writer lock (nor warn about the lock file)
        self._release_writer_lock()
