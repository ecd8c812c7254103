"""Group commit: a write is acknowledged only once it is durable.

Every handler that wrote awaits :meth:`Barrier.durable` before answering. With a store in
``"always"`` durability every write is already committed, so the barrier is a no-op; otherwise
the first handler in an event-loop turn schedules one ``store.sync()`` (``call_soon``), which
runs after every handler already runnable in that turn and makes all their records durable
with one acklog line (one ``write(2)``; the rows reach the SQLite tables in batches). So with
any durability mode an acknowledged decision, feedback or operator action survives
``kill -9``.

Examples
--------
>>> import asyncio
>>> from routewise.state.memory import MemoryStore
>>> barrier = group_commit(MemoryStore())
>>> asyncio.run(barrier.durable())
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from routewise.errors import StateError
from routewise.state.base import Store

_T = TypeVar("_T")

__all__ = ["Barrier", "GroupCommit", "ThreadedGroupCommit", "group_commit", "store_barrier"]


def store_barrier(store: Store) -> Callable[[], None]:
    """The call that makes everything the store was given so far durable: ``store.sync``
    (for SQLite, one acklog line holding every record not yet durable — the same mechanism
    that acknowledges a library ``feedback()``; the rows reach the tables in batches)."""
    return store.sync


class Barrier:
    """A barrier that is already passed: the store commits every write on its own."""

    __slots__ = ()

    def mark(self) -> int:
        """Taken by a handler *before* it writes; handed to :meth:`durable` (only a shared
        store's barrier uses it: see :class:`ThreadedGroupCommit`)."""
        return 0

    async def durable(self, mark: int | None = None) -> None:
        """Return once everything written so far is durable (here: at once)."""

    async def write(self, action: Callable[[], _T]) -> _T:
        """Run ``action`` (a controller call that writes) and return its result once what it
        wrote is durable: :meth:`mark` before, :meth:`durable` after — the protocol every
        acknowledging handler follows."""
        mark = self.mark()
        result = action()
        await self.durable(mark)
        return result


class GroupCommit(Barrier):
    """One ``commit()`` per event-loop turn, shared by every handler that awaits
    :meth:`durable` in that turn; a failed commit fails them all with a ``StateError``."""

    __slots__ = ("_commit", "_waiters")

    def __init__(self, commit: Callable[[], None]) -> None:
        self._commit = commit
        self._waiters: list[asyncio.Future[None]] | None = None

    async def durable(self, mark: int | None = None) -> None:
        """Return once this turn's commit (which includes the caller's writes) succeeded."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._waiters is None:
            self._waiters = [fut]
            loop.call_soon(self._flush)
        else:
            self._waiters.append(fut)
        await fut

    def _flush(self) -> None:
        waiters, self._waiters = self._waiters or [], None
        try:
            self._commit()
        except Exception as exc:  # a failed commit: nobody gets an acknowledgement
            for f in waiters:
                if not f.done():
                    f.set_exception(StateError(f"commit failed: {exc}"))
            return
        for f in waiters:
            if not f.done():
                f.set_result(None)


class ThreadedGroupCommit(Barrier):
    """Group commit for a store whose commit is a network round trip (PostgreSQL): the
    commit runs on a worker thread, so the event loop keeps serving while it is in flight,
    and the requests that arrive meanwhile share the *next* commit. At most one commit is in
    flight; a failed commit fails the handlers waiting for it.

    Any thread may commit the store's buffer (the replica's follower does, for the Guardian's
    transitions), so the commit that carried a handler's records is not always the one it
    waits for. Hence :meth:`mark`: the store's count of failed commits, taken before the
    handler writes; if it has changed when the handler's commit is done, one of the failed
    commits may have carried its records, and the handler gets a ``StateError`` (503) — never
    an acknowledgement of something that may be lost. (A retry is safe: a decision that did
    commit is merely never fed back; a feedback that did is answered as a duplicate.)

    Examples
    --------
    >>> import asyncio
    >>> commits = []
    >>> barrier = ThreadedGroupCommit(lambda: commits.append(1))
    >>> async def main() -> None:
    ...     await asyncio.gather(*(barrier.durable() for _ in range(5)))
    >>> asyncio.run(main())
    >>> len(commits)   # five handlers, one commit
    1
    """

    __slots__ = ("_commit", "_failures", "_inflight", "_next")

    def __init__(self, commit: Callable[[], None], failures: Callable[[], int] = int) -> None:
        self._commit = commit
        self._failures = failures
        self._next: list[asyncio.Future[None]] = []
        self._inflight = False

    def mark(self) -> int:
        return self._failures()

    async def durable(self, mark: int | None = None) -> None:
        """Return once a commit that started after the caller's writes succeeded (and, given
        the caller's :meth:`mark`, no commit failed since it was taken)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._next.append(fut)
        if not self._inflight:
            self._inflight = True
            loop.call_soon(self._start, loop)
        await fut
        if mark is not None and self._failures() != mark:
            raise StateError(
                "commit failed: the shared store lost a commit that may have carried this "
                "request's records; nothing was acknowledged, retry"
            )

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        waiters, self._next = self._next, []
        task = loop.run_in_executor(None, self._commit)
        task.add_done_callback(lambda t: self._done(loop, waiters, t))

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        waiters: list[asyncio.Future[None]],
        task: asyncio.Future[None],
    ) -> None:
        exc = task.exception()
        for f in waiters:
            if f.done():
                continue
            if exc is None:
                f.set_result(None)
            else:
                f.set_exception(
                    exc if isinstance(exc, StateError) else StateError(f"commit failed: {exc}")
                )
        if self._next:  # handlers that wrote while this commit was in flight
            loop.call_soon(self._start, loop)
        else:
            self._inflight = False


def group_commit(store: Store) -> Barrier:
    """The barrier for ``store``: none needed in ``"always"`` durability, a commit on a worker
    thread for a shared (network) store, else a group commit per event-loop turn."""
    if getattr(store, "durability", "always") == "always":
        return Barrier()
    if getattr(store, "shared", False):
        return ThreadedGroupCommit(store_barrier(store), lambda: int(store.failed_commits))  # type: ignore[attr-defined]
    return GroupCommit(store_barrier(store))
