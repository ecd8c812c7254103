"""Persistence behind the :class:`~routewise.state.base.Store` protocol.

``store=None`` → :class:`MemoryStore`; ``store="path.db"`` → :class:`SQLiteStore` (WAL).

* :mod:`~routewise.state.base` — the ``Store`` protocol and its records.
* :mod:`~routewise.state.memory` — :class:`MemoryStore`.
* :mod:`~routewise.state.sqlite` — :class:`SQLiteStore` (one writer, WAL, snapshots);
  :mod:`~routewise.state.schema` its tables and rows; :mod:`~routewise.state.acklog` the
  append-only acknowledgement log (one checksummed line per ``feedback()`` or ``sync()``)
  that makes an acknowledged record survive ``kill -9``.
* :mod:`~routewise.state.postgres` — :class:`PostgresStore` (``store="postgresql://…"``):
  one shared log for replicated sidecars, sequence numbers assigned at commit;
  :mod:`~routewise.state.pgschema` its tables and versioned migrations,
  :mod:`~routewise.state.pgconn` its connections (pool, ``LISTEN``, leader lock),
  :mod:`~routewise.state.pgmigrate` the copy of an SQLite store into it. It needs psycopg
  (``pip install routewise[postgres]``), imported only when it is used.
"""

from typing import Any

from routewise.state.base import DecisionRecord, Durability, EventRecord, FeedbackRecord, Store
from routewise.state.memory import MemoryStore
from routewise.state.sqlite import SQLiteStore

__all__ = [
    "DecisionRecord",
    "Durability",
    "EventRecord",
    "FeedbackRecord",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Store",
]


def __getattr__(name: str) -> Any:
    """``PostgresStore`` on first use (psycopg is an optional dependency)."""
    if name == "PostgresStore":
        from routewise.state.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
