"""The SQLite store's tables and the rows records become.

Schema (created with sqlite-utils, written on the hot path with prepared statements)::

    meta(key PK, value JSON)
    decisions(seq INTEGER PK, decision_id UNIQUE, ts, arm, propensity, policy, context JSON,
              features BLOB float64, reward_spec JSON, eligible JSON, extra JSON)
    feedback(seq INTEGER PK, decision_id UNIQUE, ts, outcome JSON, reward, defaulted)
    events(seq INTEGER PK, ts, arm, event JSON)  -- Guardian / operator health transitions
    snapshots(seq PK, ts, state JSON)          -- the newest ``keep_snapshots`` are kept

A *row* is the tuple of column values in the order of the ``INSERT_*`` statements below: the
tables get them with ``executemany`` and the acknowledgement log
(:mod:`routewise.state.acklog`) stores them, so one encoding serves both.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlite_utils

from routewise.errors import StateError
from routewise.state.base import DecisionRecord, EventRecord, FeedbackRecord, json_default

__all__ = [
    "DECISION_COLS",
    "FEEDBACK_COLS",
    "INSERT_DECISION",
    "INSERT_EVENT",
    "INSERT_FEEDBACK",
    "SCHEMA_VERSION",
    "Row",
    "check_schema",
    "create_schema",
    "decision_from_row",
    "decision_row",
    "dumps",
    "encode",
    "event_from_row",
    "event_row",
    "feedback_from_row",
    "feedback_row",
]

SCHEMA_VERSION = 1

Row = tuple[Any, ...]  # one table row: column values in the order of its INSERT statement

DECISION_COLS = (
    "decision_id, seq, ts, arm, propensity, policy, context, features, reward_spec, eligible, extra"
)
FEEDBACK_COLS = "decision_id, seq, ts, outcome, reward, defaulted"
INSERT_DECISION = (
    f"INSERT INTO decisions ({DECISION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_FEEDBACK = f"INSERT INTO feedback ({FEEDBACK_COLS}) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_EVENT = "INSERT INTO events (seq, ts, arm, event) VALUES (?, ?, ?, ?)"

# json.dumps(obj, separators=(",", ":")) without building an encoder per call (same output)
encode = json.JSONEncoder(separators=(",", ":"), default=json_default).encode


def dumps(obj: Any) -> str | None:
    """Compact JSON text of ``obj``, ``None`` for ``None`` (a NULL column)."""
    return None if obj is None else encode(obj)


def decision_row(rec: DecisionRecord) -> Row:
    """The ``decisions`` row of a record (JSON texts, float64 feature blob).

    Examples
    --------
    >>> rec = DecisionRecord("id1", 1, 0.5, {"n": 1}, "a:m/direct_emit", 1.0, [0.0], "squarecb")
    >>> row = decision_row(rec)
    >>> row[6], len(row[7])
    ('{"n":1}', 8)
    >>> decision_from_row(row) == rec
    True
    """
    return (
        rec.decision_id,
        rec.seq,
        rec.ts,
        rec.arm,
        rec.propensity,
        rec.policy,
        encode(rec.context),
        np.asarray(rec.features, dtype=np.float64).tobytes(),
        dumps(rec.reward_spec),
        dumps(rec.eligible),
        dumps(rec.extra) if rec.extra else None,
    )


def decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    """The record of a ``decisions`` row (features come back as a list)."""
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


def feedback_row(rec: FeedbackRecord) -> Row:
    """The ``feedback`` row of a record."""
    return (
        rec.decision_id,
        rec.seq,
        rec.ts,
        None if rec.outcome is None else encode(rec.outcome),
        rec.reward,
        int(rec.defaulted),
    )


def feedback_from_row(row: Sequence[Any]) -> FeedbackRecord:
    """The record of a ``feedback`` row."""
    return FeedbackRecord(
        decision_id=row[0],
        seq=int(row[1]),
        ts=float(row[2]),
        outcome=json.loads(row[3]) if row[3] is not None else None,
        reward=float(row[4]),
        defaulted=bool(row[5]),
    )


def event_row(rec: EventRecord) -> Row:
    """The ``events`` row of a record: ``(seq, ts, arm, event JSON)``."""
    return (rec.seq, float(rec.event["ts"]), rec.event["arm"], encode(rec.event))


def event_from_row(row: Sequence[Any]) -> EventRecord:
    """The record of an ``events`` row (or of its ``(seq, event JSON)`` columns)."""
    return EventRecord(int(row[0]), json.loads(row[-1]))


def check_schema(db: sqlite_utils.Database, path: str) -> None:
    """Refuse a database that is not a routewise store."""
    missing = {"meta", "decisions", "feedback", "events", "snapshots"} - set(db.table_names())
    if missing:
        raise StateError(f"store {path!r}: not a routewise store (missing {sorted(missing)})")


def create_schema(db: sqlite_utils.Database, conn: sqlite3.Connection, path: str) -> None:
    """Create the tables (if missing) and check the schema version."""
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
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
            (json.dumps(SCHEMA_VERSION),),
        )
    elif json.loads(row[0]) != SCHEMA_VERSION:
        raise StateError(
            f"store {path!r}: schema version {row[0]} is not supported (expected {SCHEMA_VERSION})"
        )
