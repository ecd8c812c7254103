"""Streaming reader of logged decision traces: JSON Lines files and routewise SQLite stores.

A trace line (the format the sidecar exports and `replay` reads)::

    {"decision_id": "…", "ts": 1764100000.123, "context": {…}, "arm": "backend/mode",
     "propensity": 0.83, "outcome": {"valid": true, "latency_ms": 812.5, …}, "reward": 0.71}

Only ``arm`` (any non-empty string: arm ids are opaque here, so logs of other systems can be
read) and ``propensity`` (in (0, 1]) are required; ``context`` defaults to ``{}``; unknown
fields are kept. A line with neither ``reward`` nor ``outcome`` is a decision still waiting
for feedback: it is counted as *pending*, not as bad.

:class:`TraceReader` reads the file lazily (constant memory) each time it is iterated, so it
can be read twice (fit, then evaluate). A bad line is skipped and counted, with its line
number kept in :attr:`TraceStats.errors`; with ``strict=True`` it raises :class:`TraceError`
naming the line and the field.

Examples
--------
>>> import io, json, tempfile, os
>>> lines = [{"arm": "a", "propensity": 0.5, "reward": 1.0, "context": {"x": 1}},
...          {"arm": "b", "propensity": 0},
...          {"arm": "b", "propensity": 0.5}]
>>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
>>> with open(path, "w") as fh:
...     _ = fh.write("\\n".join(json.dumps(x) for x in lines) + "\\n")
>>> reader = TraceReader(path)
>>> [(e.line, e.arm, e.reward) for e in reader]
[(1, 'a', 1.0)]
>>> reader.stats.bad, reader.stats.pending, reader.stats.errors
(1, 1, ['line 2: propensity: must be in (0, 1], got 0'])
>>> list(TraceReader(path, strict=True))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
routewise.simulations.trace.TraceError: t.jsonl line 2: propensity: must be in (0, 1], got 0
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routewise.errors import ConfigError, RoutewiseError
from routewise.state import SQLiteStore

__all__ = ["SkippedLines", "TraceError", "TraceEvent", "TraceReader", "TraceStats"]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_KEEP_ERRORS = 20


class TraceError(RoutewiseError, ValueError):
    """A trace line that cannot be used, named by file, line number and field."""

    def __init__(
        self, source: str, line: int, field: str, reason: str, *, unit: str = "line"
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(f"{Path(source).name} {unit} {line}: {field}: {reason}")


@dataclass(slots=True)
class TraceEvent:
    """One usable logged decision (see :class:`TraceReader` for an example)."""

    line: int
    arm: str
    propensity: float
    context: dict[str, Any]
    reward: float | None
    outcome: dict[str, Any] | None
    eligible: list[str] | None
    raw: dict[str, Any]
    """The whole parsed line (unknown fields included)."""


@dataclass(slots=True)
class TraceStats:
    """Counts of the last full pass over a trace: ``lines`` read, usable ``events``, ``bad``
    lines (the first ``errors`` with their line numbers) and ``pending`` (no feedback yet)."""

    lines: int = 0
    events: int = 0
    bad: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "events": self.events,
            "bad": self.bad,
            "pending": self.pending,
            "errors": list(self.errors),
        }


class SkippedLines:
    """Lines the reader accepted but a consumer cannot use (no outcome to fit or to
    recompute a reward from, an invalid outcome, …): counted, with the first messages kept
    as :attr:`TraceStats.errors` keeps the reader's own, or fatal with ``strict``.

    Examples
    --------
    >>> skips = SkippedLines("t.jsonl", strict=False)
    >>> skips.bad(3, "outcome", "is required")
    >>> skips.count, skips.errors
    (1, ['line 3: outcome: is required'])
    >>> SkippedLines("t.jsonl", strict=True, unit="row").bad(3, "outcome", "is required")
    Traceback (most recent call last):
    ...
    routewise.simulations.trace.TraceError: t.jsonl row 3: outcome: is required
    """

    def __init__(self, source: str, *, strict: bool, unit: str = "line") -> None:
        self.source = source
        self.strict = strict
        self.unit = unit
        self.count = 0
        self.errors: list[str] = []

    def bad(self, line: int, field: str, reason: str) -> None:
        """Skip ``line`` because of ``field`` (raise :class:`TraceError` with ``strict``)."""
        if self.strict:
            raise TraceError(self.source, line, field, reason, unit=self.unit)
        self.count += 1
        if len(self.errors) < _KEEP_ERRORS:
            self.errors.append(f"{self.unit} {line}: {field}: {reason}")


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float)


def _check(obj: Any) -> tuple[str, str] | None:
    """``(field, reason)`` of the first problem of a parsed line, or ``None``."""
    if not isinstance(obj, dict):
        return "line", f"must be a JSON object, got {type(obj).__name__}"
    arm = obj.get("arm")
    if not isinstance(arm, str) or not arm:
        return "arm", "is required" if arm is None else f"must be a non-empty string, got {arm!r}"
    p = obj.get("propensity")
    if p is None:
        return "propensity", "is required"
    if not _is_number(p) or not math.isfinite(p) or not 0.0 < p <= 1.0:
        return "propensity", f"must be in (0, 1], got {p!r}"
    ctx = obj.get("context")
    if ctx is not None and not isinstance(ctx, dict):
        return "context", f"must be an object, got {type(ctx).__name__}"
    r = obj.get("reward")
    if r is not None and (not _is_number(r) or not math.isfinite(r)):
        return "reward", f"must be a finite number, got {r!r}"
    out = obj.get("outcome")
    if out is not None and not isinstance(out, dict):
        return "outcome", f"must be an object, got {type(out).__name__}"
    el = obj.get("eligible")
    if el is not None:
        if not isinstance(el, list) or not all(isinstance(a, str) for a in el):
            return "eligible", "must be a list of arm ids"
        if arm not in el:
            return "eligible", f"does not contain the logged arm {arm!r}"
    return None


class TraceReader:
    """Iterate the usable events of a JSONL trace or a routewise SQLite store, lazily.

    Parameters
    ----------
    path
        A ``.jsonl`` file (any name; a file starting with the SQLite header is read as a
        routewise store).
    strict
        Raise :class:`TraceError` at the first bad line instead of skipping it.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
    >>> with open(path, "w") as fh:
    ...     _ = fh.write('{"arm": "x", "propensity": 0.5, "reward": 1, "tenant": "acme"}\\n')
    >>> reader = TraceReader(path)
    >>> [(e.line, e.arm, e.context, e.raw["tenant"]) for e in reader], reader.kind
    ([(1, 'x', {}, 'acme')], 'jsonl')
    """

    def __init__(self, path: str | Path, *, strict: bool = False) -> None:
        self.path = Path(path)
        self.strict = strict
        if not self.path.is_file():
            raise ConfigError("trace", f"file {str(self.path)!r} does not exist")
        with self.path.open("rb") as fh:
            self.kind = "sqlite" if fh.read(16) == _SQLITE_MAGIC else "jsonl"
        self.unit = "row" if self.kind == "sqlite" else "line"
        """How positions are named in messages: JSONL ``line`` numbers, SQLite ``row`` numbers."""
        self.stats = TraceStats()

    def __iter__(self) -> Iterator[TraceEvent]:
        self.stats = TraceStats()
        rows = self._sqlite_rows() if self.kind == "sqlite" else self._jsonl_rows()
        stats = self.stats
        for line, obj in rows:
            stats.lines += 1
            if isinstance(obj, _Bad):
                self._bad(line, obj.field, obj.reason)
                continue
            problem = _check(obj)
            if problem is not None:
                self._bad(line, *problem)
                continue
            reward = obj.get("reward")
            outcome = obj.get("outcome")
            if reward is None and outcome is None:
                stats.pending += 1
                continue
            stats.events += 1
            yield TraceEvent(
                line=line,
                arm=obj["arm"],
                propensity=float(obj["propensity"]),
                context=obj.get("context") or {},
                reward=float(reward) if reward is not None else None,
                outcome=outcome,
                eligible=obj.get("eligible"),
                raw=obj,
            )

    def _bad(self, line: int, field: str, reason: str) -> None:
        if self.strict:
            raise TraceError(str(self.path), line, field, reason, unit=self.unit)
        self.stats.bad += 1
        if len(self.stats.errors) < _KEEP_ERRORS:
            self.stats.errors.append(f"{self.unit} {line}: {field}: {reason}")

    def _jsonl_rows(self) -> Iterator[tuple[int, Any]]:
        loads = json.loads
        with self.path.open("r", encoding="utf-8", errors="replace") as fh:
            for no, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    yield no, loads(text)
                except json.JSONDecodeError as exc:
                    yield no, _Bad("line", f"not valid JSON ({exc.msg} at column {exc.colno})")
                except RecursionError:
                    yield no, _Bad("line", "JSON nested too deeply")

    def _sqlite_rows(self) -> Iterator[tuple[int, Any]]:
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                "trace", f"{str(self.path)!r}: cannot read SQLite file ({exc})"
            ) from None
        if not {"decisions", "feedback"} <= tables:
            raise ConfigError(
                "trace",
                f"{str(self.path)!r} is an SQLite file but not a routewise store (no decisions table)",
            )
        store = SQLiteStore(self.path)
        try:
            yield from enumerate(store.iter_trace(), 1)
        finally:
            store.close()


@dataclass(slots=True)
class _Bad:
    field: str
    reason: str
