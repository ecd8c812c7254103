"""The connections of a :class:`~routewise.state.postgres.PostgresStore`: the pool its
appends and reads use, the ``LISTEN`` connection :meth:`~PgConnections.wait` blocks on and the
leader session of :meth:`~PgConnections.try_lead`, with the error handling they share (a
``StateError`` naming the operation and the password-masked URL; one retry after a broken
connection when the operation is idempotent).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from routewise.errors import StateError
from routewise.state import pgschema as q

__all__ = ["Conn", "PgConnections", "rollback"]

_log = structlog.get_logger("routewise.state")

_T = TypeVar("_T")
Conn = psycopg.Connection[tuple[Any, ...]]
_SLICE_S = 0.25  # wait() checks for close() this often
_MAX_BACKOFF_S = 1.0
_IDLE = TransactionStatus.IDLE


class PgConnections:
    """Connections to the database at ``url`` (see the module docstring); the base of
    :class:`~routewise.state.postgres.PostgresStore`, which documents the arguments.

    Examples
    --------
    >>> PgConnections("postgres://u:pw@127.0.0.1:1/x", read_only=True, pool_size=1,
    ...               connect_timeout=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.StateError: store 'postgres://u:***@127.0.0.1:1/x': connect failed (...)
    """

    origin: str  # this replica's id (set by the subclass)

    def __init__(
        self, url: str, *, read_only: bool, pool_size: int, connect_timeout: float
    ) -> None:
        self._closed = True  # until the pool is open: close() has nothing to do
        self._url = url
        self._secrets = q.secrets_of(url)
        self.path = q.mask_url(url)
        self.read_only = read_only
        self.pool_size = pool_size
        self.connect_timeout = float(connect_timeout)
        self._listen_lock = threading.Lock()
        self._lead_lock = threading.Lock()
        self._head_lock = threading.Lock()
        self._head = 0
        self._connected = False
        self._listen_conn: Conn | None = None
        self._lead_conn: Conn | None = None
        self._leading = False
        self._backoff = 0.0
        self.schema = self._prepare_database()
        self._append_key = q.advisory_key(self.schema, "append")
        self._lead_key = q.advisory_key(self.schema, "lead")
        self._channel = q.channel_name(self.schema)
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            kwargs={"autocommit": True, "connect_timeout": self._libpq_timeout()},
            min_size=1,
            max_size=pool_size,
            timeout=self.connect_timeout,
            name="routewise",
            open=False,
        )
        self._pool.open(wait=False)
        self._closed = False

    # ------------------------------------------------------------------ open
    def _libpq_timeout(self, limit: float | None = None) -> int:
        """libpq's ``connect_timeout`` (whole seconds, at least 2)."""
        t = self.connect_timeout if limit is None else min(limit, self.connect_timeout)
        return max(2, math.ceil(t))

    def _connect(self, limit: float | None = None) -> Conn:
        """A new autocommit connection outside the pool."""
        conn: Conn = psycopg.connect(
            self._url, autocommit=True, connect_timeout=self._libpq_timeout(limit)
        )
        return conn

    def _prepare_database(self) -> str:
        """Connect once (a bad URL or a server that is down fails here, at once), check the
        schema version and create/migrate the tables (never when read-only)."""
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            raise self._error("connect", exc) from None
        with conn:
            try:
                schema = q.ensure_schema(conn, self.path, read_only=self.read_only)
            except psycopg.Error as exc:
                raise self._error("schema check", exc) from None
        self._connected = True
        return schema

    def _error(self, op: str, exc: BaseException, suffix: str = "") -> StateError:
        """A ``StateError`` naming the operation and the masked URL (the password, should the
        driver's message quote it, is scrubbed)."""
        if isinstance(exc, PoolTimeout):
            detail = (
                f"no connection within {self.connect_timeout:g} s; is PostgreSQL up and reachable?"
            )
        else:
            detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
            detail = detail or type(exc).__name__
        for s in self._secrets:
            detail = detail.replace(s, "***")
        return StateError(f"store {self.path!r}: {op} failed ({detail}){suffix}")

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"store {self.path!r} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise StateError(f"store {self.path!r} is open read-only")

    # ------------------------------------------------------------- connections
    def _run(self, op: str, fn: Callable[[Conn], _T]) -> _T:
        """``fn`` on a pooled connection. A connection error (not a pool timeout) is retried
        once, after the pool has dropped its broken connections: ``fn`` must be idempotent."""
        self._check_open()
        for attempt in (0, 1):
            try:
                with self._pool.connection() as conn:
                    try:
                        out = fn(conn)
                    except BaseException:
                        rollback(conn)
                        raise
            except (PoolTimeout, PoolClosed) as exc:
                self._connected = False
                raise self._error(op, exc) from None
            except psycopg.OperationalError as exc:
                self._connected = False
                if attempt == 0:
                    self._pool.check()
                    continue
                raise self._error(op, exc) from None
            except psycopg.Error as exc:
                raise self._error(op, exc) from None
            self._connected = True
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled (autocommit) connection, for maintenance tools such as
        ``routewise migrate``; psycopg errors are the caller's to handle."""
        self._check_open()
        with self._pool.connection() as conn:
            yield conn

    @property
    def connected(self) -> bool:
        """``False`` after a connection error, until the next successful round trip."""
        return self._connected

    @property
    def head(self) -> int:
        """The highest sequence number seen in a NOTIFY or read from the log (no I/O)."""
        return self._head

    def _see(self, seq: int) -> None:
        with self._head_lock:
            if seq > self._head:
                self._head = seq

    # ------------------------------------------------------------ notifications
    def wait(self, timeout: float) -> bool:
        """Block until a NOTIFY of an append commit arrives (``True``) or ``timeout`` seconds
        pass (``False``). Also ``True`` at once when the (re)opened ``LISTEN`` connection finds
        the log past :attr:`head` (a commit may have come while nobody listened). Read the
        log after every return. Never raises for connection errors: it sleeps a short
        backoff (bounded by ``timeout``) and returns ``False`` (opening the connection to a
        server that does not answer may take ``connect_timeout``, libpq's minimum 2 s)."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._closed:
            return False
        with self._listen_lock:
            try:
                conn = self._listen_conn
                if conn is None or conn.closed:
                    conn = self._listen_conn = self._connect(deadline - time.monotonic())
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    row = conn.execute(q.COUNTER).fetchone()
                    self._connected = True
                    self._backoff = 0.0
                    if row is not None and int(row[0]) > self._head:
                        return True
                return self._wait_notify(conn, deadline)
            except psycopg.Error as exc:
                self._drop_listen()
                self._connected = False
                if not self._backoff:  # once per outage, not on every retry
                    err = str(self._error("listen", exc))
                    _log.warning("pgstore.listen_failed", store=self.path, error=err)
                self._backoff = min(max(self._backoff * 2, 0.05), _MAX_BACKOFF_S)
                time.sleep(max(0.0, min(self._backoff, deadline - time.monotonic())))
                return False

    def _wait_notify(self, conn: Conn, deadline: float) -> bool:
        while not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            got = False
            for n in conn.notifies(timeout=min(remaining, _SLICE_S), stop_after=1):
                got = self._note(n.channel, n.payload) or got
            if got:
                for n in conn.notifies(timeout=0):  # those that came in the same packet
                    self._note(n.channel, n.payload)
                return True
        return False

    def _note(self, channel: str, payload: str) -> bool:
        if channel != self._channel:
            return False
        with contextlib.suppress(ValueError):
            self._see(int(payload))
        return True

    def _drop_listen(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    # ------------------------------------------------------------------ lead
    def try_lead(self) -> bool:
        """``True`` while this store holds the leader lock (a session advisory lock on its
        own connection: the one replica that takes snapshots); tries to take it when not
        held. ``False`` on connection errors (the lock died with the connection), read-only
        or closed."""
        if self.read_only or self._closed:
            return False
        with self._lead_lock:
            try:
                conn = self._lead_conn
                if conn is not None and self._leading:
                    conn.execute("SELECT 1")  # our session is alive, so the lock is ours
                    self._connected = True
                    return True
                if conn is None or conn.closed:
                    conn = self._lead_conn = self._connect()
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lead_key,)).fetchone()
                self._connected = True
                self._leading = bool(row and row[0])
                if self._leading:
                    _log.info("pgstore.lead_acquired", store=self.path, origin=self.origin)
                return self._leading
            except psycopg.Error as exc:
                if self._leading:
                    _log.warning(
                        "pgstore.lead_lost",
                        store=self.path,
                        origin=self.origin,
                        error=str(self._error("lead", exc)),
                    )
                self._leading = False
                self._connected = False
                conn, self._lead_conn = self._lead_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                return False

    def _close_connections(self) -> None:
        """Close the pool, the ``LISTEN`` and the leader connections (releasing the leader
        lock)."""
        self._closed = True
        self._pool.close()
        with self._listen_lock:
            self._drop_listen()
        with self._lead_lock:
            conn, self._lead_conn = self._lead_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    if self._leading:  # at once: the session's end is processed later
                        conn.execute("SELECT pg_advisory_unlock(%s)", (self._lead_key,))
                    conn.close()
            self._leading = False


def rollback(conn: Conn) -> None:
    """End a transaction a failure left open (nothing to do when the connection is gone)."""
    if conn.closed or conn.info.transaction_status == _IDLE:
        return
    with contextlib.suppress(psycopg.Error):
        conn.execute("ROLLBACK")
