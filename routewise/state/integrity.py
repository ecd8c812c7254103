"""Is an existing file a usable routewise SQLite store? What :class:`~routewise.state.sqlite.SQLiteStore`
checks when it opens one, and the offline checks of ``routewise check``.

Opening an existing file (:func:`verify_existing`) refuses, with a :class:`NotAStore`, a file
that is empty, not an SQLite database, or an SQLite database without routewise's tables — it
is never initialised as a new store — and, with a :class:`StoreCorrupt`, a store whose
``PRAGMA quick_check`` finds damage (pages, b-trees, records; ``quick_check`` is
``integrity_check`` without the index-versus-table comparison, linear in the file's size).
``routewise check`` runs the full ``PRAGMA integrity_check`` (:func:`integrity_problems`) and
reads the acknowledgement log (:func:`acklog_summary`).

Examples
--------
>>> import os, sqlite3, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "x.db")
>>> open(path, "wb").close()
>>> conn = sqlite3.connect(path)
>>> verify_existing(conn, path, quick_check=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
routewise.state.integrity.NotAStore: store '.../x.db' exists but is empty (0 bytes), so it is not a routewise store; delete it ...
>>> conn.close()
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass

from routewise.errors import StateError
from routewise.state.acklog import read_acklog

__all__ = [
    "ROUTEWISE_TABLES",
    "AcklogSummary",
    "NotAStore",
    "StoreCorrupt",
    "acklog_summary",
    "integrity_problems",
    "verify_existing",
]

ROUTEWISE_TABLES = frozenset({"meta", "decisions", "feedback", "events", "snapshots"})
"""The tables of a routewise store (:mod:`routewise.state.schema`)."""
_CORE_TABLES = frozenset({"meta", "decisions", "feedback"})  # in every store ever written
_SHOWN_LINES = 3  # problem lines quoted in a refusal


class NotAStore(StateError):
    """An existing file that is not a routewise store (empty, not SQLite, or an SQLite
    database without routewise's tables): refused, never initialised (``.path``)."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        super().__init__(f"store {path!r} {what}")


class StoreCorrupt(StateError):
    """SQLite's integrity check found damage in the store (``.path``, ``.problems``: the
    check's first lines)."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(problems[:_SHOWN_LINES])
        more = f" (and {len(problems) - _SHOWN_LINES} more)" if len(problems) > _SHOWN_LINES else ""
        super().__init__(
            f"store {path!r} is corrupt: {shown}{more}; restore a backup (made with "
            f"`routewise backup`) or inspect it with `routewise check --db {path}`"
        )


def _problems(rows: list[tuple[object, ...]]) -> list[str]:
    """The lines of an ``integrity_check``/``quick_check`` answer (``[]``: ``ok``)."""
    lines = [
        ln
        for r in rows
        for ln in str(r[0]).splitlines()
        if ln.strip() and not ln.startswith("*** in database")  # a heading, not a problem
    ]
    return [] if lines == ["ok"] else lines


def integrity_problems(conn: sqlite3.Connection, *, full: bool = True) -> list[str]:
    """What SQLite's ``PRAGMA integrity_check`` (``full``) or ``quick_check`` reports about
    the database ``conn`` has open: ``[]`` when it is intact. A check that cannot even read
    the file reports its error as the one problem."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        return _problems(conn.execute(f"PRAGMA {pragma}").fetchall())
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


def _tables(conn: sqlite3.Connection, path: str) -> set[str]:
    """The tables of the database; :class:`NotAStore` if it is not SQLite, else
    :class:`StoreCorrupt` if its schema cannot be read."""
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise NotAStore(
                path,
                f"is not an SQLite database ({exc}), so it is not a routewise store (if it "
                "was one, its header is damaged: restore a backup made with `routewise backup`)",
            ) from None
        raise StoreCorrupt(path, [str(exc)]) from None


def verify_existing(
    conn: sqlite3.Connection, path: str, *, quick_check: bool, read_only: bool = False
) -> float | None:
    """Refuse an existing file that is not a routewise store (:class:`NotAStore`) or, with
    ``quick_check``, one whose ``PRAGMA quick_check`` reports damage (:class:`StoreCorrupt`).
    Returns the seconds the check took (``None``: not run). A writer accepts an older store
    without the ``events``/``snapshots`` tables (it creates them); a reader needs all."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    tables = _tables(conn, path)
    if not tables:
        what = (
            "exists but is empty (0 bytes)" if size == 0 else "is an SQLite database with no tables"
        )
        raise NotAStore(
            path,
            f"{what}, so it is not a routewise store; delete it to start a new store there, "
            "or give another path",
        )
    needed = ROUTEWISE_TABLES if read_only else _CORE_TABLES
    missing = needed - tables
    if missing:
        raise NotAStore(
            path,
            f"is an SQLite database but not a routewise store (missing tables "
            f"{sorted(missing)}; it has {sorted(tables)[:8]}); give another path",
        )
    if not quick_check:
        return None
    t0 = time.perf_counter()
    problems = integrity_problems(conn, full=False)
    if problems:
        raise StoreCorrupt(path, problems)
    return time.perf_counter() - t0


@dataclass(frozen=True, slots=True)
class AcklogSummary:
    """What an acknowledgement log holds (``routewise check``): intact and torn lines, and
    its rows past the tables' highest sequence number (acknowledged, not yet in the tables:
    a running writer commits them within its checkpoint interval, a crashed one's next open
    recovers them).

    Examples
    --------
    >>> AcklogSummary(lines=3, bad=1, last_bad=True, decisions=2, feedback=1, events=0).ok
    True
    >>> AcklogSummary(lines=3, bad=1, last_bad=False, decisions=2, feedback=1, events=0).ok
    False
    """

    lines: int = 0
    bad: int = 0
    last_bad: bool = False
    decisions: int = 0
    feedback: int = 0
    events: int = 0
    exists: bool = True

    @property
    def ok(self) -> bool:
        """Only a torn *last* line is expected (a write the process never returned from);
        a bad line before an intact one means an acknowledged record is unreadable."""
        return self.bad == 0 or (self.bad == 1 and self.last_bad)

    @property
    def pending(self) -> int:
        """Rows the tables lack."""
        return self.decisions + self.feedback + self.events


def acklog_summary(path: str, tables_max_seq: int) -> AcklogSummary:
    """Read ``path`` (an acklog; missing or empty: nothing pending) and count its rows past
    ``tables_max_seq``."""
    rows = read_acklog(path)
    if rows is None:
        return AcklogSummary(exists=os.path.exists(path))
    return AcklogSummary(
        lines=rows.lines,
        bad=rows.bad,
        last_bad=rows.last_bad,
        decisions=sum(1 for r in rows.decisions if r[1] > tables_max_seq),
        feedback=sum(1 for r in rows.feedback if r[1] > tables_max_seq),
        events=sum(1 for r in rows.events if r[0] > tables_max_seq),
    )
