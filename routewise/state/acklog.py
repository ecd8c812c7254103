"""The acknowledgement log ``<db>.acklog``: how the SQLite store makes records durable
without a table commit.

One acknowledgement is one ``write(2)`` of one line, ``\\n<crc32 hex> <json>``, holding every
record logged since the previous line (``fdatasync``-ed too with ``synchronous="FULL"``). The
kernel keeps a returned ``write`` when the process dies, so an appended line survives
``kill -9``; a line torn by a write the process never returned from fails its checksum and is
skipped (it was never acknowledged). Each line starts with a newline, so a torn line cannot
swallow the next one. The store empties the log after every table commit, so it only ever
holds the rows the tables do not have yet (see :class:`~routewise.state.sqlite.SQLiteStore`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from routewise.state.schema import Row, dumps, encode

__all__ = ["AckLog", "AckRows", "ack_line", "parse_acklog", "read_acklog"]

_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync
_q: Any = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C speed-up)


@dataclass
class AckRows:
    """The rows of an acklog's intact lines, how many lines were torn (``bad``), how many
    lines there were and whether the last one was torn (``routewise check``: only a torn
    *last* line is expected)."""

    decisions: list[Row] = field(default_factory=list)
    feedback: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)
    bad: int = 0
    lines: int = field(default=0, compare=False)
    last_bad: bool = field(default=False, compare=False)


def ack_line(
    decisions: Sequence[Row], feedback: Sequence[Row] = (), events: Sequence[Row] = ()
) -> bytes:
    """One acklog line: ``<crc32 hex> [[decision rows],[feedback rows],[event rows]]``.

    Built by hand from the rows the tables get (:mod:`routewise.state.schema`), so the JSON
    texts they already hold (context, reward spec, eligible arms, extra, outcome, event) are
    embedded as JSON rather than escaped again as strings; the feature blob is base64. Floats
    are finite (validated upstream), so ``repr`` is their exact JSON form.

    Examples
    --------
    >>> d = ("id1", 1, 0.5, "a:m/direct_emit", 1.0, "squarecb", '{"n":1}', b"\\0" * 8,
    ...      None, None, None)
    >>> f = ("id1", 2, 0.75, '{"valid":true}', 0.25, 0)
    >>> e = (3, 1.5, "a:m/direct_emit", '{"ts":1.5,"arm":"a:m/direct_emit"}')
    >>> line = ack_line([d], [f], [e])
    >>> parse_acklog(b"\\n" + line) == AckRows([d], [f], [e], 0)
    True
    >>> rows = parse_acklog(b"\\n" + ack_line([d]) + b"\\n" + line[:-3])  # decision-only, torn
    >>> rows.decisions == [d], rows.feedback, rows.bad, rows.lines, rows.last_bad
    (True, [], 1, 2, True)
    """
    # list comprehensions, not generators: join() builds a list anyway (hot path)
    ds = ",".join(
        [
            f"[{_q(r[0])},{r[1]},{r[2]!r},{_q(r[3])},{r[4]!r},{_q(r[5])},{r[6]},"
            f'"{base64.b64encode(r[7]).decode("ascii")}",{r[8] or "null"},{r[9] or "null"},'
            f"{r[10] or 'null'}]"
            for r in decisions
        ]
    )
    fs = ",".join(
        [f"[{_q(f[0])},{f[1]},{f[2]!r},{f[3] or 'null'},{f[4]!r},{f[5]}]" for f in feedback]
    )
    es = ",".join([f"[{e[0]},{e[1]!r},{_q(e[2])},{e[3]}]" for e in events]) if events else ""
    payload = f"[[{ds}],[{fs}],[{es}]]".encode()
    return b"%08x %b" % (zlib.crc32(payload), payload)


def _parse_line(line: bytes) -> tuple[list[Row], list[Row], list[Row]]:
    """The rows of one line; ``ValueError``/``TypeError``/``IndexError`` when it is torn."""
    crc, _, payload = line.partition(b" ")
    if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
        raise ValueError("checksum mismatch")
    parts = json.loads(payload)
    if len(parts) == 2:  # the first format: [[decision rows], one feedback row]
        parts = [parts[0], [parts[1]], []]
    rows, fbs, evs = parts
    if any(len(r) != 11 for r in rows) or any(len(f) != 6 for f in fbs):
        raise ValueError("wrong row width")
    if any(len(e) != 4 for e in evs):
        raise ValueError("wrong row width")
    decisions = [
        (
            *r[:6],
            encode(r[6]),
            base64.b64decode(r[7], validate=True),
            dumps(r[8]),
            dumps(r[9]),
            dumps(r[10]),
        )
        for r in rows
    ]
    feedback = [(*f[:3], dumps(f[3]), *f[4:]) for f in fbs]
    events = [(*e[:3], encode(e[3])) for e in evs]
    return decisions, feedback, events


def parse_acklog(data: bytes) -> AckRows:
    """The rows of an acklog's intact lines, and how many lines were bad (a torn last line
    from a write cut short by the process dying)."""
    out = AckRows()
    for line in data.split(b"\n"):
        if not line:
            continue
        out.lines += 1
        try:
            decisions, feedback, events = _parse_line(line)
        except (ValueError, TypeError, IndexError):
            out.bad += 1
            out.last_bad = True
            continue
        out.last_bad = False
        out.decisions += decisions
        out.feedback += feedback
        out.events += events
    return out


def read_acklog(path: str) -> AckRows | None:
    """The rows of the acklog at ``path``, ``None`` when there is none (``OSError`` when it
    cannot be read)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    return parse_acklog(data) if data else None


class AckLog:
    """An acklog open for appending; :meth:`append` is durable once it returns.

    Parameters
    ----------
    path
        The file (created ``0666 & ~umask`` like the database if missing).
    datasync
        ``fdatasync`` after every append (``synchronous="FULL"``: survives power loss).

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "s.db.acklog")
    >>> log = AckLog(path, datasync=False)
    >>> log.append(ack_line([], [("id1", 2, 0.75, None, 0.25, 1)]))
    >>> read_acklog(path).feedback
    [('id1', 2, 0.75, None, 0.25, 1)]
    >>> log.empty(); log.size, os.path.getsize(path)
    (0, 0)
    >>> log.close(remove=True); os.path.exists(path)
    False
    """

    def __init__(self, path: str, *, datasync: bool) -> None:
        self.path = path
        self.datasync = datasync
        self.fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        self.size = 0  # bytes appended since the log was last emptied

    def append(self, line: bytes) -> None:
        """Append one line (durable on return); on ``OSError`` nothing was appended."""
        assert self.fd is not None
        data = b"\n" + line
        try:
            n = os.write(self.fd, data)
            while n < len(data):
                n += os.write(self.fd, data[n:])
            if self.datasync:
                _datasync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise
        self.size += len(data)

    def empty(self) -> None:
        """Truncate to zero bytes (the tables hold every row now); may raise ``OSError``."""
        if self.size and self.fd is not None:
            os.ftruncate(self.fd, 0)
            self.size = 0

    def close(self, *, remove: bool) -> None:
        """Close the file; ``remove`` deletes it too (the tables hold every row)."""
        if self.fd is None:
            return
        os.close(self.fd)
        self.fd = None
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
