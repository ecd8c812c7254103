"""A consistent copy of an SQLite store while a sidecar writes it (``routewise backup``).

The tables are copied with SQLite's online backup API (:meth:`sqlite3.Connection.backup`) from
a read-only connection that takes no writer lock: one backup step, one read transaction, so
the copy is the tables as one commit left them (WAL mode: the writer goes on meanwhile). A
running writer acknowledges records in its acklog (``<db>.acklog``) and commits them to the
tables in batches (every ``checkpoint_interval_s``, 0.25 s by default), so at any moment the
acknowledged records are the tables plus the acklog. The acklog is therefore read *first*,
then the tables are copied, and the acklog rows past the copy's highest sequence number are
added to it: a record acknowledged before the backup started is either still in that acklog
read, or was committed (and only then removed from the acklog) before the copy's snapshot.
The copy holds the log up to some sequence number with no hole — a prefix of the source's.

The copy is written next to the target as a temporary file, checked (``PRAGMA
quick_check``), fsync-ed and renamed over the target, so the target is the whole copy or
absent. An existing target (or a store's leftover ``-wal``/``-shm``/``.acklog`` next to it,
which SQLite or the next writer would apply to the copy) is replaced only with
``force=True``, under the target's writer lock (refused while a writer has it open).

Examples
--------
>>> import os, tempfile
>>> import routewise as rw
>>> d = tempfile.mkdtemp()
>>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], store=os.path.join(d, "s.db"))
>>> _ = ctl.decide({"n": 1})
>>> ctl.store.sync()  # acknowledged: in the acklog, not yet in the tables
>>> report = backup_sqlite(os.path.join(d, "s.db"), os.path.join(d, "copy.db"))
>>> report.decisions, report.from_acklog, sorted(os.listdir(d))[0]
(1, 1, 'copy.db')
>>> ctl.close()
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from routewise.errors import ConfigError
from routewise.state.acklog import AckRows, read_acklog
from routewise.state.integrity import StoreCorrupt, integrity_problems, verify_existing
from routewise.state.lock import lock_writer, unlock_writer
from routewise.state.schema import INSERT_DECISION, INSERT_EVENT, INSERT_FEEDBACK

__all__ = ["BackupReport", "backup_sqlite"]

_SIBLINGS = ("-wal", "-shm", "-journal", ".acklog")  # a store's files besides the database


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What :func:`backup_sqlite` copied: rows per table (the acklog's included), how many
    came from the acklog, the last sequence number, the copy's size and the time taken."""

    source: str
    target: str
    decisions: int
    feedback: int
    events: int
    snapshots: int
    from_acklog: int
    max_seq: int
    bytes: int
    seconds: float


def _check_paths(source: str, target: str, force: bool) -> tuple[str, str]:
    """The resolved source and target; ``ConfigError`` naming ``--db`` / ``--out``."""
    src = os.path.realpath(source)
    if not os.path.isfile(src):
        raise ConfigError("--db", f"{source!r} does not exist (expected a routewise SQLite store)")
    dst = os.path.realpath(target)
    if dst == src or (os.path.exists(dst) and os.path.samefile(src, dst)):
        raise ConfigError("--out", f"{target!r} is the store itself; give another file")
    if os.path.isdir(dst):
        raise ConfigError("--out", f"{target!r} is a directory; give a file name")
    if not os.path.isdir(os.path.dirname(dst)):
        raise ConfigError("--out", f"directory {os.path.dirname(dst)!r} does not exist")
    present = [dst + s for s in ("", *_SIBLINGS) if os.path.exists(dst + s)]
    if present and not force:
        names = ", ".join(os.path.basename(p) for p in present)
        raise ConfigError("--out", f"{target!r} exists ({names}); give --force to replace it")
    return src, dst


def _add_acklog_rows(conn: sqlite3.Connection, rows: AckRows) -> int:
    """Insert the acklog rows the copied tables lack (past their highest ``seq``)."""
    top = int(
        conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM decisions), 0), "
            "coalesce((SELECT max(seq) FROM feedback), 0), "
            "coalesce((SELECT max(seq) FROM events), 0))"
        ).fetchone()[0]
    )
    decisions = [r for r in rows.decisions if r[1] > top]
    feedback = [r for r in rows.feedback if r[1] > top]
    events = [r for r in rows.events if r[0] > top]
    conn.execute("BEGIN")
    conn.executemany(INSERT_DECISION, decisions)
    conn.executemany(INSERT_FEEDBACK, feedback)
    conn.executemany(INSERT_EVENT, events)
    conn.execute("COMMIT")
    return len(decisions) + len(feedback) + len(events)


def _copy(source: str, src: str, tmp: str) -> tuple[int, dict[str, int]]:
    """Copy the store at ``src`` into the new file ``tmp``: acklog first, then the tables
    (see the module docstring); returns the acklog rows added and the row counts."""
    acked = read_acklog(src + ".acklog") or AckRows()
    reader = sqlite3.connect(f"file:{src}?mode=ro", uri=True, isolation_level=None)
    try:
        verify_existing(reader, source, quick_check=False, read_only=True)
        out = sqlite3.connect(tmp, isolation_level=None)
        try:
            reader.backup(out)  # pages=-1: every page in one step, one read transaction
            out.execute("PRAGMA journal_mode=DELETE")  # no -wal next to the temporary file
            added = _add_acklog_rows(out, acked)
            problems = integrity_problems(out, full=False)
            if problems:
                raise StoreCorrupt(source, problems)
            counts = {
                t: int(out.execute(f"SELECT count(*) FROM {t}").fetchone()[0])
                for t in ("decisions", "feedback", "events", "snapshots")
            }
            counts["max_seq"] = int(
                out.execute(
                    "SELECT max(coalesce((SELECT max(seq) FROM decisions), 0), "
                    "coalesce((SELECT max(seq) FROM feedback), 0), "
                    "coalesce((SELECT max(seq) FROM events), 0))"
                ).fetchone()[0]
            )
            out.execute("PRAGMA journal_mode=WAL")  # as the sidecar keeps its stores
        finally:
            out.close()
    finally:
        reader.close()
    return added, counts


def _install(tmp: str, dst: str, target: str) -> None:
    """fsync ``tmp`` and rename it to ``dst`` under the target's writer lock, removing a
    previous store's leftover files first."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    lock = lock_writer(target)  # StoreInUse while a writer has the target open
    try:
        for suffix in _SIBLINGS:
            Path(dst + suffix).unlink(missing_ok=True)
        os.replace(tmp, dst)
        dir_fd = os.open(os.path.dirname(dst), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        unlock_writer(lock, target)


def backup_sqlite(source: str | Path, target: str | Path, *, force: bool = False) -> BackupReport:
    """Copy the SQLite store ``source`` to ``target`` consistently, even while a sidecar
    writes it (see the module docstring); ``force`` replaces an existing ``target``.
    Refusals: ``ConfigError`` (paths), ``NotAStore`` / ``StoreCorrupt`` (the source),
    ``StoreInUse`` (a writer holds ``target``)."""
    t0 = time.perf_counter()
    src, dst = _check_paths(str(source), str(target), force)
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.tmp-{os.getpid()}")
    try:
        added, counts = _copy(str(source), src, tmp)
        _install(tmp, dst, str(target))
    except BaseException:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(tmp + suffix)
        raise
    return BackupReport(
        source=str(source),
        target=str(target),
        decisions=counts["decisions"],
        feedback=counts["feedback"],
        events=counts["events"],
        snapshots=counts["snapshots"],
        from_acklog=added,
        max_seq=counts["max_seq"],
        bytes=os.path.getsize(dst),
        seconds=time.perf_counter() - t0,
    )
