"""A read-only view of a store's log up to a sequence number: what the store held then.

``routewise check`` opens two read-only controllers on such views of one store — one
restored from the latest snapshot (the log cut at the snapshot's ``seq``), one rebuilt by
replaying the log from the start with the snapshots hidden — and compares their learned
state; ``routewise backup``'s tests compare a backup with the source cut at the backup's last
record.

Examples
--------
>>> import routewise as rw
>>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
>>> for _ in range(3):
...     d = ctl.decide({"n": 1})
...     _ = ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=5.0, cost_usd=0.0))
>>> view = LogPrefix(ctl.store, 4, snapshots=False)
>>> view.max_seq(), [kind for kind, _ in view.events_since(0)]
(4, ['decision', 'feedback', 'decision', 'feedback'])
>>> len(list(view.iter_trace())), view.latest_snapshot() is None
(2, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from routewise.errors import StateError
from routewise.state.base import (
    DecisionRecord,
    Event,
    EventRecord,
    FeedbackRecord,
    Store,
    trace_line,
)

__all__ = ["LogPrefix"]


class LogPrefix:
    """The records of ``store`` with ``seq <= until`` (a :class:`~routewise.state.base.Store`
    that refuses writes). ``snapshots=False`` hides the snapshots, so a controller opened on
    it replays the log from the start; otherwise the latest snapshot is shown when it is at
    or before ``until`` (else none: the store keeps only its newest ones). The metadata is
    the store's current one. :meth:`close` leaves ``store`` open (it is the caller's).

    Parameters
    ----------
    store
        The store to view (an SQLite or PostgreSQL store, open).
    until
        The last sequence number included.
    snapshots
        Show the latest snapshot at or before ``until`` (default) or none.
    """

    def __init__(self, store: Store, until: int, *, snapshots: bool = True) -> None:
        self._store = store
        self.until = until
        self.snapshots = snapshots
        self.path = getattr(store, "path", "memory")

    # ------------------------------------------------------------------ reads
    def load_meta(self) -> dict[str, Any] | None:
        return self._store.load_meta()

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        rec = self._store.get_decision(decision_id)
        return rec if rec is not None and rec.seq <= self.until else None

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        rec = self._store.get_feedback(decision_id)
        return rec if rec is not None and rec.seq <= self.until else None

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        if not self.snapshots:
            return None
        snap = self._store.latest_snapshot()
        return snap if snap is not None and snap[0] <= self.until else None

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        events = [e for e in self._store.list_events(None) if e.seq <= self.until]
        return events if limit is None else events[max(len(events) - limit, 0) :]

    def events_since(self, seq: int) -> Iterator[Event]:
        for ev in self._store.events_since(seq):
            if ev[1].seq > self.until:
                return
            yield ev

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        recent: deque[DecisionRecord] = deque(maxlen=max(n, 0))
        for kind, rec in self.events_since(0):
            if kind == "decision":
                assert isinstance(rec, DecisionRecord)
                recent.append(rec)
        return list(recent)

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        decisions: list[DecisionRecord] = []
        feedback: dict[str, FeedbackRecord] = {}
        for kind, rec in self.events_since(0):
            if kind == "decision":
                assert isinstance(rec, DecisionRecord)
                if since is None or rec.ts >= since:
                    decisions.append(rec)
            elif kind == "feedback":
                assert isinstance(rec, FeedbackRecord)
                feedback[rec.decision_id] = rec
        for d in decisions:
            yield trace_line(d, feedback.get(d.decision_id))

    def max_seq(self) -> int:
        return min(self._store.max_seq(), self.until)

    # ----------------------------------------------------------------- writes
    def _refuse(self) -> StateError:
        return StateError(
            f"store {self.path!r}: a view of its log up to seq {self.until} is read-only"
        )

    def save_meta(self, meta: dict[str, Any]) -> None:
        raise self._refuse()

    def log_decision(self, rec: DecisionRecord) -> None:
        raise self._refuse()

    def log_feedback(self, rec: FeedbackRecord) -> None:
        raise self._refuse()

    def save_snapshot(self, seq: int, state: dict[str, Any]) -> None:
        raise self._refuse()

    def log_event(self, rec: EventRecord) -> None:
        raise self._refuse()

    def sync(self) -> None:
        """Nothing to make durable."""

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Leaves the viewed store open."""
