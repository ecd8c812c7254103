"""In-memory store: the default for ``store=None`` (tests, simulations, notebooks)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

from routewise.state.base import DecisionRecord, Event, EventRecord, FeedbackRecord, trace_line

__all__ = ["MemoryStore"]

# decision_id, seq, ts, arm, propensity, features, policy
_DecisionRow = tuple[str, int, float, str, float, Any, str]
# reward_spec, eligible, extra (only for decisions that have any of them)
_DecisionExtras = tuple[dict[str, Any] | None, list[str] | None, dict[str, Any] | None]
_NO_EXTRAS: _DecisionExtras = (None, None, None)
# decision_id, seq, ts, reward, defaulted
_FeedbackRow = tuple[str, int, float, float, bool]


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
        # Records are kept as flat tuples of numbers, strings and the feature array (plus
        # the context/outcome dicts of plain values beside them): objects the garbage
        # collector does not track, so a long in-memory log does not make every full
        # collection slower and more frequent (it did: ~9 µs per simulated round).
        self._decisions: dict[str, _DecisionRow] = {}
        self._contexts: dict[str, dict[str, Any]] = {}
        self._decision_extras: dict[str, _DecisionExtras] = {}
        self._feedback: dict[str, _FeedbackRow] = {}
        self._outcomes: dict[str, dict[str, Any]] = {}
        self._order: list[tuple[int, str, str]] = []  # (seq, kind, decision_id or event index)
        self._events: list[EventRecord] = []
        self._snapshot: tuple[int, str] | None = None
        self._max_seq = 0

    def load_meta(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._meta)

    def save_meta(self, meta: dict[str, Any]) -> None:
        self._meta = copy.deepcopy(meta)

    def log_decision(self, rec: DecisionRecord) -> None:
        did = rec.decision_id
        self._decisions[did] = (
            did,
            rec.seq,
            rec.ts,
            rec.arm,
            rec.propensity,
            rec.features,
            rec.policy,
        )
        # keep our own copy of the caller's context (SQLite serializes it on the spot)
        self._contexts[did] = dict(rec.context)
        if rec.reward_spec is not None or rec.eligible is not None or rec.extra:
            self._decision_extras[did] = (rec.reward_spec, rec.eligible, rec.extra)
        self._order.append((rec.seq, "d", did))
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def log_feedback(self, rec: FeedbackRecord) -> None:
        did = rec.decision_id
        self._feedback[did] = (did, rec.seq, rec.ts, rec.reward, rec.defaulted)
        if rec.outcome is not None:
            self._outcomes[did] = rec.outcome
        self._order.append((rec.seq, "f", did))
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def _decision(self, did: str) -> DecisionRecord:
        did, seq, ts, arm, propensity, features, policy = self._decisions[did]
        reward_spec, eligible, extra = self._decision_extras.get(did, _NO_EXTRAS)
        return DecisionRecord(
            decision_id=did,
            seq=seq,
            ts=ts,
            context=self._contexts[did],
            arm=arm,
            propensity=propensity,
            features=features,
            policy=policy,
            reward_spec=reward_spec,
            eligible=eligible,
            extra=extra if extra is not None else {},
        )

    def _feedback_record(self, did: str) -> FeedbackRecord:
        did, seq, ts, reward, defaulted = self._feedback[did]
        return FeedbackRecord(did, seq, ts, self._outcomes.get(did), reward, defaulted)

    def log_event(self, rec: EventRecord) -> None:
        self._order.append((rec.seq, "e", str(len(self._events))))
        self._events.append(rec)
        if rec.seq > self._max_seq:
            self._max_seq = rec.seq

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        return list(self._events if limit is None else self._events[-limit:] if limit else [])

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        return self._decision(decision_id) if decision_id in self._decisions else None

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        return self._feedback_record(decision_id) if decision_id in self._feedback else None

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
                yield "decision", self._decision(did)
            elif kind == "f":
                yield "feedback", self._feedback_record(did)
            else:
                yield "event", self._events[int(did)]

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        out: list[DecisionRecord] = []
        for _, kind, did in reversed(self._order):
            if len(out) >= n:
                break
            if kind == "d":
                out.append(self._decision(did))
        return out[::-1]

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        for _, kind, did in self._order:
            if kind != "d":
                continue
            d = self._decision(did)
            if since is not None and d.ts < since:
                continue
            yield trace_line(d, self.get_feedback(did))

    def max_seq(self) -> int:
        return self._max_seq

    def sync(self) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None
