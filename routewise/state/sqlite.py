"""Embedded SQLite store (sqlite-utils, WAL journal); tables in :mod:`routewise.state.schema`.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A record is
*acknowledged* once it is in the store's acknowledgement log ``<path>.acklog``
(:mod:`routewise.state.acklog`): one ``write(2)`` of a checksummed line holding every record
logged since the previous line. With ``durability="feedback"`` (the default) every
:meth:`~SQLiteStore.log_feedback` appends such a line before returning; :meth:`~SQLiteStore.sync`
appends one on demand (decisions with no feedback yet; with ``durability="batch"``, everything
logged since the last line) — a server's group commit calls it once per event-loop turn. Rows
reach the SQLite tables in batches (every ``batch_size`` records, every
``checkpoint_interval_s`` from a background thread, and on :meth:`~SQLiteStore.flush` /
:meth:`~SQLiteStore.close`), after which the acklog is emptied, so it never holds more than
the rows the tables lack. A store opened after a crash first copies the acklog rows the tables
do not hold yet into them (a torn last line, from a write the process never returned from, is
skipped), and a read-only store reads them from the acklog, so nothing acknowledged is lost by
``kill -9``: the kernel keeps a returned ``write`` even if the process dies. This is the same
guarantee a WAL commit with ``synchronous=NORMAL`` gives (an OS crash or power loss may lose
the last ones; with ``synchronous="FULL"`` every acklog line is ``fdatasync``-ed and commits
fsync) for less: an acklog line with a decision and its feedback adds ~7 µs, a table
transaction ~32 µs (it rewrites several B-tree pages), and the rows' batched insert is paid
either way (``benchmarks/durability.py``; a transaction only wins when it is shared by more
than ~8 decision+feedback pairs). ``durability="always"`` commits every decision and feedback
to the tables directly; ``"batch"`` commits every ``batch_size`` records and makes records
durable only on :meth:`~SQLiteStore.sync`/:meth:`~SQLiteStore.flush` (anything logged after
the last one may be lost). Lost records are always a suffix of the log, never a hole.

An existing file is checked when it is opened (:func:`~routewise.state.integrity.verify_existing`):
one that is empty, not SQLite or without routewise's tables is refused, never initialised, and
``PRAGMA quick_check`` (``integrity_check=True``, the default) refuses a damaged one. The
one-writer lock, the acklog and SQLite's ``-wal``/``-shm`` all belong to the file's resolved
path, so a symlink or a second spelling of the path reaches the same store and the same lock.

WAL checkpoints (copying the log back into the database, with its fsyncs) run on the
background thread; the writer itself truncates the WAL once it passes ``wal_limit_frames``
(see :meth:`SQLiteStore._bound_wal`), so its size is bounded however that thread is scheduled.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
import structlog

from routewise.errors import ConfigError, StateError
from routewise.state.acklog import AckLog, ack_line, read_acklog
from routewise.state.base import (
    DecisionRecord,
    Durability,
    Event,
    EventRecord,
    FeedbackRecord,
    decode_snapshot,
    trace_line,
)
from routewise.state.integrity import verify_existing
from routewise.state.lock import lock_writer, unlock_writer
from routewise.state.schema import (
    DECISION_COLS,
    FEEDBACK_COLS,
    INSERT_DECISION,
    INSERT_EVENT,
    INSERT_FEEDBACK,
    Row,
    create_schema,
    decision_from_row,
    decision_row,
    event_from_row,
    event_row,
    feedback_from_row,
    feedback_row,
)

__all__ = ["SQLiteStore"]

_log = structlog.get_logger("routewise.state")

_WAL_HEADER, _WAL_FRAME_HEADER = 32, 24  # bytes (SQLite's WAL file format)
_TRUNCATE_BUSY_MS = 100  # how long the writer's WAL truncation waits for a reader


def _check_arguments(
    durability: str,
    batch_size: int,
    synchronous: str,
    keep_snapshots: int,
    checkpoint_interval_s: float,
    wal_limit_frames: int,
) -> None:
    """Raise :class:`ConfigError` naming the first invalid :class:`SQLiteStore` argument."""
    if durability not in ("always", "feedback", "batch"):
        raise ConfigError(
            "durability", f"must be 'always', 'feedback' or 'batch', got {durability!r}"
        )
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size!r}")
    if synchronous not in ("OFF", "NORMAL", "FULL"):
        raise ConfigError("synchronous", f"must be OFF, NORMAL or FULL, got {synchronous!r}")
    if not checkpoint_interval_s > 0:
        raise ConfigError("checkpoint_interval_s", f"must be > 0, got {checkpoint_interval_s!r}")
    if keep_snapshots < 1:
        raise ConfigError("keep_snapshots", f"must be >= 1, got {keep_snapshots!r}")
    if wal_limit_frames < 1:
        raise ConfigError("wal_limit_frames", f"must be >= 1, got {wal_limit_frames!r}")


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
        ``"batch"``: commit every ``batch_size`` records and on :meth:`flush`/:meth:`close`;
        durable on :meth:`sync` too. In every mode :meth:`sync` makes everything logged so
        far durable (cheaply, through the acklog).
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
        WAL size (in pages) past which the writer runs one TRUNCATE checkpoint after its
        commit, keeping the WAL bounded under sustained writes.
    read_only
        Open for queries next to a live writer: no lock, no writes; rows a crashed writer
        left in the acklog are read from it.
    integrity_check
        Run ``PRAGMA quick_check`` when an existing store is opened and refuse a damaged one
        (:class:`~routewise.state.integrity.StoreCorrupt`); it reads the whole file (0.2 s
        for 210 MB in the page cache, more from a cold disk), so a very large store may skip
        it. How long it took:
        :attr:`check_seconds`. A file that is not a routewise store is refused either way.

    Files: ``<path>`` and SQLite's ``-wal``/``-shm``; ``<path>.lock`` (the one-writer lock,
    :mod:`routewise.state.lock`) and ``<path>.acklog`` while a writer is open: :meth:`close`
    removes both (and SQLite the ``-wal``/``-shm``), so a cleanly closed store is one file.
    ``<path>`` here is the resolved path (:attr:`real_path`: symbolic links followed).

    Examples
    --------
    >>> from routewise.state import SQLiteStore
    >>> store = SQLiteStore(":memory:")
    >>> store.save_meta({"arms": ["a/direct_emit"]})
    >>> store.load_meta()
    {'arms': ['a/direct_emit']}
    >>> store.close()
    """

    FILE_SUFFIXES = ("", "-wal", "-shm", ".acklog", ".lock")
    """The files of a store at ``path``: ``path + suffix``."""

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
        integrity_check: bool = True,
    ) -> None:
        self._lockfile: Any = None  # first: __del__ releases it even if __init__ raises
        _check_arguments(
            durability,
            batch_size,
            synchronous,
            keep_snapshots,
            checkpoint_interval_s,
            wal_limit_frames,
        )
        self.path = str(path)
        self.durability = durability
        self.batch_size = batch_size
        self.synchronous = synchronous
        self.keep_snapshots = keep_snapshots
        self.checkpoint_interval_s = checkpoint_interval_s
        self.wal_limit_frames = wal_limit_frames
        self.read_only = read_only
        self.integrity_check = integrity_check
        self.check_seconds: float | None = None
        """How long the ``quick_check`` took when the store was opened (``None``: not run —
        a new store, ``integrity_check=False`` or ``":memory:"``)."""
        on_disk = self.path != ":memory:"
        self.real_path = os.path.realpath(self.path) if on_disk else self.path
        """The database file with every symbolic link resolved: its lock, acklog and WAL
        are ``real_path`` + ``.lock`` / ``.acklog`` / ``-wal``."""
        if on_disk:
            parent = Path(self.real_path).parent
            if not parent.is_dir():
                raise ConfigError("store", f"directory {str(parent)!r} does not exist")
            if read_only and not Path(self.path).is_file():
                raise ConfigError("store", f"{self.path!r} does not exist")
            if not read_only:
                self._acquire_writer_lock()
        self._connect()
        self._lock = threading.RLock()
        self._buf_decisions: list[Row] = []
        self._buf_index: dict[str, DecisionRecord] = {}
        self._buf_feedback: list[Row] = []
        self._buf_feedback_index: dict[str, FeedbackRecord] = {}
        self._buf_events: list[Row] = []  # only rows recovered from an acklog
        self._max_seq = self._tables_max_seq()
        self._ack_path = self.real_path + ".acklog"
        self._acklog: AckLog | None = None
        self._ack_d = self._ack_f = 0  # buffered rows before these indexes are in the acklog
        writer = on_disk and not read_only
        self._wal_path = self.real_path + "-wal" if writer else None
        page = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
        self._wal_limit = _WAL_HEADER + wal_limit_frames * (page + _WAL_FRAME_HEADER)  # bytes
        self._wal_check_at = self._wal_limit  # WAL size at which _bound_wal truncates it
        self._busy_timeout_ms = int(self._conn.execute("PRAGMA busy_timeout").fetchone()[0])
        self._checkpointing = threading.Lock()  # this store's checkpoints, one at a time
        if on_disk:
            self._recover_acklog()
            if writer and durability == "feedback":
                self._acklog = AckLog(self._ack_path, datasync=synchronous == "FULL")
        self._closed = False
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if writer:
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="routewise-wal-checkpoint", daemon=True
            )
            self._checkpointer.start()

    @classmethod
    def remove_files(cls, path: str | Path) -> None:
        """Delete every file of the (closed) store at ``path`` (resolved: a symlink's target
        and its siblings); missing ones are skipped."""
        real = os.path.realpath(path)
        for suffix in cls.FILE_SUFFIXES:
            Path(real + suffix).unlink(missing_ok=True)

    # ------------------------------------------------------------------ open
    def _connect(self) -> None:
        """Open the connection: read-only (the schema must exist), or a writer in WAL mode
        that creates the schema. An existing file is verified first (before anything is
        written to it): a routewise store, intact (see :mod:`routewise.state.integrity`)."""
        real = self.real_path
        existed = real != ":memory:" and os.path.exists(real)
        conn: sqlite3.Connection | None = None
        try:
            if self.read_only and real != ":memory:":
                conn = sqlite3.connect(
                    f"file:{real}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                conn = sqlite3.connect(real, isolation_level=None, check_same_thread=False)
            self._conn = conn
            self._db = sqlite_utils.Database(conn)
            if existed:
                self.check_seconds = verify_existing(
                    conn, self.path, quick_check=self.integrity_check, read_only=self.read_only
                )
            if self.read_only:
                return
            if real != ":memory:":
                self._db.enable_wal()
                # checkpoints (the fsync-heavy part of WAL) run on a background thread
                conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            create_schema(self._db, conn, self.path)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            self._release_writer_lock()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StateError(
                    f"store {self.path!r}: cannot open SQLite database ({exc})"
                ) from None
            raise

    def _tables_max_seq(self) -> int:
        return int(
            self._conn.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM decisions), 0), "
                "coalesce((SELECT max(seq) FROM feedback), 0), "
                "coalesce((SELECT max(seq) FROM events), 0))"
            ).fetchone()[0]
        )

    def _recover_acklog(self) -> None:
        """Rows a crashed writer acknowledged but did not commit to the tables: a writer
        commits them now (and empties the acklog); a read-only store serves them from
        memory. The tables always hold a prefix of the sequence, so the acklog rows that
        matter are exactly those past the tables' highest ``seq``."""
        try:
            rows = read_acklog(self._ack_path)
        except OSError as exc:
            raise StateError(
                f"store {self.path!r}: cannot read {self._ack_path!r} ({exc})"
            ) from None
        if rows is None:
            return
        top = self._max_seq
        decisions = [r for r in rows.decisions if r[1] > top]
        feedback = [r for r in rows.feedback if r[1] > top]
        events = [r for r in rows.events if r[0] > top]
        self._buf_decisions.extend(decisions)
        self._buf_feedback.extend(feedback)
        self._buf_events.extend(events)
        self._max_seq = max([top] + [r[1] for r in decisions + feedback] + [r[0] for r in events])
        if self.read_only:
            self._buf_index.update((r[0], decision_from_row(r)) for r in decisions)
            self._buf_feedback_index.update((r[0], feedback_from_row(r)) for r in feedback)
            return
        if rows.bad:
            _log.warning(
                "acklog.torn_lines",
                store=self.path,
                lines=rows.bad,
                detail="lines of an interrupted write were skipped (never acknowledged)",
            )
        self._commit()
        if self.durability == "feedback":
            with open(self._ack_path, "r+b") as fh:
                fh.truncate(0)
        else:  # this writer opens it again only if sync() is called
            os.unlink(self._ack_path)
        if decisions or feedback or events:
            _log.info(
                "acklog.recovered",
                store=self.path,
                decisions=len(decisions),
                feedback=len(feedback),
                events=len(events),
            )

    def _acquire_writer_lock(self) -> None:
        """One writer per store: an advisory ``flock`` on ``<path>.lock`` (see
        :func:`lock_writer`), released by the OS when the process dies."""
        self._lockfile = lock_writer(self.path)

    def _release_writer_lock(self) -> None:
        fh, self._lockfile = self._lockfile, None
        if fh is not None:
            unlock_writer(fh, self.path)

    # ------------------------------------------------------------------- WAL
    def _checkpoint_loop(self) -> None:
        """Every ``checkpoint_interval_s``: commit acklog-backed rows to the tables (so other
        processes see them), then copy the WAL back into the database (PASSIVE: never blocks
        the writer). Keeps checkpoint fsyncs off the decide/feedback path; the writer's
        commits only append to the WAL, which is what makes them survive ``kill -9``. The
        WAL's size is bounded by the writer itself (:meth:`_bound_wal`), not by this thread."""
        # its own connection: a checkpoint in progress never holds up the writer
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=0.1
        )
        try:
            while not self._stop.wait(self.checkpoint_interval_s):
                if self._acklog is not None and self._buffered():
                    with self._lock:
                        if self._closed:
                            break
                        self._commit_acknowledged()
                with self._checkpointing, contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # busy: next round
        finally:
            conn.close()

    def _bound_wal(self) -> None:
        """After a commit: once the WAL file holds ``wal_limit_frames`` frames, run one
        TRUNCATE checkpoint (copy the WAL into the database and cut it to zero bytes).

        Under sustained writes a passive checkpoint never finds the WAL fully copied at the
        moment the writer starts a transaction, so the WAL would never restart and would grow
        without bound. Checking on the write path (one ``stat`` per commit) makes the bound
        hold whatever the scheduling of the background thread: a short stall every
        ``wal_limit_frames`` pages of log (~64 MB by default) in exchange for a bounded file.
        It waits for a passive checkpoint of the background thread to finish (SQLite would
        refuse a second checkpoint at once). A reader (another process) holding an old
        snapshot can make it give up after 100 ms; the writer then tries again once the WAL
        has grown by another ``wal_limit_frames``, so the stall is not repeated per commit."""
        assert self._wal_path is not None
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size < self._wal_check_at:
            return
        conn = self._conn
        busy = 1
        try:
            conn.execute(f"PRAGMA busy_timeout={_TRUNCATE_BUSY_MS}")
            with self._checkpointing:
                row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            busy = 1 if row is None else int(row[0])
        except sqlite3.Error:  # locked: tried again later
            pass
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        self._wal_check_at = size + self._wal_limit if busy else self._wal_limit

    # ------------------------------------------------------------------ meta
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

    # ----------------------------------------------------------------- write
    def log_decision(self, rec: DecisionRecord) -> None:
        row = decision_row(rec)
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
        row = feedback_row(rec)
        with self._lock:
            self._check_open()
            acked = self.durability == "feedback" and self._acklog is not None
            if acked:  # durable once this returns (raises with nothing written)
                self._append_acklog(row)
            self._buf_feedback.append(row)
            self._buf_feedback_index[rec.decision_id] = rec
            if acked:
                self._ack_f = len(self._buf_feedback)
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            if acked:
                if self._buffered() >= self.batch_size:
                    self._commit_acknowledged()
            elif self.durability != "batch" or self._buffered() >= self.batch_size:
                self._commit()

    def sync(self) -> None:
        """Make every record logged so far durable: one acklog line with those that are not
        yet (no table commit); nothing to do when there are none, with
        ``durability="always"``, or for a ``":memory:"`` or read-only store."""
        with self._lock:
            if self._closed or self.read_only or self.durability == "always":
                return
            if self.path == ":memory:":
                return
            self._append_acklog()
            if self._buffered() >= self.batch_size:
                self._commit_acknowledged()

    def _append_acklog(self, feedback: Row | None = None) -> None:
        """Append one acklog line with every buffered record not in the acklog yet (and
        ``feedback``, which the caller buffers next); ``StateError`` if nothing was written."""
        if self._buffered() >= 16 * self.batch_size:
            self._commit()  # the tables keep failing: refuse (nothing written) before the acklog grows further
        decisions = self._buf_decisions[self._ack_d :]
        fbs = self._buf_feedback[self._ack_f :]
        if feedback is not None:
            fbs.append(feedback)
        if not decisions and not fbs:
            return
        try:
            if self._acklog is None:  # "batch": opened by the first sync()
                self._acklog = AckLog(self._ack_path, datasync=self.synchronous == "FULL")
            self._acklog.append(ack_line(decisions, fbs))
        except OSError as exc:
            raise StateError(
                f"store {self.path!r}: write failed ({exc}); nothing was written"
            ) from exc
        self._ack_d = len(self._buf_decisions)
        self._ack_f = len(self._buf_feedback)

    def _commit_acknowledged(self) -> None:
        """Commit buffered rows whose failure is no error: they are in the acklog already
        (and stay there and in the buffer, to be committed later)."""
        try:
            self._commit()
        except StateError as exc:
            _log.warning("store.flush_failed", store=self.path, error=str(exc))

    def log_event(self, rec: EventRecord) -> None:
        row = event_row(rec)
        with self._lock:
            self._check_open()
            if rec.seq > self._max_seq:
                self._max_seq = rec.seq
            self._commit((INSERT_EVENT, row))

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        # no flush: a writer commits each event as it is logged, so reading writes nothing
        with self._lock:
            if limit is None:
                rows = self._conn.execute("SELECT seq, event FROM events ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT seq, event FROM events ORDER BY seq DESC LIMIT ?", (limit,)
                ).fetchall()[::-1]
            if self._buf_events:  # a read-only store: a crashed writer's acklog rows
                rows += self._buf_events
                if limit is not None:
                    rows = rows[max(len(rows) - limit, 0) :]
        return [event_from_row(r) for r in rows]

    def _buffered(self) -> int:
        return len(self._buf_decisions) + len(self._buf_feedback)

    def _commit(self, extra: tuple[str, Row] | None = None) -> None:
        """One transaction with every buffered row (and ``extra``); empties the acklog."""
        if not (self._buf_decisions or self._buf_feedback or self._buf_events or extra):
            return
        conn = self._conn
        try:
            conn.execute("BEGIN")
            if self._buf_decisions:
                conn.executemany(INSERT_DECISION, self._buf_decisions)
            if self._buf_feedback:
                conn.executemany(INSERT_FEEDBACK, self._buf_feedback)
            if self._buf_events:
                conn.executemany(INSERT_EVENT, self._buf_events)
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
        self._buf_events.clear()
        self._ack_d = self._ack_f = 0
        if self._acklog is not None:
            try:
                self._acklog.empty()
            except OSError as exc:  # harmless: rows already in the tables are skipped on recovery
                _log.warning("acklog.truncate_failed", store=self.path, error=str(exc))
        if self._wal_path is not None:
            self._bound_wal()

    def flush(self) -> None:
        with self._lock:
            if not self._closed and not self.read_only:
                self._commit()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"store {self.path!r} is closed")
        if self.read_only:
            raise StateError(f"store {self.path!r} is open read-only")

    # ------------------------------------------------------------------ read
    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        with self._lock:
            rec = self._buf_index.get(decision_id)
            if rec is not None:
                return rec
            row = self._conn.execute(
                f"SELECT {DECISION_COLS} FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return None if row is None else decision_from_row(row)

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        with self._lock:
            rec = self._buf_feedback_index.get(decision_id)
            if rec is not None:
                return rec
            row = self._conn.execute(
                f"SELECT {FEEDBACK_COLS} FROM feedback WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return None if row is None else feedback_from_row(row)

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
        return decode_snapshot(self.path, row[0], row[1])

    def events_since(self, seq: int) -> Iterator[Event]:
        self.flush()
        dcur = self._conn.execute(
            f"SELECT {DECISION_COLS} FROM decisions WHERE seq > ? ORDER BY seq", (seq,)
        )
        fcur = self._conn.execute(
            f"SELECT {FEEDBACK_COLS} FROM feedback WHERE seq > ? ORDER BY seq", (seq,)
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
                yield "decision", decision_from_row(row)
            elif kind == "feedback":
                yield "feedback", feedback_from_row(row)
            else:
                yield "event", event_from_row(row)
        # a read-only store: acknowledged rows a crashed writer left in the acklog
        for ev in self._buffered_events():
            if ev[1].seq > last:
                yield ev

    def _buffered_events(self) -> list[Event]:
        """Buffered records (a read-only store's acklog rows), in sequence order."""
        with self._lock:
            evs: list[Event] = [("decision", r) for r in self._buf_index.values()]
            evs += [("feedback", f) for f in self._buf_feedback_index.values()]
            evs += [("event", event_from_row(e)) for e in self._buf_events]
        evs.sort(key=lambda e: e[1].seq)
        return evs

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        self.flush()
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {DECISION_COLS} FROM decisions ORDER BY seq DESC LIMIT ?", (n,)
            ).fetchall()
            recs = [decision_from_row(r) for r in reversed(rows)]
            top = recs[-1].seq if recs else 0
            recs += sorted(
                (r for r in self._buf_index.values() if r.seq > top), key=lambda r: r.seq
            )
        return recs[-n:] if n > 0 else []

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        self.flush()
        dcols = ", ".join(f"d.{c.strip()}" for c in DECISION_COLS.split(","))
        fcols = ", ".join(f"f.{c.strip()}" for c in FEEDBACK_COLS.split(","))
        sql = (
            f"SELECT {dcols}, {fcols} "
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
            d = decision_from_row(row[:11])
            f = feedback_from_row(row[11:]) if row[11] is not None else fbuf.get(d.decision_id)
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
        # joined outside the lock: the checkpointer may be waiting for it
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._lock:
            if self._checkpointer is not None:
                # may fail if another process is reading; the WAL is checkpointed later
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._conn.close()
            if self._acklog is not None:
                # removed when everything is in the tables
                self._acklog.close(remove=not self._buffered())
                self._acklog = None
            self._release_writer_lock()

    def __del__(self) -> None:
        # an unclosed store must not keep the writer lock (nor warn about the lock file)
        self._release_writer_lock()
