"""The PostgreSQL tables of :class:`~routewise.state.postgres.PostgresStore`, their versioned
migrations, the SQL the store runs, and the masking of passwords in connection URLs.

Tables (in the connection's current schema — pick one with libpq's
``options=-csearch_path=NAME`` in the URL)::

    rw_schema(version)                      -- one row: the migration applied last
    rw_meta(key PK, value JSON text)
    rw_counter(one PK, seq)                 -- one row: the last sequence number allocated
    rw_decisions(decision_id UNIQUE, seq PK, ts, arm, propensity, policy, context JSON,
                 features bytea float64, reward_spec JSON, eligible JSON, extra JSON)
    rw_feedback(decision_id UNIQUE, seq PK, ts, outcome JSON, reward, defaulted)
    rw_events(seq PK, ts, arm, event JSON, origin, key UNIQUE)   -- Guardian/operator
    rw_control(seq PK, ts, body JSON, origin)                    -- experiment lifecycle
    rw_snapshots(seq PK, ts, state JSON)

Decision and feedback columns are those of the SQLite store (:mod:`routewise.state.schema`),
in the same order, holding the same encodings (JSON as text, features as float64 bytes), so
the rows of :func:`~routewise.state.schema.decision_row` and
:func:`~routewise.state.schema.feedback_row` go in as they are and a migration is a copy.

Examples
--------
>>> mask_url("postgresql://app:s3cret@db.internal:5432/routewise?sslmode=require")
'postgresql://app:***@db.internal:5432/routewise?sslmode=require'
>>> mask_url("postgresql://app@127.0.0.1/rw?password=s3cret&application_name=x")
'postgresql://app@127.0.0.1/rw?password=***&application_name=x'
>>> [v for v, _ in MIGRATIONS][-1] == SCHEMA_VERSION
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import psycopg
import structlog

from routewise.errors import StateError
from routewise.state.base import ControlRecord, EventRecord
from routewise.state.schema import DECISION_COLS, FEEDBACK_COLS, Row, encode, event_row

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "advisory_key",
    "control_from_row",
    "control_row",
    "ensure_schema",
    "event_from_row",
    "event_row_pg",
    "is_postgres_url",
    "mask_url",
    "secrets_of",
]

_log = structlog.get_logger("routewise.state")

SCHEMA_VERSION = 1

#: (version, DDL statements): applied in order, each version once, in one transaction under
#: an advisory lock (replicas that start together migrate once). Append; never edit.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            "CREATE TABLE rw_schema (version integer NOT NULL)",
            "INSERT INTO rw_schema (version) VALUES (0)",
            "CREATE TABLE rw_meta (key text PRIMARY KEY, value text NOT NULL)",
            "CREATE TABLE rw_counter (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
            "seq bigint NOT NULL)",
            "INSERT INTO rw_counter (one, seq) VALUES (true, 0)",
            "CREATE TABLE rw_decisions (decision_id text NOT NULL, seq bigint PRIMARY KEY, "
            "ts double precision NOT NULL, arm text NOT NULL, "
            "propensity double precision NOT NULL, policy text, context text NOT NULL, "
            "features bytea NOT NULL, reward_spec text, eligible text, extra text)",
            "CREATE UNIQUE INDEX rw_decisions_decision_id ON rw_decisions (decision_id)",
            "CREATE TABLE rw_feedback (decision_id text NOT NULL, seq bigint PRIMARY KEY, "
            "ts double precision NOT NULL, outcome text, reward double precision NOT NULL, "
            "defaulted smallint NOT NULL DEFAULT 0)",
            "CREATE UNIQUE INDEX rw_feedback_decision_id ON rw_feedback (decision_id)",
            "CREATE TABLE rw_events (seq bigint PRIMARY KEY, ts double precision NOT NULL, "
            "arm text NOT NULL, event text NOT NULL, origin text, key text)",
            "CREATE UNIQUE INDEX rw_events_key ON rw_events (key)",
            "CREATE TABLE rw_control (seq bigint PRIMARY KEY, ts double precision NOT NULL, "
            "body text NOT NULL, origin text)",
            "CREATE TABLE rw_snapshots (seq bigint PRIMARY KEY, ts double precision NOT NULL, "
            "state text NOT NULL)",
        ),
    ),
)

# -------------------------------------------------------------------- SQL of the store
CURRENT_SCHEMA = "SELECT current_schema()"
SCHEMA_TABLE = "SELECT to_regclass(format('%I.rw_schema', current_schema()))"
SCHEMA_VERSION_SQL = "SELECT version FROM rw_schema"
SET_VERSION = "UPDATE rw_schema SET version = %s"
XACT_LOCK = "SELECT pg_advisory_xact_lock(%s)"
ALLOCATE = "UPDATE rw_counter SET seq = seq + %s RETURNING seq"
COUNTER = "SELECT seq FROM rw_counter"
NOTIFY = "SELECT pg_notify(%s, seq::text) FROM rw_counter"

# The inserts of an append take each row's sequence number relative to the counter this
# transaction just advanced: ``(SELECT seq FROM rw_counter) + offset`` with offset <= 0, so
# one pipelined round trip allocates and inserts (no wait for the allocation's result).
_NEW_SEQ = "(SELECT seq FROM rw_counter) + %s"
INSERT_DECISION = (
    f"INSERT INTO rw_decisions ({DECISION_COLS}) "
    f"VALUES (%s, {_NEW_SEQ}, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
INSERT_FEEDBACK = (
    f"INSERT INTO rw_feedback ({FEEDBACK_COLS}) VALUES (%s, {_NEW_SEQ}, %s, %s, %s, %s) "
    "ON CONFLICT (decision_id) DO NOTHING RETURNING seq"
)
INSERT_EVENT = (
    f"INSERT INTO rw_events (seq, ts, arm, event, origin, key) "
    f"VALUES ({_NEW_SEQ}, %s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING seq"
)
INSERT_CONTROL = f"INSERT INTO rw_control (seq, ts, body, origin) VALUES ({_NEW_SEQ}, %s, %s, %s)"

EVENT_COLS = "seq, ts, arm, event, origin, key"
CONTROL_COLS = "seq, ts, body, origin"
DECISIONS_AFTER = f"SELECT {DECISION_COLS} FROM rw_decisions WHERE seq > %s ORDER BY seq LIMIT %s"
FEEDBACK_AFTER = f"SELECT {FEEDBACK_COLS} FROM rw_feedback WHERE seq > %s ORDER BY seq LIMIT %s"
EVENTS_AFTER = f"SELECT {EVENT_COLS} FROM rw_events WHERE seq > %s ORDER BY seq LIMIT %s"
CONTROL_AFTER = f"SELECT {CONTROL_COLS} FROM rw_control WHERE seq > %s ORDER BY seq LIMIT %s"
DECISION_BY_ID = f"SELECT {DECISION_COLS} FROM rw_decisions WHERE decision_id = %s"
FEEDBACK_BY_ID = f"SELECT {FEEDBACK_COLS} FROM rw_feedback WHERE decision_id = %s"
RECENT_DECISIONS = f"SELECT {DECISION_COLS} FROM rw_decisions ORDER BY seq DESC LIMIT %s"
ALL_EVENTS = f"SELECT {EVENT_COLS} FROM rw_events ORDER BY seq"
LAST_EVENTS = f"SELECT {EVENT_COLS} FROM rw_events ORDER BY seq DESC LIMIT %s"
LOAD_META = "SELECT value FROM rw_meta WHERE key = 'config'"
SAVE_META = (
    "INSERT INTO rw_meta (key, value) VALUES ('config', %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
SAVE_SNAPSHOT = (
    "INSERT INTO rw_snapshots (seq, ts, state) VALUES (%s, %s, %s) "
    "ON CONFLICT (seq) DO UPDATE SET ts = excluded.ts, state = excluded.state"
)
PRUNE_SNAPSHOTS = (
    "DELETE FROM rw_snapshots WHERE seq NOT IN "
    "(SELECT seq FROM rw_snapshots ORDER BY seq DESC LIMIT %s)"
)
LATEST_SNAPSHOT = "SELECT seq, state FROM rw_snapshots ORDER BY seq DESC LIMIT 1"
TRACE = (
    "SELECT "
    + ", ".join(f"d.{c.strip()}" for c in DECISION_COLS.split(","))
    + ", "
    + ", ".join(f"f.{c.strip()}" for c in FEEDBACK_COLS.split(","))
    + " FROM rw_decisions d LEFT JOIN rw_feedback f ON f.decision_id = d.decision_id"
)
TABLES = ("rw_decisions", "rw_feedback", "rw_events", "rw_control", "rw_snapshots", "rw_meta")


def advisory_key(schema: str, name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` in ``schema`` (stores in different
    schemas of one database do not share locks).

    >>> advisory_key("public", "append") == advisory_key("public", "append")
    True
    >>> advisory_key("public", "append") != advisory_key("tenant_b", "append")
    True
    """
    digest = hashlib.blake2b(f"routewise:{schema}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def channel_name(schema: str) -> str:
    """The NOTIFY channel of the store in ``schema``: ``routewise_log`` in ``public``, else
    ``routewise_log.<schema>`` (a NOTIFY must not wake the replicas of another store, whose
    sequence numbers are another count)."""
    return "routewise_log" if schema == "public" else f"routewise_log.{schema}"[:63]


# -------------------------------------------------------------------------- rows
def event_row_pg(rec: EventRecord) -> Row:
    """The ``rw_events`` row of a record: ``(seq, ts, arm, event JSON, origin, key)``."""
    return (*event_row(rec), rec.origin, rec.key)


def event_from_row(row: Sequence[Any]) -> EventRecord:
    """The record of an ``rw_events`` row (:data:`EVENT_COLS`)."""
    return EventRecord(int(row[0]), json.loads(row[3]), row[4], row[5])


def control_row(rec: ControlRecord) -> Row:
    """The ``rw_control`` row of a record: ``(seq, ts, body JSON, origin)``.

    >>> control_row(ControlRecord(7, 1.5, {"op": "start", "name": "e"}, "r1"))
    (7, 1.5, '{"op":"start","name":"e"}', 'r1')
    """
    return (rec.seq, float(rec.ts), encode(rec.body), rec.origin)


def control_from_row(row: Sequence[Any]) -> ControlRecord:
    """The record of an ``rw_control`` row (:data:`CONTROL_COLS`)."""
    return ControlRecord(int(row[0]), float(row[1]), json.loads(row[2]), row[3])


# --------------------------------------------------------------------------- URLs
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/?#@]*):([^@/?#]*)@", re.IGNORECASE)
_PARAM_PASSWORD = re.compile(r"((?:^|[?&\s])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)")


def is_postgres_url(value: object) -> bool:
    """Whether ``value`` is a ``postgresql://`` or ``postgres://`` connection URL.

    >>> is_postgres_url("postgres://db/rw"), is_postgres_url("routewise.db")
    (True, False)
    """
    return isinstance(value, str) and value.lower().startswith(("postgresql://", "postgres://"))


def mask_url(url: str) -> str:
    """``url`` with any password (``user:PASSWORD@`` or ``password=``) replaced by ``***``."""
    masked = _URL_PASSWORD.sub(r"\1:***@", url)
    return _PARAM_PASSWORD.sub(r"\1***", masked)


def secrets_of(url: str) -> list[str]:
    """The password texts in ``url`` (as written and URL-decoded), longest first, to scrub
    them from error messages that might quote the connection string."""
    found: list[str] = []
    m = _URL_PASSWORD.match(url)
    if m and m.group(2):
        found.append(m.group(2))
    found += [v.strip("'") for _, v in _PARAM_PASSWORD.findall(url) if v.strip("'")]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def ensure_schema(conn: psycopg.Connection[Any], path: str, *, read_only: bool) -> str:
    """Check (``read_only``) or create/migrate the tables in the current schema of ``conn``
    (an autocommit connection); returns the schema's name. Migrations run in one transaction
    under an advisory lock, so replicas that start at once migrate once."""
    schema = conn.execute(CURRENT_SCHEMA).fetchone()
    if schema is None or schema[0] is None:
        raise StateError(
            f"store {path!r}: no schema to use (the search_path names none that exists)"
        )
    name = str(schema[0])
    if read_only:
        _check_version(path, name, _version(conn), read_only=True)
        return name
    with conn.transaction():
        conn.execute(XACT_LOCK, (advisory_key(name, "migrate"),))
        current = _version(conn)
        _check_version(path, name, current, read_only=False)
        for version, statements in MIGRATIONS:
            if version > (current or 0):
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute(SET_VERSION, (version,))
                _log.info("pgstore.migrated", store=path, schema=name, version=version)
    return name


def _version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema version of the store in the current schema (``None``: no store there)."""
    row = conn.execute(SCHEMA_TABLE).fetchone()
    if row is None or row[0] is None:
        return None
    got = conn.execute(SCHEMA_VERSION_SQL).fetchone()
    return int(got[0]) if got is not None else 0


def _check_version(path: str, schema: str, version: int | None, *, read_only: bool) -> None:
    if version is None:
        if read_only:
            raise StateError(
                f"store {path!r}: not a routewise store (no rw_schema table in schema "
                f"{schema!r}); open it once without read_only to create one"
            )
        return
    if version > SCHEMA_VERSION:
        raise StateError(
            f"store {path!r}: schema version {version} is newer than this routewise supports "
            f"({SCHEMA_VERSION}); upgrade routewise"
        )
    if read_only and version < SCHEMA_VERSION:
        raise StateError(
            f"store {path!r}: schema version {version} is older than this routewise's "
            f"({SCHEMA_VERSION}); open it once without read_only to migrate it"
        )
