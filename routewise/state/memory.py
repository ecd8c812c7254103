"""In-memory store: the default for ``store=None`` (tests, simulations, notebooks)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

from routewise.state.base import DecisionRecord, Event, EventRecord, FeedbackRecord, trace_line

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keeps every record in process memory; nothing survives the process.

    Examples
    --------
    >>> from routewise.state import MemoryStore
    >>> s = MemoryStore()
    >>> s.max_seq(), s.latest_snapshot()
    (0, None)
    """

    def __init__(self) -> None:
        self._meta: dict[str, Any] | None = None
        self._decisions: dict[str, DecisionRecord] = {}
        self._feedback: dict[str, FeedbackRecord] = {}
        self._order: list[tuple[int, str, str]] = []  # (seq, kind, decision_id or event index)
        self._events: list[EventRecord] = []
        self._snapshot: tuple[int, str] | None = None
        self._max_seq = 0

    def load_meta(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._meta)

    def save_meta(self, meta: dict[str, Any]) -> None:
        self._meta = copy.deepcopy(meta)

    def log_decision(self, rec: DecisionRecord) -> None:
        # keep our own copy of the caller's context (SQLite serializes it on the spot)
        rec.context = dict(rec.context)
        self._decisions[rec.decision_id] = rec
        self._order.append((rec.seq, "d", rec.decision_id))
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def log_feedback(self, rec: FeedbackRecord) -> None:
        self._feedback[rec.decision_id] = rec
        self._order.append((rec.seq, "f", rec.decision_id))
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def log_event(self, rec: EventRecord) -> None:
        self._order.append((rec.seq, "e", str(len(self._events))))
        self._events.append(rec)
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        return list(self._events if limit is None else self._events[-limit:] if limit else [])

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        return self._decisions.get(decision_id)

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        return self._feedback.get(decision_id)

    def save_snapshot(self, seq: int, state: dict[str, Any]) -> None:
        self._snapshot = (seq, json.dumps(state))

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        if self._snapshot is None:
            return None
        seq, text = self._snapshot
        return seq, json.loads(text)

    def events_since(self, seq: int) -> Iterator[Event]:
        for s, kind, did in self._order:
            if s <= seq:
                continue
            if kind == "d":
                yield "decision", self._decisions[did]
            elif kind == "f":
                yield "feedback", self._feedback[did]
            else:
                yield "event", self._events[int(did)]

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        out: list[DecisionRecord] = []
        for _, kind, did in reversed(self._order):
            if len(out) >= n:
                break
            if kind == "d":
                out.append(self._decisions[did])
        return out[::-1]

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        for _, kind, did in self._order:
            if kind != "d":
                continue
            d = self._decisions[did]
            if since is not None and d.ts < since:
                continue
            yield trace_line(d, self._feedback.get(did))

    def max_seq(self) -> int:
        return self._max_seq

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
