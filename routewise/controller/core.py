"""The :class:`Controller`: decide → feedback → learn, with every step logged.

It is the only place that ties featurizer, policy, reward and store together. The CLI and
the sidecar are thin adapters over it. Its collaborators, one concept each:
:mod:`~routewise.controller.setup` (arguments, what a store or settings leave open),
:mod:`~routewise.controller.routing` (the Guardian's filters around the policy's draw),
:mod:`~routewise.controller.persistence` (pending decisions, transition counts, metadata)
and :class:`~routewise.controller.experiments.manager.Experiments`.

Queries (``best_policy``, ``status``, ``health``, ``events``, ``experiments``,
``experiment_status``, ``transition_counts``) write nothing and change nothing; time-driven
transitions happen on the write path (``decide``, ``feedback``, operator actions) or in
:meth:`Controller.tick`.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal, cast

import numpy as np
import structlog

from routewise.bandits.base import Policy
from routewise.config import RoutewiseSettings, load_settings
from routewise.controller.actions import Actions
from routewise.controller.bounds import (
    DEFAULT_MAX_CONTEXT_KEYS,
    DEFAULT_MAX_FEATURE_KEYS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_VALUE_CHARS,
    BoundHits,
    FeatureLimits,
)
from routewise.controller.experiments.assignment import assignment_unit
from routewise.controller.experiments.manager import Experiments
from routewise.controller.features import Featurizer
from routewise.controller.guardian import Guardian
from routewise.controller.ids import new_id
from routewise.controller.persistence import (
    Pending,
    TransitionCounts,
    pending_from_record,
    write_trace,
)
from routewise.controller.replica import Replica
from routewise.controller.routing import ArmChooser
from routewise.controller.setup import (
    DEFAULT_POLICY,
    check_bounds,
    check_options,
    controller_kwargs,
    guardian_argument,
    new_store_file,
    open_store,
    resolve_arms,
    resolve_features,
    resolve_policy,
    resolve_seed,
)
from routewise.controller.stats import ArmStats
from routewise.errors import (
    ConfigError,
    FeedbackTooLate,
    InvalidOutcome,
    StateError,
    UnknownArm,
    UnknownDecision,
)
from routewise.reward import Scalarizer, reward_argument
from routewise.state.base import (
    DecisionRecord,
    Durability,
    FeedbackRecord,
    Store,
)
from routewise.state.sqlite import SQLiteStore
from routewise.types import (
    Arm,
    ArmLike,
    Decision,
    FeedbackResult,
    GuardianEvent,
    GuardianHealth,
    HealthState,
    Outcome,
    RankedArm,
    Status,
)
from routewise.types import ArmStats as ArmStatsRow

__all__ = [
    "DEFAULT_POLICY",
    "Controller",
    "Decision",
    "FeedbackResult",
    "RankedArm",
    "Status",
]

_log = structlog.get_logger("routewise")


class Controller(Actions, Replica):
    """Decides which arm serves a request and learns from the outcome.

    Parameters
    ----------
    arms
        The arms (``Arm`` objects, ids ``"backend/mode"`` or ``{"backend", "mode"}``
        mappings). Optional when reopening a store, which remembers them.
    policy
        A registry name (``"squarecb"``, ``"linucb"``…) or a spec with parameters
        (``"linucb:alpha=0.3"``, the form the CLI takes), a :class:`~routewise.bandits.Policy`
        object, or ``None`` / ``"default"`` for the tuned default (:data:`DEFAULT_POLICY`).
    reward
        Default reward: a preset name (``"balanced"``, ``"high_correctness"``,
        ``"low_latency"``, ``"cost_sensitive"``), a mapping of weights/budgets or a
        :class:`~routewise.reward.Scalarizer`. A decision can override it.
    store
        ``None`` keeps everything in memory; a path opens (or creates) an SQLite file;
        or any :class:`~routewise.state.Store`.
    seed
        Seed of the policy's generator; same seed → same decisions.
    features
        Optional feature spec for the :class:`~routewise.controller.features.Featurizer`.
    reward_wait_s
        Feedback later than this (seconds after the decision) is "late" (as Personalizer's
        reward wait time). ``None``: no limit.
    late_feedback
        ``"reject"`` raises :class:`~routewise.errors.FeedbackTooLate` for late feedback;
        ``"accept"`` learns from it anyway.
    default_reward
        When set (with ``reward_wait_s``), a decision with no feedback within the wait time is
        learned with this reward, as Personalizer's default reward.
    snapshot_every
        Snapshot the learned state every this many feedbacks (restart replays the rest; a
        snapshot at K=12, d=50 is ~2 MB, and replaying 10,000 feedbacks takes ~0.4 s).
    durability
        For SQLite stores: ``"feedback"`` (default), ``"always"`` or ``"batch"``; see
        :class:`~routewise.state.SQLiteStore`.
    clock
        Time source (seconds); injectable for tests.
    log_decisions
        Emit one structlog line per decision and feedback (the sidecar turns this on).
    log_events
        Log Guardian transitions with structlog (they are always kept in the store).
    guardian
        ``True`` (default) for a default :class:`~routewise.controller.guardian.Guardian`,
        ``False`` to turn it off, or a configured ``Guardian``.
    max_context_keys, max_value_chars, max_feature_keys
        The featurizer's bounds (default 256 keys per context, 1,024 characters per key or
        string value, 4,096 remembered keys; see :mod:`~routewise.controller.features`).
    max_pending
        At most this many decisions awaiting feedback are kept in memory (default 100,000):
        past it the oldest leaves memory — learned with ``default_reward`` when one is set —
        and a later feedback for it is served from the store.
    read_only
        Open an existing store for queries only (``best_policy``, ``status``, ``health``,
        ``events``, ``export_trace``) without taking the writer lock — safe next to a running
        sidecar. ``decide``/``feedback``/operator actions then raise ``StateError``.
    integrity_check
        Check an existing SQLite store with ``PRAGMA quick_check`` when opening it and refuse
        a damaged one (``StoreCorrupt``, a ``StateError``); default ``True``.

    Examples
    --------
    >>> import routewise as rw
    >>> ctl = rw.Controller(arms=rw.make_arms(["openai:gpt-5.4", "ollama:llama3"]), seed=7)
    >>> d = ctl.decide({"task": "extraction", "schema_depth": 3, "input_tokens": 900})
    >>> d.arm.id in {a.id for a in ctl.arms}, 0 < d.propensity <= 1
    (True, True)
    >>> r = ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004))
    >>> 0.0 <= r.reward <= 1.0
    True
    >>> ctl.feedback(d.decision_id, rw.Outcome(valid=False, latency_ms=1.0, cost_usd=0.0)).duplicate
    True
    >>> [row.arm.id for row in ctl.best_policy()][:1] != []
    True
    """

    def __init__(
        self,
        arms: Iterable[ArmLike] | None = None,
        policy: str | Policy | None = None,
        reward: str | Mapping[str, Any] | Scalarizer | None = None,
        store: Store | str | Path | None = None,
        seed: int | None = None,
        *,
        features: Mapping[str, Any] | None = None,
        reward_wait_s: float | None = None,
        late_feedback: Literal["reject", "accept"] = "reject",
        default_reward: float | None = None,
        snapshot_every: int = 10_000,
        durability: Durability = "feedback",
        clock: Callable[[], float] = time.time,
        log_decisions: bool = False,
        log_events: bool = True,
        recent_window: int = 256,
        guardian: Guardian | bool | None = True,
        read_only: bool = False,
        max_context_keys: int = DEFAULT_MAX_CONTEXT_KEYS,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        max_feature_keys: int = DEFAULT_MAX_FEATURE_KEYS,
        max_pending: int = DEFAULT_MAX_PENDING,
        integrity_check: bool = True,
    ) -> None:
        check_options(reward_wait_s, late_feedback, default_reward, snapshot_every, recent_window)
        self._limits = FeatureLimits(
            max_feature_keys=max_feature_keys,
            max_context_keys=max_context_keys,
            max_value_chars=max_value_chars,
        )
        check_bounds(**self._limits, max_pending=max_pending)
        self.max_pending = max_pending
        self._bounds = BoundHits()
        self.reward_wait_s = reward_wait_s
        self.late_feedback = late_feedback
        self.default_reward = default_reward
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.log_decisions = log_decisions
        self.log_events = log_events
        self.recent_window = recent_window
        self._guardian = guardian_argument(guardian)
        self._lock = threading.RLock()
        self.read_only = read_only
        new_file = new_store_file(store)
        self._store = open_store(store, durability, read_only, integrity_check=integrity_check)
        self._owns_store = not isinstance(store, Store)
        self._init_replica()
        self._control_ts = None
        try:
            self._setup(arms, policy, reward, seed, features)
        except BaseException:
            if self._owns_store:
                self._store.close()
                if new_file is not None:  # a failed construction leaves no half-made store
                    SQLiteStore.remove_files(new_file)
            raise

    # ------------------------------------------------------------------ setup
    def _setup(
        self,
        arms: Iterable[ArmLike] | None,
        policy: str | Policy | None,
        reward: str | Mapping[str, Any] | Scalarizer | None,
        seed: int | None,
        features: Mapping[str, Any] | None,
    ) -> None:
        meta = self._store.load_meta()
        self._arms = resolve_arms(arms, meta)
        self._arm_by_id = {a.id: a for a in self._arms}
        self._arm_ids = ids = [a.id for a in self._arms]
        self.seed = resolve_seed(seed, meta)
        self._policy = resolve_policy(policy, meta, self.seed)
        if reward is None and meta is not None:
            reward = meta.get("reward")
        self._reward = reward_argument(reward)
        self._features_spec = resolve_features(features, meta)
        self._featurizer = Featurizer(self._features_spec, **self._limits, hits=self._bounds)
        # the controller's own generator: the Guardian's probe lottery
        self._rng = np.random.default_rng(np.random.SeedSequence([abs(int(self.seed)), 0x6A4D]))
        self._chooser = ArmChooser(self._guardian, self._rng, self._record)
        if self._guardian is not None:
            self._guardian.add_arms(ids)
            self._guardian.on_trip = self._on_trip
        self._replaying = False
        self._transitions = TransitionCounts()
        self._exp = Experiments(
            self._variant_defaults,
            clock=self._experiment_clock,
            lock=self._lock,
            check_open=self._check_open,
            persist=self._persist,
            adopt=self._adopt,
        )
        self._exp.load((meta or {}).get("experiments") or {})
        self._stats = {}
        self._pending = {}
        self._recent = deque(maxlen=self.recent_window)
        self._since_snapshot = 0
        # register the arms in config order before replaying, so row positions (and with
        # them the floating-point results) match the live run's
        self._policy.add_arms(ids)
        self._restore()
        self._policy.add_arms(ids)
        # `None` asks the policy for all of *its* arms in *its* order; that is only the active
        # arm list when the orders agree (a restored or reordered store may differ)
        self._all = None if self._policy.arms == ids else ids
        if not self.read_only:
            self._save_meta()
        self._closed = False
        self._start_follower()
        if self.log_decisions:
            _log.info(
                "controller.open",
                policy=self._policy.name,
                arms=len(ids),
                store=getattr(self._store, "path", "memory"),
                seq=self._seq,
                restored_feedbacks=self._replayed,
            )

    @classmethod
    def from_settings(cls, settings: RoutewiseSettings, **overrides: Any) -> Controller:
        """Build the controller ``settings`` describe; ``overrides`` are further keyword
        arguments (``read_only``, ``log_events``, ``guardian``…) and win over the settings.

        Examples
        --------
        >>> from routewise.config import RoutewiseSettings
        >>> s = RoutewiseSettings(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=1,
        ...                       policy={"name": "linucb", "alpha": 0.5})
        >>> ctl = Controller.from_settings(s, guardian=False)
        >>> ctl.policy.name, ctl.guardian is None, ctl.seed
        ('linucb', True, 1)
        """
        accepted = inspect.signature(cls.__init__).parameters
        for key in overrides:
            if key == "self" or key not in accepted:
                raise ConfigError(key, "not a Controller argument, so it cannot override a setting")
        return cls(**controller_kwargs(settings, **overrides))

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> Controller:
        """Build from a TOML config file (and ``ROUTEWISE_*`` environment variables).

        Precedence: ``overrides`` (e.g. CLI flags) > config file > environment > defaults.
        """
        return cls.from_settings(load_settings(path, **overrides))

    # --------------------------------------------------------------- queries
    @property
    def arms(self) -> list[Arm]:
        """The active arms, in order."""
        return list(self._arms)

    @property
    def policy(self) -> Policy:
        """The live policy object (read it; mutate it through the controller)."""
        return self._policy

    @property
    def store(self) -> Store:
        return self._store

    @property
    def featurizer(self) -> Featurizer:
        return self._featurizer

    @property
    def reward(self) -> Scalarizer:
        """The default reward scalarizer."""
        return self._reward

    def _eligible(self, arms: Iterable[ArmLike] | None) -> list[str] | None:
        if arms is None:
            return None
        if isinstance(arms, str | Arm):
            raise ConfigError("arms", "expected a list of arms, got a single arm")
        out: list[str] = []
        for a in arms:
            aid = a if isinstance(a, str) else Arm.parse(a).id
            if aid not in self._arm_by_id:
                raise UnknownArm(aid, self._arm_ids)
            out.append(aid)
        if not out:
            raise ConfigError("arms", "the eligible arm list is empty")
        if len(out) == len(self._arm_ids) and out == self._arm_ids:
            return None
        return out

    # -------------------------------------------------------------- decide
    def decide(
        self,
        context: Mapping[str, Any],
        *,
        arms: Iterable[ArmLike] | None = None,
        reward: str | Mapping[str, Any] | Scalarizer | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
    ) -> Decision:
        """Choose an arm for ``context`` (optionally among ``arms``), log it, return it.

        ``reward`` overrides the default reward for this decision (a preset name, weights or
        a Scalarizer); ``request_id`` is kept in the trace. While an experiment runs,
        ``unit_id`` (else ``request_id``, else the decision itself) picks the variant, sticky
        per unit; otherwise it is ignored.
        """
        eligible = None if arms is None else self._eligible(arms)
        scal = self._reward if reward is None else reward_argument(reward)
        with self._lock:
            if self._closed or self.read_only:
                self._check_open()
            now = self.clock()
            if self.reward_wait_s is not None:
                self._expire(now)
            # (a replica learns contexts from the shared log, in its order: replica.py)
            x = self._featurizer.transform(context, learn=not self._shared)
            did = new_id()
            extra: dict[str, Any] = {} if request_id is None else {"request_id": request_id}
            policy, all_arg = self._policy, self._all
            exp_name = variant = None
            if self._exp.running is not None:
                a = self._exp.assign(assignment_unit(unit_id, request_id, did))
                assert a is not None
                exp_name, variant = a.experiment, a.variant
                policy, all_arg = a.learner.policy, self._arm_ids
                scal = a.learner.reward if reward is None else scal
                eligible = a.eligible(eligible, self._arm_ids)
                extra["experiment"], extra["variant"] = exp_name, variant
                if unit_id is not None:
                    extra["unit_id"] = unit_id
            c = self._chooser.choose(x, eligible, now, policy, all_arg, self._arm_ids)
            if not (shared := self._shared):
                self._seq += 1
            self._store.log_decision(
                DecisionRecord(
                    decision_id=did,
                    seq=0 if shared else self._seq,
                    ts=now,
                    context=context if type(context) is dict else dict(context),
                    arm=c.arm,
                    propensity=c.propensity,
                    features=x,
                    policy=policy.name,
                    reward_spec=None if scal is self._reward else scal.to_dict(),
                    eligible=None if c.names is self._arm_ids else list(c.names),
                    extra=extra,
                )
            )
            self._keep(did, Pending(c.arm, x, scal, now, exp_name, variant), now)
        decision = Decision(
            decision_id=did,
            arm=self._arm_by_id[c.arm],
            propensity=c.propensity,
            scores=dict(zip(c.names, c.scores.tolist(), strict=True)),
            probabilities=dict(zip(c.names, c.probabilities.tolist(), strict=True)),
            explored=c.explored,
            policy=policy.name,
            propensity_method=c.method,
            ts=now,
            reward=scal.name,
            experiment=exp_name,
            variant=variant,
        )
        if self.log_decisions:
            self._log_decision(decision)
        return decision

    def _keep(self, decision_id: str, p: Pending, now: float) -> None:
        """A decision just logged awaits its feedback (on a shared store the follower makes it
        pending when it applies the decision from the log; until then it is remembered here)."""
        if self._shared:
            self._remember_own(decision_id, p)
            return
        self._add_pending(decision_id, p, now)
        self._recent.append(p.x)
        self._stat(p.arm).decisions += 1

    @staticmethod
    def _log_decision(d: Decision) -> None:
        """The canonical decision log line, naming the policy that chose (an experiment
        variant's, with the experiment and variant, while one runs)."""
        fields: dict[str, Any] = {}
        if d.experiment is not None:
            fields.update(experiment=d.experiment, variant=d.variant)
        _log.info(
            "decision",
            decision_id=d.decision_id,
            arm=d.arm.id,
            propensity=round(d.propensity, 6),
            explored=d.explored,
            policy=d.policy,
            **fields,
        )

    # ------------------------------------------------------------ feedback
    def feedback(self, decision_id: str, outcome: Outcome | Mapping[str, Any]) -> FeedbackResult:
        """Learn from the outcome of decision ``decision_id``; idempotent per id.

        A repeat returns the first result (``duplicate=True``) and does not learn twice.
        Raises :class:`~routewise.errors.UnknownDecision` for an id never issued and
        :class:`~routewise.errors.FeedbackTooLate` past the reward wait time (when rejecting).
        """
        if not isinstance(decision_id, str) or not decision_id:
            raise UnknownDecision(str(decision_id))
        if not isinstance(outcome, Outcome):
            if isinstance(outcome, Mapping):
                outcome = Outcome.from_dict(outcome)
            else:
                raise InvalidOutcome(
                    "outcome", f"expected an Outcome or a mapping, got {type(outcome).__name__}"
                )
        fetched = self._fetch_shared(decision_id)  # a replica: read before taking the lock
        with self._lock:
            if self._closed or self.read_only:
                self._check_open()
            now = self.clock()
            if self.reward_wait_s is not None:
                self._expire(now)
            # a replica leaves the pending entry to the follower, which applies the feedback
            p = (
                self._pending.get(decision_id) or self._own.get(decision_id)
                if self._shared
                else self._pending.pop(decision_id, None)
            )
            if p is None:
                store = self._store
                prior = fetched[0] if fetched else store.get_feedback(decision_id)
                if prior is not None:
                    if prior.defaulted and self.late_feedback == "reject" and self.reward_wait_s:
                        # the wait time ran out and the default reward was learned instead
                        # (else max_pending defaulted it early: then it is a duplicate)
                        drec = fetched[1] if fetched else store.get_decision(decision_id)
                        age = now - (drec.ts if drec is not None else prior.ts)
                        if age > self.reward_wait_s:
                            raise FeedbackTooLate(decision_id, age, self.reward_wait_s)
                    return self._duplicate(prior)
                drec = fetched[1] if fetched else store.get_decision(decision_id)
                if drec is None:
                    raise UnknownDecision(decision_id)
                p = pending_from_record(drec, self._reward)
            age = now - p.ts
            if (
                self.reward_wait_s is not None
                and age > self.reward_wait_s
                and self.late_feedback == "reject"
            ):
                if self.default_reward is not None:
                    self._apply(decision_id, p, None, self.default_reward, now)
                raise FeedbackTooLate(decision_id, age, self.reward_wait_s)
            r = p.reward(outcome)
            result = self._apply(decision_id, p, outcome.to_dict(), r, now)
        if self.log_decisions:
            _log.info(
                "feedback",
                decision_id=decision_id,
                arm=p.arm,
                reward=round(r, 6),
                valid=outcome.valid,
                latency_ms=outcome.latency_ms,
                cost_usd=outcome.cost_usd,
                error=outcome.error,
            )
        return result

    def _apply(
        self,
        decision_id: str,
        p: Pending,
        outcome: dict[str, Any] | None,
        reward: float,
        now: float,
    ) -> FeedbackResult:
        if self._shared:  # appended; the follower learns it from the log (replica.py)
            rec = FeedbackRecord(decision_id, 0, now, outcome, reward, defaulted=outcome is None)
            self._store.log_feedback(rec)
            result = FeedbackResult(
                decision_id, self._arm_or_parse(p.arm), reward, defaulted=outcome is None
            )
            return self._unsettled_result(result, rec)
        self._seq += 1
        self._store.log_feedback(
            FeedbackRecord(decision_id, self._seq, now, outcome, reward, defaulted=outcome is None)
        )
        # durable first, then learn: a failed write leaves the policy untouched
        self._learn(p, outcome, reward, now)
        self._since_snapshot += 1
        if self._since_snapshot >= self.snapshot_every:
            self.snapshot()
        return FeedbackResult(
            decision_id, self._arm_or_parse(p.arm), reward, defaulted=outcome is None
        )

    def _evicted(self, decision_id: str, p: Pending, now: float) -> None:
        """A pending decision left memory (``max_pending``): learned with the default reward
        when one is set (on a shared store: the default feedback is appended)."""
        if self.default_reward is not None:
            self._wrote()
            self._apply(decision_id, p, None, self.default_reward, now)

    def _duplicate(self, prior: FeedbackRecord) -> FeedbackResult:
        drec = self._store.get_decision(prior.decision_id)
        arm = self._arm_or_parse(drec.arm if drec is not None else "unknown/direct_emit")
        return FeedbackResult(
            prior.decision_id, arm, prior.reward, duplicate=True, defaulted=prior.defaulted
        )

    def _arm_or_parse(self, arm_id: str) -> Arm:
        arm = self._arm_by_id.get(arm_id)
        return arm if arm is not None else Arm.parse(arm_id)

    def _expire(self, now: float) -> None:
        assert self.reward_wait_s is not None
        if self._shared:
            self._expire_shared(now, self.reward_wait_s, self.default_reward)
            return
        limit = now - self.reward_wait_s
        while self._pending:
            did = next(iter(self._pending))
            p = self._pending[did]
            if p.ts >= limit:
                break
            del self._pending[did]
            if self.default_reward is not None:
                self._apply(did, p, None, self.default_reward, now)

    def expire(self) -> int:
        """Apply the reward-wait rules now; returns how many pending decisions expired."""
        if self.reward_wait_s is None:
            return 0
        with self._lock:
            before = len(self._pending)
            self._expire(self.clock())
            return before - len(self._pending)

    def tick(self) -> list[GuardianEvent]:
        """Advance the time-driven state to now and return the Guardian transitions it made.

        Quarantined arms whose cooldown ended move to probing (each transition is recorded in
        the store, logged and returned, oldest first), and pending decisions older than
        ``reward_wait_s`` expire (learned with ``default_reward`` when set). ``decide`` and
        ``feedback`` do this themselves; call it from a timer to move the state on while no
        traffic arrives — the queries (``health``, ``status``…) only *read* the state as of
        now and never record anything. Raises ``StateError`` when read-only or closed.

        Examples
        --------
        >>> import routewise as rw
        >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
        >>> ctl.tick()
        []
        """
        with self._lock:
            self._check_open()
            now = self.clock()
            if self.reward_wait_s is not None:
                self._expire(now)
            events = self._guardian.tick(now) if self._guardian is not None else []
            self._record(events)
            return events

    # --------------------------------------------------------------- guardian
    @property
    def guardian(self) -> Guardian | None:
        """The Guardian (``None`` when disabled)."""
        return self._guardian

    def health(self) -> dict[str, HealthState]:
        """Each active arm's state as of now: ``"healthy"``, ``"quarantined"``, ``"probing"``
        or ``"pinned"`` (a quarantine whose cooldown ended reads ``"probing"``). Pure: the
        transition itself is recorded by the next decision, feedback or :meth:`tick`."""
        with self._lock:
            if self._guardian is None:
                return dict.fromkeys(self._arm_ids, "healthy")
            return cast(dict[str, HealthState], self._guardian.states(self._arm_ids, self.clock()))

    def guardian_health(self) -> GuardianHealth:
        """:meth:`health` with whether the Guardian is on and which arm is pinned (pure)."""
        with self._lock:
            g = self._guardian
            return GuardianHealth(g is not None, g.pinned if g is not None else None, self.health())

    def events(self, limit: int | None = None) -> list[GuardianEvent]:
        """Health transitions (time, arm, from, to, reason, evidence), oldest first."""
        return [GuardianEvent.from_dict(r.event) for r in self._store.list_events(limit)]

    def transition_counts(self) -> dict[tuple[str, str, str], int]:
        """How many Guardian transitions were recorded (including before a restart), per
        ``(arm, to_state, source)``, sorted — kept as events are recorded, so reading it
        costs no store access.

        Examples
        --------
        >>> import routewise as rw
        >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], log_events=False)
        >>> ctl.pin("a:x/direct_emit")
        >>> ctl.transition_counts()
        {('a:x/direct_emit', 'pinned', 'operator'): 1}
        """
        with self._lock:
            return self._transitions.as_dict()

    def bound_hits(self) -> dict[str, int]:
        """How often each memory bound was hit in this process (restart replay included), by
        bound (README, "Bounds"); what ``/metrics`` exports. Pure.

        Examples
        --------
        >>> import routewise as rw
        >>> from structlog.testing import capture_logs
        >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], max_context_keys=2)
        >>> with capture_logs() as logs:  # the first hit of a bound is logged
        ...     ctl.decide({"a": 1, "b": 2, "c": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        routewise.errors.InvalidContext: context['<context>']: has 3 keys; at most 2 are allowed...
        >>> ctl.bound_hits()["max_context_keys"], logs[0]["bound"]
        (1, 'max_context_keys')
        """
        with self._lock:
            return self._bounds.as_dict()

    # ---------------------------------------------------------- best policy
    def best_policy(
        self, context: Mapping[str, Any] | None = None, *, arms: Iterable[ArmLike] | None = None
    ) -> list[RankedArm]:
        """Arms ranked by expected reward (with uncertainty) for ``context``; with no context,
        averaged over the recent traffic mix (the last ``recent_window`` decisions)."""
        eligible = self._eligible(arms)
        names = eligible if eligible is not None else self._arm_ids
        if eligible is None:
            eligible = self._all
        with self._lock:
            if context is not None:
                x = self._featurizer.transform(context, learn=False)
                mean, unc = self._policy.estimate(x, eligible)
            elif self._recent:
                means, uncs = [], []
                for xr in self._recent:
                    m, u = self._policy.estimate(xr, eligible)
                    means.append(m)
                    uncs.append(u)
                mean, unc = np.mean(means, axis=0), np.mean(uncs, axis=0)
            else:
                mean, unc = self._policy.estimate(
                    self._featurizer.transform({}, learn=False), eligible
                )
            counts = [self._stats[a].feedbacks if a in self._stats else 0 for a in names]
        order = sorted(range(len(names)), key=lambda i: (-float(mean[i]), names[i]))
        return [
            RankedArm(self._arm_by_id[names[i]], float(mean[i]), float(unc[i]), counts[i])
            for i in order
        ]

    # -------------------------------------------------------------- status
    def status(self) -> Status:
        """Per-arm counts, mean reward, validity, latency percentiles, cost and health (pure)."""
        with self._lock:
            health = self.health()
            arms: dict[str, ArmStatsRow] = {}
            for a in self._arm_ids:
                arms[a] = (self._stats.get(a) or ArmStats()).summary()
                arms[a]["health"] = health[a]
            for a, s in self._stats.items():
                if a not in arms:
                    arms[a] = s.summary()
                    arms[a]["retired"] = True
            decisions = sum(s.decisions for s in self._stats.values())
            feedbacks = sum(s.feedbacks for s in self._stats.values())
            return Status(
                policy=self._policy.name,
                decisions=decisions,
                feedbacks=feedbacks,
                pending=decisions - feedbacks,
                arms=arms,
            )

    # ---------------------------------------------------------------- state
    def export_trace(self, file: str | Path | IO[str], *, since: float | None = None) -> int:
        """Write the JSON-Lines trace (format: :mod:`routewise.simulations.trace`) to ``file``; returns lines written."""
        with self._lock:
            return write_trace(self._store, file, since)

    def close(self) -> None:
        """Snapshot, flush and close the store (if the controller opened it)."""
        self._stop_follower()
        with self._lock:
            if self._closed:
                return
            if self._since_snapshot and not self.read_only:
                self.snapshot()
            self._store.flush()
            if self._owns_store:
                self._store.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("controller is closed")
        if self.read_only:
            raise StateError(
                "controller is read-only (opened for queries): it cannot decide or learn"
            )

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Controller(policy={self._policy.name!r}, arms={len(self._arms)}, store={getattr(self._store, 'path', 'memory')!r})"
