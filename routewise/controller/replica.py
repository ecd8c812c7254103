"""Replicas that learn as one: a Controller on a *shared* store applies the shared log.

Several sidecars (replicas) share one PostgreSQL store
(:class:`~routewise.state.postgres.PostgresStore`). The log — decisions, feedback, Guardian and
operator events, experiment steps — is the truth, in the order of its sequence numbers (the
store assigns them at commit, in commit order). A replica's request path only *reads* its local
state and *appends* to the log:

* ``decide`` featurizes the context without learning from it, draws an arm from the local
  policy (with its exact propensity) and appends the decision;
* ``feedback`` computes the reward and appends the feedback (the database keeps the first
  feedback per decision; a second one is dropped, so learning stays exactly once);
* operator actions and experiment steps are applied at once and appended.

Everything that *learns* happens in the :class:`Follower` thread, which applies every record of
the log — this replica's and the others' — in sequence order, exactly once: a decision teaches
the featurizer and the recent traffic mix, a feedback updates the policy, the per-arm statistics,
the experiments and the Guardian's health models. It is woken by the store's LISTEN/NOTIFY
(``store.wait``), with polling as the fallback. So replicas that applied the same prefix of the
log hold the same featurizer and policy: the same updates, from the same starting state, in the
same order — bit for bit when they started from the same snapshot; a replica restored from a
snapshot while others learned incrementally may differ in the last bits where a policy
recomputes a cached inverse on restore (the tests allow a relative 1e-9).

The Guardian's health models are fed by the whole log, so every replica reaches the same
transition at the same point; each records it with a key (arm, new state, and the log position
of the arm's previous transition), and the store keeps one copy. Transitions are counted when
they come back through the log, and the controller's listeners (webhooks) are told of one there
by the replica whose record the store kept — once across the replicas. One replica at a time
(``store.try_lead()``) takes snapshots.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, TypedDict

import numpy as np
import structlog

from routewise.controller.persistence import LearningState, Pending, log_transition
from routewise.errors import StateError
from routewise.state.base import (
    ControlRecord,
    DecisionRecord,
    Event,
    EventRecord,
    FeedbackRecord,
)
from routewise.types import FeedbackResult, GuardianEvent

__all__ = ["LAG_BUCKETS", "Follower", "Replica", "ReplicationStatus"]

_log = structlog.get_logger("routewise")

LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds (seconds) of the apply-lag histogram: record time → applied on this replica."""

_OWN_MAX = 10_000  # own decisions remembered until applied (replication lag x decide rate)
_BATCH = 200  # records applied per hold of the controller lock (bounds a decide's wait)


class ReplicationStatus(TypedDict):
    """What ``Controller.replication()`` reports (a plain dict, JSON-ready)."""

    origin: str | None
    applied_seq: int
    head_seq: int
    lag_s: float
    connected: bool
    leader: bool
    lag_buckets: list[float]
    lag_counts: list[int]
    lag_sum: float
    lag_count: int


class Replica(LearningState):
    """The shared-log half of the Controller (a base class; inert on a single-writer store).

    Examples
    --------
    >>> import routewise as rw
    >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
    >>> ctl.replication() is None   # a memory store is not shared
    True
    """

    _shared: bool
    _origin: str | None
    _follower: Follower | None
    _arm_event_seq: dict[str, int]
    _expiring: dict[str, float]
    _lag_counts: list[int]
    _lag_sum: float
    _lag_recent: deque[float]
    _caught_up_at: float
    _unsettled: dict[int, tuple[FeedbackResult, FeedbackRecord]]
    _applying: bool
    _own: dict[str, Pending]
    _follower_wrote: bool

    def _init_replica(self) -> None:
        self._shared = bool(getattr(self._store, "shared", False))
        self._origin = getattr(self._store, "origin", None) if self._shared else None
        self._follower = None
        self._arm_event_seq = {}
        self._expiring = {}
        self._lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self._lag_sum = 0.0
        self._lag_recent = deque(maxlen=4096)
        self._caught_up_at = time.time()
        self._unsettled = {}
        self._applying = False
        self._follower_wrote = False
        self._own = {}

    def _start_follower(self, poll_s: float = 0.5) -> None:
        if self._shared and not self.read_only and self._follower is None:
            self._follower = Follower(self, poll_s)
            self._follower.start()

    def _stop_follower(self) -> None:
        if self._follower is not None:
            self._follower.stop()
            self._follower = None

    # ------------------------------------------------------------------ applying
    def catch_up(self, limit: int = _BATCH) -> int:
        """Apply every record appended to the shared log since the last one applied; returns
        how many were applied (0 on a single-writer store). The :class:`Follower` calls this;
        tests and tools may too."""
        if not self._shared:
            return 0
        read = self._store.read_page  # type: ignore[attr-defined]
        total = 0
        while True:
            records: list[Event]
            records, position = read(self._seq, limit)
            with self._lock:
                if self._closed:
                    return total
                self._applying = True
                try:
                    for kind, rec in records:
                        if rec.seq > self._seq:  # never twice, even if two callers raced
                            self._apply_record(kind, rec)
                            self._seq = rec.seq
                finally:
                    self._applying = False
                # past the numbers of dropped duplicates at the end (no record fills them)
                self._seq = max(self._seq, position)
                if records:
                    self._maybe_snapshot()
            total += len(records)
            if len(records) < limit:
                self._caught_up_at = time.time()
                return total

    def _apply_record(self, kind: str, rec: Any) -> None:
        now = time.time()
        if kind == "decision":
            assert isinstance(rec, DecisionRecord)
            self._own.pop(rec.decision_id, None)  # pending from now on
            self._replay_decision(rec)
            self._recent.append(np.asarray(rec.features, dtype=np.float64))
            self._observe_lag(now - rec.ts)
        elif kind == "feedback":
            assert isinstance(rec, FeedbackRecord)
            self._replay_feedback(rec)
            self._expiring.pop(rec.decision_id, None)
            self._observe_lag(now - rec.ts)
        elif kind == "event":
            assert isinstance(rec, EventRecord)
            self._apply_event(rec)
        elif kind == "control":
            assert isinstance(rec, ControlRecord)
            self._apply_control(rec)

    def _apply_event(self, rec: EventRecord) -> None:
        ev = GuardianEvent.from_dict(rec.event)
        self._arm_event_seq[ev.arm] = rec.seq
        mine = rec.origin is not None and rec.origin == self._origin
        if mine and self._listeners:  # once across the replicas: the one that made it
            self._notify(ev, rec.seq, rec.origin)
        if ev.source == "operator" and mine:
            self._transitions.add([ev])  # applied when it was taken
            return
        self._replay_event(ev, count=True)
        if not mine and self._guardian is not None and ev.source != "operator":
            self._guardian.adopt(ev)  # a transition is shared, whoever's models made it

    def _observe_lag(self, lag: float) -> None:
        lag = max(lag, 0.0)
        i = 0
        while i < len(LAG_BUCKETS) and lag > LAG_BUCKETS[i]:
            i += 1
        self._lag_counts[i] += 1
        self._lag_sum += lag
        self._lag_recent.append(lag)

    def _maybe_snapshot(self) -> None:
        if self._since_snapshot >= self.snapshot_every and self._store.try_lead():  # type: ignore[attr-defined]
            self.snapshot()

    # ------------------------------------------------------------------ the write path
    def _record(self, events: list[GuardianEvent]) -> None:
        if not self._shared:
            super()._record(events)
        elif events and not self._replaying and not self.read_only:
            self._record_shared(events)  # counted when they come back through the log

    def _event_key(self, ev: GuardianEvent) -> str | None:
        """The dedupe key of a Guardian transition on a shared store: replicas that make the
        same transition from the same logged state produce the same key."""
        if ev.source == "operator":
            return None  # an operator's action is one event, whoever repeats it
        return f"{ev.arm}|{ev.to_state}|after:{self._arm_event_seq.get(ev.arm, 0)}"

    def _wrote(self) -> None:
        """Something was appended; while applying the log, the follower must commit it (no
        request's group commit may come)."""
        if self._applying:
            self._follower_wrote = True

    def _record_shared(self, events: list[GuardianEvent]) -> None:
        self._wrote()
        for ev in events:
            self._store.log_event(EventRecord(0, ev.to_dict(), self._origin, self._event_key(ev)))
            if self.log_events:
                log_transition(ev, replica=self._origin)

    def _expire_shared(self, now: float, wait: float, default: float | None) -> None:
        """Append the default reward for pending decisions past the wait time (any replica
        may; the database keeps the first feedback per decision). Without a default reward
        the decision stays pending: it expires from every replica's memory when the
        follower sees nothing more for it."""
        limit = now - wait
        for did, p in self._pending.items():
            if p.ts >= limit:
                break
            if default is None:
                continue
            sent = self._expiring.get(did)
            if sent is not None and now - sent < 10.0:  # appended; not yet back in the log
                continue
            self._expiring[did] = now
            self._store.log_feedback(FeedbackRecord(did, 0, now, None, default, defaulted=True))

    def _unsettled_result(self, result: FeedbackResult, rec: FeedbackRecord) -> FeedbackResult:
        """The answer to a feedback appended to the shared log. Committed already (the store
        commits every call unless it batches): a record the database dropped (``seq`` still 0)
        was a duplicate. Batched: kept until :meth:`settle` after the group commit."""
        if getattr(self._store, "durability", "batch") != "batch":
            return self._settled(result, rec)
        self._unsettled[id(result)] = (result, rec)
        while len(self._unsettled) > 10_000:  # answers whose commit failed are never settled
            del self._unsettled[next(iter(self._unsettled))]
        return result

    def settle(self, result: FeedbackResult) -> FeedbackResult:
        """After the commit of a batched shared store: ``result``, or — when the database kept
        another replica's feedback for the same decision instead — that one as a duplicate.
        The identity on other stores.

        Examples
        --------
        >>> import routewise as rw
        >>> ctl = rw.Controller(arms=["a:x/direct_emit"], seed=0)
        >>> r = ctl.feedback(ctl.decide({}).decision_id, rw.Outcome(True, 10.0, 0.0))
        >>> ctl.settle(r) is r
        True
        """
        entry = self._unsettled.pop(id(result), None)
        if entry is None or entry[0] is not result:
            return result
        return self._settled(result, entry[1])

    def _settled(self, result: FeedbackResult, rec: FeedbackRecord) -> FeedbackResult:
        if rec.seq != 0:
            return result
        prior = self._store.get_feedback(result.decision_id)
        if prior is None or prior.seq == 0:
            return result
        return FeedbackResult(
            result.decision_id, result.arm, prior.reward, duplicate=True, defaulted=prior.defaulted
        )

    def _remember_own(self, decision_id: str, p: Pending) -> None:
        """A decision this replica made, until its follower applies it: a feedback for it (the
        usual case: the caller reports to the replica it asked) needs no store read. Bounded:
        an entry whose commit failed is never applied and leaves with the oldest."""
        own = self._own
        own[decision_id] = p
        if len(own) > _OWN_MAX:
            del own[next(iter(own))]

    def _fetch_shared(
        self, decision_id: str
    ) -> tuple[FeedbackRecord | None, DecisionRecord | None] | None:
        """For a feedback on a replica that has no pending entry for the decision: its stored
        feedback and decision, read *before* the controller lock is taken (network round trips
        must not hold up decide). ``None`` when the entry is here (or the store not shared)."""
        if not self.feedback_reads_store(decision_id):
            return None
        prior = self._store.get_feedback(decision_id)
        if prior is not None and not prior.defaulted:
            return prior, None
        return prior, self._store.get_decision(decision_id)

    def feedback_reads_store(self, decision_id: str) -> bool:
        """Whether ``feedback(decision_id)`` will read the shared store (the decision is not
        pending here: not applied yet, or fed back already) — a network round trip the
        sidecar runs off its event loop. Always ``False`` on a single-writer store."""
        return self._shared and decision_id not in self._pending and decision_id not in self._own

    # ------------------------------------------------------------------ queries
    def replication(self) -> ReplicationStatus | None:
        """This replica's view of the shared log (``None`` on a single-writer store):
        ``origin``, ``applied_seq``, ``head_seq`` (the newest sequence number it knows of),
        ``lag_s`` (0 when caught up, else seconds since it last was), ``connected``,
        ``leader`` (takes the snapshots), and the apply-lag histogram (``lag_buckets`` upper
        bounds, cumulative ``lag_counts``, ``lag_sum``, ``lag_count``). Pure."""
        if not self._shared:
            return None
        store: Any = self._store
        head = max(int(store.head), self._seq)
        now = time.time()
        cumulative, run = [], 0
        for c in self._lag_counts:
            run += c
            cumulative.append(run)
        return ReplicationStatus(
            origin=self._origin,
            applied_seq=self._seq,
            head_seq=head,
            lag_s=0.0 if head <= self._seq else max(0.0, now - self._caught_up_at),
            connected=bool(store.connected),
            leader=bool(getattr(store, "leading", False)),
            lag_buckets=list(LAG_BUCKETS),
            lag_counts=cumulative,
            lag_sum=self._lag_sum,
            lag_count=run,
        )

    def lag_samples(self) -> list[float]:
        """The apply lags (seconds) of the most recent records (at most 4,096), oldest first."""
        with self._lock:
            return list(self._lag_recent)


class Follower:
    """The background thread of a replica: wait for the store's notification (or the poll
    interval), then :meth:`Replica.catch_up`. Errors (the database unreachable) are logged once
    per outage and retried; the thread never dies of them."""

    def __init__(self, replica: Replica, poll_s: float) -> None:
        self._replica = replica
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routewise-follower", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        store: Any = self._replica._store
        failing = False
        while not self._stop.is_set():
            try:
                if self._replica.catch_up() and self._replica._follower_wrote:
                    # what applying appended (Guardian transitions, evicted decisions' default
                    # rewards) waits in a "batch" store's buffer: commit it, with no traffic
                    # there would be no group commit. Only then: the request handlers' records
                    # are their group commit's to carry.
                    self._replica._follower_wrote = False
                    store.sync()
                if failing:
                    _log.info("replica.recovered", origin=self._replica._origin)
                failing = False
            except StateError as exc:
                if not failing:
                    _log.error("replica.apply_failed", error=str(exc))
                failing = True
                self._stop.wait(min(self._poll_s, 1.0))
                continue
            if self._stop.is_set():
                break
            store.wait(self._poll_s)
