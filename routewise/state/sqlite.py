"""Embedded SQLite store (sqlite-utils, WAL journal).

Schema (created with sqlite-utils, written on the hot path with prepared statements)::

    meta(key PK, value JSON)
    decisions(seq INTEGER PK, decision_id UNIQUE, ts, arm, propensity, policy, context JSON,
              features BLOB float64, reward_spec JSON, eligible JSON, extra JSON)
    feedback(seq INTEGER PK, decision_id UNIQUE, ts, outcome JSON, reward, defaulted)
    events(seq INTEGER PK, ts, arm, event JSON)  -- Guardian / operator health transitions
    snapshots(seq PK, ts, state JSON)          -- the newest ``keep_snapshots`` are kept

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. With
``durability="feedback"`` (the default) a feedback is acknowledged once it is in the store's
*acknowledgement log* ``<path>.acklog``: one ``write(2)`` of a checksummed line holding the
feedback and every decision logged before it that is not yet durable. Rows reach the SQLite
tables in batches (every ``batch_size`` records, every ``checkpoint_interval_s`` from a
background thread, and on :meth:`flush`/:meth:`close`), after which the acklog is emptied. A
store opened after a crash first copies the acklog rows the tables do not hold yet into them
(a torn last line, from a write the process never returned from, is skipped), and a read-only
store reads them from the acklog, so nothing acknowledged is lost by ``kill -9``: the kernel
keeps a returned ``write`` even if the process dies. This is the same guarantee a WAL commit
with ``synchronous=NORMAL`` gives (an OS crash or power loss may lose the last ones; with
``synchronous="FULL"`` the acklog is ``fdatasync``-ed per feedback and commits fsync) for
less: about 5 µs to build and append the line, plus the rows' share of a batched insert,
instead of a ~35–40 µs transaction per feedback that rewrites four B-tree pages. ``durability="always"`` commits every decision and feedback to the tables directly;
``"batch"`` commits every ``batch_size`` records without an acklog (fastest, may lose the last
batch). Lost records are always a suffix of the log, never a hole. WAL checkpoints (copying
the log back into the database, with its fsyncs) run on the background thread too.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlite_utils
import structlog

from routewise.errors import ConfigError, StateError
from routewise.state.base import (
    DecisionRecord,
    Durability,
    Event,
    EventRecord,
    FeedbackRecord,
    json_default,
    trace_line,
)

__all__ = ["SQLiteStore"]

_log = structlog.get_logger("routewise.state")

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
_encode = json.JSONEncoder(separators=(",", ":"), default=json_default).encode
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_q: Any = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C speed-up)


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


def _feedback_row(rec: FeedbackRecord) -> tuple[Any, ...]:
    return (
        rec.decision_id,
        rec.seq,
        rec.ts,
        None if rec.outcome is None else _encode(rec.outcome),
        rec.reward,
        int(rec.defaulted),
    )


def _ack_line(decisions: Sequence[tuple[Any, ...]], feedback: tuple[Any, ...]) -> bytes:
    """One acklog line: ``<crc32 hex> <json [[decision rows], feedback row]>``.

    Built by hand from the rows the tables get, so the JSON texts they already hold (context,
    reward spec, eligible arms, extra, outcome) are embedded as JSON rather than escaped again
    as strings; the feature blob is base64. Floats are finite (validated upstream), so
    ``repr`` is their exact JSON form.

    Examples
    --------
    >>> d = ("id1", 1, 0.5, "a:m/direct_emit", 1.0, "squarecb", '{"n":1}', b"\\0" * 8,
    ...      None, None, None)
    >>> f = ("id1", 2, 0.75, '{"valid":true}', 0.25, 0)
    >>> line = _ack_line([d], f)
    >>> _parse_acklog(b"\\n" + line) == ([d], [f], 0)
    True
    """
    parts = [
        f"[{_q(r[0])},{r[1]},{r[2]!r},{_q(r[3])},{r[4]!r},{_q(r[5])},{r[6]},"
        f'"{base64.b64encode(r[7]).decode("ascii")}",{r[8] or "null"},{r[9] or "null"},'
        f"{r[10] or 'null'}]"
        for r in decisions
    ]
    f = feedback
    payload = (
        f"[[{','.join(parts)}],[{_q(f[0])},{f[1]},{f[2]!r},{f[3] or 'null'},{f[4]!r},{f[5]}]]"
    ).encode()
    return b"%08x %b" % (zlib.crc32(payload), payload)


def _parse_acklog(
    data: bytes,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """Decision and feedback rows of an acklog's intact lines, and how many lines were bad
    (a torn last line from a write cut short by the process dying)."""
    decisions: list[tuple[Any, ...]] = []
    feedback: list[tuple[Any, ...]] = []
    bad = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        crc, _, payload = line.partition(b" ")
        try:
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
                raise ValueError("checksum mismatch")
            rows, fb = json.loads(payload)
            if any(len(r) != 11 for r in rows) or len(fb) != 6:
                raise ValueError("wrong row width")
            parsed = [
                (
                    *r[:6],
                    _encode(r[6]),
                    base64.b64decode(r[7], validate=True),
                    _dumps(r[8]),
                    _dumps(r[9]),
                    _dumps(r[10]),
                )
                for r in rows
            ]
            fb = [*fb[:3], _dumps(fb[3]), *fb[4:]]
        except (ValueError, TypeError, IndexError):
            bad += 1
            continue
        decisions.extend(parsed)
        feedback.append(tuple(fb))
    return decisions, feedback, bad


class SQLiteStore:
    """Decision/feedback log, snapshots and meta in one SQLite file.

    Parameters
    ----------
    path
        Database file (created if missing) or ``":memory:"``.
    durability
        ``"feedback"`` (default): a feedback is durable before returning, together with every
        decision logged before it (appended to ``<path>.acklog``; the tables get the rows in
        batches). ``"always"``: decisions and feedback commit to the tables before returning.
        ``"batch"``: commit every ``batch_size`` records and on :meth:`flush`/:meth:`close`.
    batch_size
        Records per table commit in ``"batch"`` and ``"feedback"`` modes.
    synchronous
        SQLite ``synchronous`` pragma: ``"NORMAL"`` survives process kills, ``"FULL"`` also
        survives power loss at the price of an fsync per commit (and per acklog line).
    keep_snapshots
        Snapshots kept (older ones are deleted).
    checkpoint_interval_s
        Period of the background thread: it copies acklog-backed rows to the tables (so
        other processes see them within this time) and checkpoints the WAL.
    wal_limit_frames
        WAL size (in pages) past which the background thread pauses the writer for one
        TRUNCATE checkpoint, keeping the WAL bounded under sustained writes.
    read_only
        Open for queries next to a live writer: no lock, no writes; rows a crashed writer
        left in the acklog are read from it.

    Files: ``<path>`` and SQLite's ``-wal``/``-shm``; ``<path>.lock`` (the one-writer lock);
    ``<path>.acklog`` while a ``"feedback"`` writer is open (removed by :meth:`close`).

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
        self._lockfile: Any = None  # first: __del__ releases it even if __init__ raises
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
        if not checkpoint_interval_s > 0:
            raise ConfigError(
                "checkpoint_interval_s", f"must be > 0, got {checkpoint_interval_s!r}"
            )
        if keep_snapshots < 1:
            raise ConfigError("keep_snapshots", f"must be >= 1, got {keep_snapshots!r}")
        if wal_limit_frames < 1:
            raise ConfigError("wal_limit_frames", f"must be >= 1, got {wal_limit_frames!r}")
        self.checkpoint_interval_s = checkpoint_interval_s
        self.wal_limit_frames = wal_limit_frames
        self.read_only = read_only
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
        self._ack_path = self.path + ".acklog"
        self._ack_fd: int | None = None
        self._ack_size = 0  # bytes appended since the acklog was last emptied
        self._ack_from = 0  # buffered decisions before this index are in the acklog
        if self.path != ":memory:":
            self._recover_acklog()
            if not read_only and durability == "feedback":
                self._ack_fd = os.open(
                    self._ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
                )
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self.path != ":memory:" and not read_only:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="routewise-wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    FILE_SUFFIXES = ("", "-wal", "-shm", ".acklog", ".lock")
    """The files of a store at ``path``: ``path + suffix``."""

    @classmethod
    def remove_files(cls, path: str | Path) -> None:
        """Delete every file of the (closed) store at ``path``; missing ones are skipped."""
        for suffix in cls.FILE_SUFFIXES:
            Path(str(path) + suffix).unlink(missing_ok=True)

    def _recover_acklog(self) -> None:
        """Rows a crashed writer acknowledged but did not commit to the tables: a writer
        commits them now (and empties the acklog); a read-only store serves them from
        memory. The tables always hold a prefix of the sequence, so the acklog rows that
        matter are exactly those past the tables' highest ``seq``."""
        try:
            data = Path(self._ack_path).read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StateError(
                f"store {self.path!r}: cannot read {self._ack_path!r} ({exc})"
            ) from None
        if not data:
            return
        decisions, feedback, bad = _parse_acklog(data)
        top = self._max_seq
        decisions = [r for r in decisions if r[1] > top]
        feedback = [r for r in feedback if r[1] > top]
        if self.read_only:
            for r in decisions:
                rec = _decision_from_row(r)
                self._buf_decisions.append(r)
                self._buf_index[rec.decision_id] = rec
            for r in feedback:
                frec = _feedback_from_row(r)
                self._buf_feedback.append(r)
                self._buf_feedback_index[frec.decision_id] = frec
        else:
            if bad:
                _log.warning(
                    "acklog.torn_lines",
                    store=self.path,
                    lines=bad,
                    detail="lines of an interrupted write were skipped (never acknowledged)",
                )
            self._buf_decisions.extend(decisions)
            self._buf_feedback.extend(feedback)
            self._commit()
            if self.durability == "feedback":
                with open(self._ack_path, "r+b") as fh:
                    fh.truncate(0)
            else:  # this writer will not use it
                os.unlink(self._ack_path)
            if decisions or feedback:
                _log.info(
                    "acklog.recovered",
                    store=self.path,
                    decisions=len(decisions),
                    feedback=len(feedback),
                )
        self._max_seq = max([top] + [r[1] for r in decisions] + [r[1] for r in feedback])

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
                if self._ack_fd is not None and self._buffered():
                    with self._lock:
                        if self._closed:
                            break
                        try:
                            self._commit()
                        except StateError as exc:  # rows stay in the acklog and the buffer
                            _log.warning("store.flush_failed", store=self.path, error=str(exc))
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
        row = _feedback_row(rec)
        with self._lock:
            self._check_open()
            if self._ack_fd is not None:
                self._acknowledge(rec, row)
                return
            self._buf_feedback.append(row)
            self._buf_feedback_index[rec.decision_id] = rec
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            if self.durability != "batch" or self._buffered() >= self.batch_size:
                self._commit()

    def _acknowledge(self, rec: FeedbackRecord, row: tuple[Any, ...]) -> None:
        """``durability="feedback"``: append the feedback and the decisions before it to the
        acklog (durable once ``write`` returns), then commit to the tables per batch."""
        assert self._ack_fd is not None
        if self._buffered() >= 16 * self.batch_size:
            self._commit()  # the tables keep failing: refuse (nothing written) before the acklog grows further
        line = b"\n" + _ack_line(self._buf_decisions[self._ack_from :], row)
        # each line starts with a newline, so a line torn by a failed write cannot swallow the next one
        try:
            n = os.write(self._ack_fd, line)
            while n < len(line):
                n += os.write(self._ack_fd, line[n:])
            if self.synchronous == "FULL":
                _datasync(self._ack_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._ack_fd, self._ack_size)
            raise StateError(
                f"store {self.path!r}: write failed ({exc}); nothing was written"
            ) from exc
        self._ack_size += len(line)
        self._buf_feedback.append(row)
        self._buf_feedback_index[rec.decision_id] = rec
        self._ack_from = len(self._buf_decisions)
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq
        if self._buffered() >= self.batch_size:
            try:
                self._commit()
            except StateError as exc:  # acknowledged already (in the acklog): retried later
                _log.warning("store.flush_failed", store=self.path, error=str(exc))

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
        self._ack_from = 0
        if self._ack_size and self._ack_fd is not None:
            try:
                os.ftruncate(self._ack_fd, 0)
                self._ack_size = 0
            except OSError as exc:  # harmless: rows already in the tables are skipped on recovery
                _log.warning("acklog.truncate_failed", store=self.path, error=str(exc))

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
        last = seq
        for s, _, kind, row in heapq.merge(drows, frows, erows):
            last = s
            if kind == "decision":
                yield "decision", _decision_from_row(row)
            elif kind == "feedback":
                yield "feedback", _feedback_from_row(row)
            else:
                yield "event", EventRecord(int(row[0]), json.loads(row[1]))
        # a read-only store: acknowledged rows a crashed writer left in the acklog
        for ev in self._buffered_events():
            if ev[1].seq > last:
                yield ev

    def _buffered_events(self) -> list[Event]:
        """Buffered records (a read-only store's acklog rows), in sequence order."""
        with self._lock:
            evs: list[Event] = [("decision", r) for r in self._buf_index.values()]
            evs += [("feedback", f) for f in self._buf_feedback_index.values()]
        evs.sort(key=lambda e: e[1].seq)
        return evs

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        self.flush()
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_DECISION_COLS} FROM decisions ORDER BY seq DESC LIMIT ?", (n,)
            ).fetchall()
            recs = [_decision_from_row(r) for r in reversed(rows)]
            top = recs[-1].seq if recs else 0
            recs += sorted(
                (r for r in self._buf_index.values() if r.seq > top), key=lambda r: r.seq
            )
        return recs[-n:] if n > 0 else []

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
        top = 0
        fbuf = self._buf_feedback_index  # a read-only store's acklog rows (empty otherwise)
        for row in self._conn.execute(sql, params):
            d = _decision_from_row(row[:11])
            f = _feedback_from_row(row[11:]) if row[11] is not None else fbuf.get(d.decision_id)
            top = d.seq
            yield trace_line(d, f)
        for ev in self._buffered_events():
            if ev[0] == "decision" and ev[1].seq > top and (since is None or ev[1].ts >= since):
                yield trace_line(ev[1], fbuf.get(ev[1].decision_id))

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
            if self._ack_fd is not None:
                os.close(self._ack_fd)
                self._ack_fd = None
                if not self._buffered():  # everything is in the tables
                    with contextlib.suppress(OSError):
                        os.unlink(self._ack_path)
            self._release_writer_lock()

    def __del__(self) -> None:
        # an unclosed store must not keep the writer lock (nor warn about the lock file)
        self._release_writer_lock()
