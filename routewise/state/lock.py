"""The one-writer lock of a :class:`~routewise.state.sqlite.SQLiteStore`.

An exclusive, non-blocking ``flock`` on ``<path>.lock`` (the file holds ``pid N`` for the
refusal message), where ``<path>`` is the store's *resolved* path (``os.path.realpath``:
symbolic links followed, ``..`` removed), so a second name of the same database — a symlink,
a relative path — finds the same lock. The OS releases it when the process dies, so ``kill -9`` can leave the file
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
>>> link = os.path.join(os.path.dirname(path), "link.db"); os.symlink(path, link)
>>> try:
...     lock_writer(link)  # another name of the same file
... except StoreInUse as exc:
...     print(exc.path == link)
True
>>> unlock_writer(fh, path); os.path.exists(path + ".lock")
False
"""

from __future__ import annotations

import errno
import os
from typing import IO

from routewise.errors import StateError

__all__ = ["StoreInUse", "lock_path", "lock_writer", "unlock_writer"]


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


def lock_path(path: str) -> str:
    """The lock file of the store at ``path``: ``<resolved path>.lock``.

    >>> import os, tempfile
    >>> d = os.path.realpath(tempfile.mkdtemp())
    >>> lock_path(os.path.join(d, "sub", "..", "x.db")) == os.path.join(d, "x.db.lock")
    True
    """
    return os.path.realpath(path) + ".lock"


def lock_writer(path: str) -> IO[str]:
    """Take the one-writer lock of the store at ``path`` (``<resolved path>.lock``, see the
    module docstring); raise :class:`StoreInUse` (naming ``path``) if another process holds
    it."""
    import fcntl

    lock_file = lock_path(path)
    while True:
        fh = open(lock_file, "a+")  # noqa: SIM115 - held until unlock_writer
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise StoreInUse(path, holder) from None
            raise StateError(f"store {path!r}: cannot lock {lock_file!r} ({exc})") from None
        if _same_file(fh, lock_file):
            break
        fh.close()  # a closing writer deleted this file after we opened it: take the new one
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def unlock_writer(fh: IO[str], path: str) -> None:
    """Release the lock :func:`lock_writer` returned: delete the lock file while still
    holding it (a writer that stopped cleanly leaves no lock file), then close it. The file
    is the one that was locked (``fh.name``), even if ``path`` resolves elsewhere by now."""
    lock_file = fh.name if isinstance(fh.name, str) else lock_path(path)
    try:
        if _same_file(fh, lock_file):  # never a successor's file (ours deleted by hand)
            os.unlink(lock_file)
    except OSError:
        pass  # left behind: harmless, the next writer locks it
    finally:
        fh.close()  # closing the descriptor releases the flock
