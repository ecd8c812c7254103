"""Persistence behind the :class:`~routewise.state.base.Store` protocol.

``store=None`` → :class:`MemoryStore`; ``store="path.db"`` → :class:`SQLiteStore` (WAL).
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
