"""Persistence behind the :class:`~routewise.state.base.Store` protocol.

``store=None`` → :class:`MemoryStore`; ``store="path.db"`` → :class:`SQLiteStore` (WAL).

* :mod:`~routewise.state.base` — the ``Store`` protocol and its records.
* :mod:`~routewise.state.memory` — :class:`MemoryStore`.
* :mod:`~routewise.state.sqlite` — :class:`SQLiteStore` (one writer, WAL, snapshots);
  :mod:`~routewise.state.schema` its tables and rows; :mod:`~routewise.state.acklog` the
  append-only acknowledgement log (one checksummed line per ``feedback()`` or ``sync()``)
  that makes an acknowledged record survive ``kill -9``.
"""

from routewise.state.base import DecisionRecord, Durability, EventRecord, FeedbackRecord, Store
from routewise.state.memory import MemoryStore
from routewise.state.sqlite import SQLiteStore

__all__ = [
    "DecisionRecord",
    "Durability",
    "EventRecord",
    "FeedbackRecord",
    "MemoryStore",
    "SQLiteStore",
    "Store",
]
