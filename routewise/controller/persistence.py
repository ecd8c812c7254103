"""The Controller's learned state and its persistence: applying one feedback to it (live and
in restart replay alike), snapshots, restore (the latest snapshot, then a replay of the log
after it), the store's metadata record, the pending decisions (at most ``max_pending`` in
memory, live, in restart replay and on a replica alike), the running count of Guardian
transitions, the listeners told of every recorded transition
(:mod:`~routewise.controller.notify`), and the trace export.

:class:`LearningState` is the Controller's base class: it holds the state and these steps;
the Controller adds decide / feedback / queries / operator actions on top.

Examples
--------
>>> from routewise.types import GuardianEvent
>>> counts = TransitionCounts()
>>> counts.add([GuardianEvent(1.0, "a/direct_emit", "healthy", "quarantined", "latency")])
>>> counts.as_dict()
{('a/direct_emit', 'quarantined', 'guardian'): 1}
>>> TransitionCounts.from_state(counts.to_state()).as_dict() == counts.as_dict()
True
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import structlog

from routewise.bandits.base import FloatArray, Policy
from routewise.controller.bounds import BoundHits, FeatureLimits
from routewise.controller.experiments.manager import Experiments
from routewise.controller.experiments.variants import VariantLearner
from routewise.controller.features import Featurizer
from routewise.controller.guardian import Guardian
from routewise.controller.notify.base import Listener, Notice
from routewise.controller.stats import ArmStats
from routewise.errors import ConfigError, InvalidContext, StateError
from routewise.reward import Scalarizer
from routewise.state.base import (
    ControlRecord,
    DecisionRecord,
    EventRecord,
    FeedbackRecord,
    Store,
    json_default,
)
from routewise.types import Arm, GuardianEvent

__all__ = [
    "LearningState",
    "Pending",
    "TransitionCounts",
    "controller_meta",
    "log_transition",
    "pending_from_record",
    "write_trace",
]

_log = structlog.get_logger("routewise")


@dataclass(slots=True)
class Pending:
    """A decision awaiting feedback: its arm, features, reward, time and experiment variant.

    Examples
    --------
    >>> from routewise.reward import get_reward
    >>> Pending("a/direct_emit", np.zeros(2), get_reward(), ts=1.0).exp is None
    True
    """

    arm: str
    x: FloatArray
    reward: Scalarizer
    ts: float
    exp: str | None = None
    variant: str | None = None


def pending_from_record(rec: DecisionRecord, default_reward: Scalarizer) -> Pending:
    """The pending entry of a logged decision (its own reward spec, else ``default_reward``)."""
    scal = Scalarizer.from_dict(rec.reward_spec) if rec.reward_spec is not None else default_reward
    return Pending(
        rec.arm,
        np.asarray(rec.features, dtype=np.float64),
        scal,
        rec.ts,
        rec.extra.get("experiment"),
        rec.extra.get("variant"),
    )


def log_transition(ev: GuardianEvent, **fields: Any) -> None:
    """The log line of a recorded Guardian transition (a warning: operators alert on it)."""
    _log.warning(
        "guardian.transition",
        arm=ev.arm,
        from_state=ev.from_state,
        to_state=ev.to_state,
        reason=ev.reason,
        evidence=ev.evidence,
        source=ev.source,
        **fields,
    )


class TransitionCounts:
    """Running count of recorded Guardian transitions per ``(arm, to_state, source)`` —
    what ``/metrics`` serves without reading the event log. Bounded by arms × states ×
    sources."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}

    def add(self, events: Iterable[GuardianEvent]) -> None:
        """Count ``events``."""
        counts = self._counts
        for ev in events:
            key = (ev.arm, ev.to_state, ev.source)
            counts[key] = counts.get(key, 0) + 1

    def as_dict(self) -> dict[tuple[str, str, str], int]:
        """A copy of the counts, sorted by key."""
        return dict(sorted(self._counts.items()))

    def to_state(self) -> list[list[Any]]:
        """Plain JSON: ``[[arm, to_state, source, n], …]``."""
        return [[*key, n] for key, n in sorted(self._counts.items())]

    @classmethod
    def from_state(cls, state: Iterable[Any]) -> TransitionCounts:
        """Restore :meth:`to_state` output (``StateError`` when malformed)."""
        out = cls()
        try:
            for arm, to_state, source, n in state:
                out._counts[(str(arm), str(to_state), str(source))] = int(n)
        except (TypeError, ValueError) as exc:
            raise StateError(f"transition counts state: {exc!r}") from None
        return out

    @classmethod
    def from_store(cls, store: Store) -> TransitionCounts:
        """Count every event in ``store`` (for a snapshot that does not carry the counts)."""
        out = cls()
        out.add(GuardianEvent.from_dict(r.event) for r in store.list_events(None))
        return out


def controller_meta(
    *,
    arm_ids: list[str],
    policy: Policy,
    reward: Scalarizer,
    features: Mapping[str, Any] | None,
    seed: int,
    experiments: Mapping[str, Any],
) -> dict[str, Any]:
    """The store's metadata record: what a reopened controller needs to rebuild itself."""
    return {
        "experiments": dict(experiments),
        "arms": arm_ids,
        "policy": {"name": policy.name, "params": policy.params()},
        "reward": reward.to_dict(),
        "features": features,
        "seed": seed,
    }


def write_trace(store: Store, file: str | Path | IO[str], since: float | None = None) -> int:
    """Write the JSON-Lines trace (format: :mod:`routewise.simulations.trace`) of ``store`` to ``file`` (a path is
    written whole or not at all); returns the lines written."""
    encode = json.JSONEncoder(separators=(",", ":"), default=json_default).encode

    def write(fh: IO[str]) -> int:
        n = 0
        for line in store.iter_trace(since):
            fh.write(encode(line) + "\n")
            n += 1
        return n

    store.flush()
    if not isinstance(file, str | Path):
        return write(file)
    target = Path(file)
    if target.is_dir():
        raise ConfigError("file", f"{str(target)!r} is a directory")
    if not target.parent.is_dir():
        raise ConfigError("file", f"directory {str(target.parent)!r} does not exist")
    tmp = target.with_name(target.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            n = write(fh)
        tmp.replace(target)  # whole file or nothing
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


class LearningState:
    """The learned state of a :class:`~routewise.Controller` (its base class; the Controller's
    construction sets every attribute) and the steps that change it outside decide:
    learning from a feedback, recording Guardian transitions, snapshots and restore.

    Examples
    --------
    >>> import routewise as rw
    >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
    >>> isinstance(ctl, LearningState), ctl.store.latest_snapshot() is None
    (True, True)
    >>> ctl.snapshot()
    >>> sorted(ctl.store.latest_snapshot()[1])  # doctest: +NORMALIZE_WHITESPACE
    ['experiments', 'featurizer', 'guardian', 'policy', 'rng', 'seq', 'stats', 'transitions']
    """

    seed: int
    read_only: bool
    log_events: bool
    recent_window: int
    _lock: threading.RLock
    _store: Store
    _arms: list[Arm]
    _arm_by_id: dict[str, Arm]
    _arm_ids: list[str]
    _all: list[str] | None
    _policy: Policy
    _reward: Scalarizer
    _features_spec: dict[str, Any] | None
    _featurizer: Featurizer
    _guardian: Guardian | None
    _rng: np.random.Generator
    _exp: Experiments
    _stats: dict[str, ArmStats]
    _pending: dict[str, Pending]
    _recent: deque[FloatArray]
    _transitions: TransitionCounts
    _seq: int
    _since_snapshot: int
    _replayed: int
    _replaying: bool
    _shared: bool
    _origin: str | None
    _closed: bool
    clock: Callable[[], float]
    _arm_event_seq: dict[str, int]
    snapshot_every: int
    max_pending: int
    default_reward: float | None
    _bounds: BoundHits
    _limits: FeatureLimits
    _listeners: tuple[Listener, ...] = ()  # replaced whole (a reader never sees it change)

    # ------------------------------------------------------------------ listeners
    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with a :class:`~routewise.controller.notify.Notice` for every
        Guardian transition and operator action recorded from now on — on a single-writer
        store when it is recorded (never in the restart replay), on a shared store on the
        replica that made it, once applied from the log (so once across the replicas). The
        listener runs on the write path and must return at once (a
        :class:`~routewise.controller.notify.WebhookNotifier` only queues the notice); one that
        raises is logged and skipped. Subscribing twice is a no-op.

        Examples
        --------
        >>> import routewise as rw
        >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], log_events=False)
        >>> seen = []
        >>> ctl.subscribe(seen.append)
        >>> ctl.pin("a:x/direct_emit"); ctl.release("a:x/direct_emit")
        >>> [(n.seq, n.event.reason) for n in seen]
        [(1, 'operator_pin'), (2, 'operator_release')]
        """
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (a no-op if it is not subscribed)."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x != listener)

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """The subscribed listeners, in subscription order."""
        return self._listeners

    def _notify(self, ev: GuardianEvent, seq: int, origin: str | None) -> None:
        """Hand one recorded transition to every listener (none may fail the write path)."""
        notice = Notice(ev, seq, origin)
        for listener in self._listeners:
            try:
                listener(notice)
            except Exception as exc:
                _log.error(
                    "listener.failed", listener=repr(listener), error=type(exc).__name__, arm=ev.arm
                )

    def _save_meta(self) -> None:
        self._store.save_meta(
            controller_meta(
                arm_ids=self._arm_ids,
                policy=self._policy,
                reward=self._reward,
                features=self._features_spec,
                seed=self.seed,
                experiments=self._exp.to_meta(),
            )
        )

    def _restore(self) -> None:
        """Load the latest snapshot, then replay the log after it (decisions, feedbacks,
        operator actions and the Guardian's cooldown transitions)."""
        snap = self._store.latest_snapshot()
        seq0 = 0
        count_replayed = True
        if snap is not None:
            seq0, state = snap
            try:
                self._load_snapshot(state)
            except (KeyError, TypeError) as exc:
                raise StateError(f"snapshot at seq {seq0} is unreadable ({exc!r})") from None
            if "transitions" not in state:  # an older snapshot: count the whole event log
                self._transitions = TransitionCounts.from_store(self._store)
                count_replayed = False
        self._replayed = 0
        self._replaying = True
        last = seq0
        for kind, rec in self._store.events_since(seq0):
            last = rec.seq
            if kind == "event":
                assert isinstance(rec, EventRecord)
                ev = GuardianEvent.from_dict(rec.event)
                self._arm_event_seq[ev.arm] = rec.seq
                self._replay_event(ev, count_replayed)
            elif kind == "control":  # a shared store's experiment step (the metadata may
                assert isinstance(rec, ControlRecord)  # hold it already: then it is skipped)
                if not self.read_only:
                    self._apply_control(rec)
            elif kind == "decision":
                assert isinstance(rec, DecisionRecord)
                self._replay_decision(rec)
            else:
                assert isinstance(rec, FeedbackRecord)
                self._replay_feedback(rec)
        self._replaying = False
        # a replica goes on from the last record it applied (later ones reach its follower)
        self._seq = last if self._shared else max(self._store.max_seq(), seq0)
        for drec in self._store.recent_decisions(self.recent_window):
            self._recent.append(np.asarray(drec.features, dtype=np.float64))

    def _load_snapshot(self, state: Mapping[str, Any]) -> None:
        self._policy = Policy.from_state(state["policy"])
        self._featurizer = Featurizer.from_state(
            state["featurizer"], **self._limits, hits=self._bounds
        )
        self._stats = {k: ArmStats.from_state(v) for k, v in state["stats"].items()}
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]
        self._exp.set_state(state.get("experiments") or {})
        if self._guardian is not None and state.get("guardian") is not None:
            self._guardian.set_state(state["guardian"])
            self._guardian.add_arms(self._arm_ids)
        if "transitions" in state:
            self._transitions = TransitionCounts.from_state(state["transitions"])

    def _replay_event(self, ev: GuardianEvent, count: bool) -> None:
        if count:
            self._transitions.add([ev])
        if self._guardian is None:
            return
        if ev.source == "operator":
            self._guardian.add_arms([ev.arm])
            self._guardian.apply_operator(ev)
        elif ev.reason == "cooldown_elapsed":  # a tick at that time (a decision's or tick())
            self._guardian.tick(ev.ts)

    def _replay_decision(self, rec: DecisionRecord) -> None:
        if self._guardian is not None:
            self._guardian.add_arms([rec.arm])
            self._guardian.tick(rec.ts)
        # a context logged before the featurizer's bounds (or under looser ones) is not
        # learned (its refusal is counted as a bound hit); the decision itself stands
        with contextlib.suppress(InvalidContext):
            self._featurizer.learn(rec.context)
        p = pending_from_record(rec, self._reward)
        learner = self._learner(p)
        if learner is not None:
            learner.add_arm(rec.arm)
            learner.ensure_dim(len(rec.features))
        if self._policy is not learner:
            self._policy.ensure_dim(len(rec.features))
        self._stat(rec.arm).decisions += 1
        if p.exp is not None and p.variant is not None:
            self._exp.replayed_assignment(p.exp, p.variant)
        self._add_pending(rec.decision_id, p, rec.ts if self._replaying else self.clock())

    def _add_pending(self, decision_id: str, p: Pending, now: float) -> None:
        """Keep ``p`` awaiting feedback, and at most ``max_pending`` decisions in memory: past
        it the oldest leaves (a hit of ``max_pending``). Live, it is then learned with the
        default reward when one is set (:meth:`_evicted`); in restart replay it is only
        dropped (the live run logged that default feedback, which the replay learns from). A
        later feedback for it is served from the store's record of the decision."""
        pending = self._pending
        pending[decision_id] = p
        while len(pending) > self.max_pending:
            did = next(iter(pending))
            p = pending.pop(did)
            self._bounds.hit("max_pending", self.max_pending)
            if not self._replaying and not self.read_only:
                self._evicted(did, p, now)

    def _evicted(self, decision_id: str, p: Pending, now: float) -> None:
        """A pending decision left memory live (the Controller learns the default reward)."""

    def _replay_feedback(self, rec: FeedbackRecord) -> None:
        fp = self._pending.pop(rec.decision_id, None)
        if fp is None:
            drec = self._store.get_decision(rec.decision_id)
            if drec is None:
                raise StateError(f"feedback for unknown decision {rec.decision_id!r} in the store")
            fp = pending_from_record(drec, self._reward)
        self._learn(fp, rec.outcome, rec.reward, rec.ts)
        self._replayed += 1
        self._since_snapshot += 1

    def _check_open(self) -> None:
        """Raise ``StateError`` unless decisions and learning are allowed (the Controller's)."""

    def _apply_control(self, rec: ControlRecord) -> None:
        """Apply a shared store's experiment step (the Controller's actions do)."""

    def _stat(self, arm: str) -> ArmStats:
        s = self._stats.get(arm)
        if s is None:
            s = self._stats[arm] = ArmStats()
        return s

    def _learner(self, p: Pending) -> Policy | None:
        """The policy that learns from a decision: its experiment variant's, else the main one
        (``None`` for a variant of an experiment that ended without being promoted)."""
        if p.exp is None or p.variant is None:
            return self._policy
        return self._exp.learning_policy(p.exp, p.variant, self._policy)

    def _learn(self, p: Pending, outcome: dict[str, Any] | None, reward: float, ts: float) -> None:
        """Apply one feedback to the learning state (live and during restart replay alike)."""
        learner = self._policy if p.exp is None else self._learner(p)
        if learner is not None:
            learner.add_arm(p.arm)
            learner.update(p.arm, p.x, reward)
        self._stat(p.arm).observe(outcome, reward)
        if p.exp is not None and p.variant is not None and outcome is not None:
            self._exp.observe(p.exp, p.variant, reward, outcome, ts, replaying=self._replaying)
        if self._guardian is not None and outcome is not None:
            self._guardian.add_arms([p.arm])
            self._record(
                self._guardian.observe(
                    p.arm,
                    valid=bool(outcome["valid"]),
                    latency_ms=float(outcome["latency_ms"]),
                    error=outcome.get("error"),
                    ts=ts,
                    x=p.x,
                )
            )

    def _on_trip(self, arm: str, factor: float) -> None:
        """A confirmed change: shrink (or reset) the policy's memory of ``arm`` to re-learn it."""
        if arm not in self._policy.arms:
            return
        if factor <= 0.0:
            self._policy.reset_arm(arm)
        elif factor < 1.0:
            self._policy.decay_arm(arm, factor)

    def _record(self, events: list[GuardianEvent]) -> None:
        if self._replaying or not events or self.read_only:
            return
        for ev in events:
            self._seq += 1
            self._store.log_event(EventRecord(self._seq, ev.to_dict()))
            self._transitions.add([ev])
            if self.log_events:
                log_transition(ev)
            if self._listeners:
                self._notify(ev, self._seq, None)

    def _persist(self, snapshot: bool) -> None:
        self._save_meta()
        if snapshot:
            self.snapshot()

    def _adopt(self, learner: VariantLearner) -> None:
        """A promoted variant becomes the default: its policy, reward and arm subset."""
        self._policy = learner.policy
        self._reward = learner.reward
        if learner.arms is not None:
            self._arms = [self._arm_by_id[a] for a in learner.arms]
            self._arm_ids = list(learner.arms)
        self._all = None if self._policy.arms == self._arm_ids else self._arm_ids

    def learned_state(self) -> dict[str, Any]:
        """The learned state as a snapshot stores it (``seq``, ``policy``, ``featurizer``,
        ``stats``, ``rng``, ``guardian``, ``experiments``, ``transitions``; plain JSON once
        encoded with :func:`~routewise.state.base.json_default`). ``routewise check``
        compares a store's latest snapshot with this state rebuilt by replaying its log."""
        with self._lock:
            return {
                "seq": self._seq,
                "policy": self._policy.to_state(),
                "featurizer": self._featurizer.to_state(),
                "stats": {k: v.to_state() for k, v in self._stats.items()},
                "rng": self._rng.bit_generator.state,
                "guardian": self._guardian.to_state() if self._guardian is not None else None,
                "experiments": self._exp.to_state(),
                "transitions": self._transitions.to_state(),
            }

    def snapshot(self) -> None:
        """Persist the learned state now (done automatically every ``snapshot_every``). On a
        shared store only the replica holding the snapshot lead writes one."""
        with self._lock:
            if self._shared and not self._store.try_lead():  # type: ignore[attr-defined]
                return
            self._store.save_snapshot(self._seq, self.learned_state())
            self._since_snapshot = 0
