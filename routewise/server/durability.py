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

from routewise.errors import StateError
from routewise.state.base import Store

__all__ = ["Barrier", "GroupCommit", "group_commit", "store_barrier"]


def store_barrier(store: Store) -> Callable[[], None]:
    """The call that makes everything the store was given so far durable: ``store.sync``
    (for SQLite, one acklog line holding every record not yet durable — the same mechanism
    that acknowledges a library ``feedback()``; the rows reach the tables in batches)."""
    return store.sync


class Barrier:
    """A barrier that is already passed: the store commits every write on its own."""

    __slots__ = ()

    async def durable(self) -> None:
        """Return once everything written so far is durable (here: at once)."""


class GroupCommit(Barrier):
    """One ``commit()`` per event-loop turn, shared by every handler that awaits
    :meth:`durable` in that turn; a failed commit fails them all with a ``StateError``."""

    __slots__ = ("_commit", "_waiters")

    def __init__(self, commit: Callable[[], None]) -> None:
        self._commit = commit
        self._waiters: list[asyncio.Future[None]] | None = None

    async def durable(self) -> None:
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


def group_commit(store: Store) -> Barrier:
    """The barrier for ``store``: none needed in ``"always"`` durability, else a group commit."""
    if getattr(store, "durability", "always") == "always":
        return Barrier()
    return GroupCommit(store_barrier(store))
