"""The one-writer lock of a :class:`~routewise.state.sqlite.SQLiteStore`.

An exclusive, non-blocking ``flock`` on ``<path>.lock`` (the file holds ``pid N`` for the
refusal message). The OS releases it when the process dies, so ``kill -9`` can leave the file
but never a held lock; a clean release deletes the file while still holding the lock.

Deleting a lock file races with a process that opened it just before: that process may then
lock the deleted file while a third one creates and locks a new one — two writers. So a lock
counts only if the locked file is still the one at ``<path>.lock``; otherwise it is dropped
and the new file is opened and locked instead (the usual lock-file protocol).

Examples
--------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "x.db")
>>> fh = lock_writer(path)
>>> try:
...     lock_writer(path)
... except StoreInUse as exc:
...     print(exc.holder == f"pid {os.getpid()}")
True
>>> unlock_writer(fh, path); os.path.exists(path + ".lock")
False
"""

from __future__ import annotations

import errno
import os
from typing import IO

from routewise.errors import StateError

__all__ = ["StoreInUse", "lock_writer", "unlock_writer"]


class StoreInUse(StateError):
    """Another process holds the store's writer lock (``.path``; ``.holder``: ``"pid N"``)."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"store {path!r} is in use by {holder} (one writer at a time). If that is a running "
            "sidecar (`routewise serve`), send the change to it over HTTP instead; operator "
            "actions need its bearer token (ROUTEWISE_TOKEN=<secret>, or token in "
            "routewise.toml; a sidecar started without one refuses them: restart it with "
            "one). Otherwise stop that process first, or open the store read-only to query it."
        )


def _same_file(fh: IO[str], path: str) -> bool:
    """Whether ``fh`` is still the file at ``path`` (not deleted nor replaced)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fh.fileno())
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def lock_writer(path: str) -> IO[str]:
    """Take the one-writer lock of the store at ``path`` (``<path>.lock``, see the module
    docstring); raise :class:`StoreInUse` if another process holds it."""
    import fcntl

    lock_path = path + ".lock"
    while True:
        fh = open(lock_path, "a+")  # noqa: SIM115 - held until unlock_writer
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StoreInUse(path, holder) from None
            raise StateError(f"store {path!r}: cannot lock {lock_path!r} ({exc})") from None
        if _same_file(fh, lock_path):
            break
        fh.close()  # a closing writer deleted this file after we opened it: take the new one
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def unlock_writer(fh: IO[str], path: str) -> None:
    """Release the lock :func:`lock_writer` returned: delete ``<path>.lock`` while still
    holding it (a writer that stopped cleanly leaves no lock file), then close it."""
    try:
        if _same_file(fh, path + ".lock"):  # never a successor's file (ours deleted by hand)
            os.unlink(path + ".lock")
    except OSError:
        pass  # left behind: harmless, the next writer locks it
    finally:
        fh.close()  # closing the descriptor releases the flock
