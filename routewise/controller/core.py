"""The :class:`Controller`: decide → feedback → learn, with every step logged.

It is the only place that ties featurizer, policy, reward and store together. The CLI and
the sidecar are thin adapters over it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import structlog
from pydantic import ValidationError

from routewise.bandits.base import FloatArray, Policy, Selection, make_policy, split_policy_spec
from routewise.controller.experiments import (
    ComparisonHistory,
    ExperimentReport,
    ExperimentSpec,
    VariantSpec,
    VariantStats,
    assign,
    auto_stop,
    experiment_report,
    plot_confidence_sequence,
)
from routewise.controller.features import Featurizer
from routewise.controller.guardian import Guardian
from routewise.controller.stats import ArmStats
from routewise.errors import (
    ConfigError,
    FeedbackTooLate,
    InvalidOutcome,
    PolicyError,
    StateError,
    UnknownArm,
    UnknownDecision,
)
from routewise.reward import Scalarizer, get_reward, reward_argument
from routewise.state.base import (
    DecisionRecord,
    Durability,
    EventRecord,
    FeedbackRecord,
    Store,
    json_default,
)
from routewise.state.memory import MemoryStore
from routewise.state.sqlite import SQLiteStore
from routewise.types import (
    Arm,
    ArmLike,
    Decision,
    FeedbackResult,
    GuardianEvent,
    Outcome,
    RankedArm,
    Status,
)

__all__ = [
    "DEFAULT_POLICY",
    "Controller",
    "Decision",
    "FeedbackResult",
    "RankedArm",
    "Status",
]

#: The tuned default policy (see benchmarks/bakeoff.py and the routing simulation).
DEFAULT_POLICY: tuple[str, dict[str, Any]] = ("squarecb", {"gamma_scale": 100.0, "optimism": 0.3})

_log = structlog.get_logger("routewise")


class _IdSource(threading.local):
    """Per-thread pool of ``os.urandom`` randomness for :func:`_new_id`: one ``getrandom``
    call per 256 ids instead of one per id. Thread-local (no lock, no shared index) and
    dropped in a forked child (which must never reuse its parent's bytes)."""

    def __init__(self) -> None:
        self.pool = ""
        self.pos = 0


_ids = _IdSource()
_ID_POOL_BYTES = 10 * 256


def _reset_ids() -> None:
    global _ids
    _ids = _IdSource()


os.register_at_fork(after_in_child=_reset_ids)


def _new_id() -> str:
    """A UUIDv7-style id: 48-bit millisecond timestamp + 80 random bits, as 32 hex chars.

    Time-ordered ids keep the store's decision-id index append-mostly (random UUIDv4 keys
    scatter B-tree page writes and cost ~30 µs per commit in WAL mode). The random bits are
    ``os.urandom`` bytes, as before, read in batches.
    """
    src = _ids
    pos = src.pos
    if pos == 0:
        src.pool = os.urandom(_ID_POOL_BYTES).hex()
    src.pos = (pos + 20) % (2 * _ID_POOL_BYTES)
    return f"{time.time_ns() // 1_000_000:012x}{src.pool[pos : pos + 20]}"


@dataclass(slots=True)
class _Pending:
    arm: str
    x: FloatArray
    reward: Scalarizer
    ts: float
    exp: str | None = None
    variant: str | None = None


@dataclass(slots=True)
class _Variant:
    """One experiment variant's own learner: policy state, reward, arm subset, statistics."""

    policy: Policy
    reward: Scalarizer
    arms: list[str] | None
    stats: VariantStats
    history: ComparisonHistory | None  # vs the control (None for the control itself)


def _open_store(store: Store | str | Path | None, durability: Durability, read_only: bool) -> Store:
    if store is None:
        return MemoryStore()
    if isinstance(store, str | Path):
        return SQLiteStore(store, durability=durability, read_only=read_only)
    if isinstance(store, Store):
        return store
    raise ConfigError("store", f"expected None, a path or a Store, got {type(store).__name__}")


def _served(
    sel: Selection, names: list[str]
) -> tuple[str, float, list[str], FloatArray, FloatArray, bool, str]:
    """``Controller._choose``'s answer for a plain policy draw over ``names``."""
    return sel.arm, sel.propensity, names, sel.probabilities, sel.scores, sel.explored, sel.method


class Controller:
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
    read_only
        Open an existing store for queries only (``best_policy``, ``status``, ``health``,
        ``events``, ``export_trace``) without taking the writer lock — safe next to a running
        sidecar. ``decide``/``feedback``/operator actions then raise ``StateError``.

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
    ) -> None:
        if reward_wait_s is not None and not (reward_wait_s > 0 and np.isfinite(reward_wait_s)):
            raise ConfigError(
                "reward_wait_s", f"must be a positive number of seconds, got {reward_wait_s!r}"
            )
        if late_feedback not in ("reject", "accept"):
            raise ConfigError(
                "late_feedback", f"must be 'reject' or 'accept', got {late_feedback!r}"
            )
        if default_reward is not None:
            if not (0.0 <= default_reward <= 1.0):
                raise ConfigError("default_reward", f"must be in [0, 1], got {default_reward!r}")
            if reward_wait_s is None:
                raise ConfigError(
                    "default_reward", "needs reward_wait_s (when is a reward missing?)"
                )
        if snapshot_every < 1:
            raise ConfigError("snapshot_every", f"must be >= 1, got {snapshot_every!r}")
        if recent_window < 1:
            raise ConfigError("recent_window", f"must be >= 1, got {recent_window!r}")
        self.reward_wait_s = reward_wait_s
        self.late_feedback = late_feedback
        self.default_reward = default_reward
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.log_decisions = log_decisions
        self.log_events = log_events
        self.recent_window = recent_window
        if guardian is True:
            guardian = Guardian()
        elif guardian is False or guardian is None:
            guardian = None
        elif not isinstance(guardian, Guardian):
            raise ConfigError(
                "guardian", f"expected True/False or a Guardian, got {type(guardian).__name__}"
            )
        self._guardian: Guardian | None = guardian

        self._lock = threading.RLock()
        self.read_only = read_only
        new_file = (
            Path(store)
            if isinstance(store, str | Path)
            and str(store) != ":memory:"
            and not Path(store).exists()
            else None
        )
        self._store = _open_store(store, durability, read_only)
        self._owns_store = not isinstance(store, Store)
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
        if arms is None:
            if meta is None:
                raise ConfigError(
                    "arms", "required when creating a new controller (the store is empty)"
                )
            arm_list = [Arm.parse(a) for a in meta["arms"]]
        else:
            if isinstance(arms, str | Arm):
                raise ConfigError("arms", "expected a list of arms, got a single arm")
            arm_list = [Arm.parse(a) for a in arms]
        if not arm_list:
            raise ConfigError("arms", "at least one arm is required")
        ids = [a.id for a in arm_list]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ConfigError("arms", f"duplicate arm {dup!r}")
        self._arms: list[Arm] = arm_list
        self._arm_by_id: dict[str, Arm] = {a.id: a for a in arm_list}
        self._arm_ids: list[str] = ids

        # policy spec: explicit > stored > default
        if meta is not None and seed is None:
            seed = meta.get("seed")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
        self.seed = seed
        stored_policy = meta.get("policy") if meta else None
        if isinstance(policy, Policy):
            pol_name, pol_params = policy.name, policy.params()
        elif isinstance(policy, str):  # "name" or "name:key=value[:...]"; "default" = tuned
            pol_name, pol_params = split_policy_spec(policy)
            if pol_name == "default":
                if pol_params:
                    raise ConfigError("policy", "'default' takes no parameters (it is tuned)")
                pol_name, pol_params = DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1])
        elif policy is None and stored_policy is not None:
            pol_name, pol_params = stored_policy["name"], dict(stored_policy["params"])
        elif policy is None:
            pol_name, pol_params = DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1])
        else:
            raise ConfigError(
                "policy", f"expected a registry name or a Policy, got {type(policy).__name__}"
            )
        if stored_policy is not None and stored_policy["name"] != pol_name:
            raise ConfigError(
                "policy",
                f"the store was learned with policy {stored_policy['name']!r}, not {pol_name!r}; "
                "use a new store (or export the trace and replay it) to switch policies",
            )
        if isinstance(policy, Policy):
            self._policy = policy
        else:
            params = {k: v for k, v in pol_params.items() if k != "seed"}
            self._policy = make_policy(pol_name, seed=seed, **params)

        if reward is None and meta is not None:
            reward = meta.get("reward")
        self._reward: Scalarizer = reward_argument(reward)
        if features is None and meta is not None:
            features = meta.get("features")
        if features is not None and not isinstance(features, Mapping):
            raise ConfigError(
                "features", f"must be a feature spec mapping, got {type(features).__name__}"
            )
        self._features_spec = dict(features) if features is not None else None
        self._featurizer = Featurizer(self._features_spec)

        # the controller's own generator: the Guardian's probe lottery
        self._rng = np.random.default_rng(np.random.SeedSequence([abs(int(seed)), 0x6A4D]))
        if self._guardian is not None:
            self._guardian.add_arms(ids)
            self._guardian.on_trip = self._on_trip
        self._replaying = False

        self._experiments: dict[str, ExperimentSpec] = {}
        self._variants: dict[str, dict[str, _Variant]] = {}
        self._running: str | None = None
        for name, raw in ((meta or {}).get("experiments") or {}).items():
            spec = ExperimentSpec.model_validate(raw)
            self._experiments[name] = spec
            if spec.status in ("running", "stopped"):
                self._variants[name] = self._build_variants(spec)
            if spec.status == "running":
                self._running = name

        self._stats: dict[str, ArmStats] = {}
        self._pending: dict[str, _Pending] = {}
        self._recent: deque[FloatArray] = deque(maxlen=self.recent_window)
        self._since_snapshot = 0
        # register the arms in config order before replaying, so row positions (and with
        # them the floating-point results) match the live run's
        self._policy.add_arms(ids)
        self._restore()
        self._policy.add_arms(ids)
        # `None` asks the policy for all of *its* arms in *its* order; that is only the active
        # arm list when the orders agree (a restored or reordered store may differ)
        self._all: list[str] | None = None if self._policy.arms == ids else ids
        if not self.read_only:
            self._save_meta()
        self._closed = False
        if self.log_decisions:
            _log.info(
                "controller.open",
                policy=self._policy.name,
                arms=len(ids),
                store=getattr(self._store, "path", "memory"),
                seq=self._seq,
                restored_feedbacks=self._replayed,
            )

    def _save_meta(self) -> None:
        self._store.save_meta(
            {
                "experiments": {
                    name: spec.model_dump(mode="json") for name, spec in self._experiments.items()
                },
                "arms": self._arm_ids,
                "policy": {"name": self._policy.name, "params": self._policy.params()},
                "reward": self._reward.to_dict(),
                "features": self._features_spec,
                "seed": self.seed,
            }
        )

    def _restore(self) -> None:
        snap = self._store.latest_snapshot()
        seq0 = 0
        if snap is not None:
            seq0, state = snap
            try:
                self._policy = Policy.from_state(state["policy"])
                self._featurizer = Featurizer.from_state(state["featurizer"])
                self._stats = {k: ArmStats.from_state(v) for k, v in state["stats"].items()}
                if "rng" in state:
                    self._rng.bit_generator.state = state["rng"]
                for name, vstates in (state.get("experiments") or {}).items():
                    for vname, vs in vstates.items():
                        v = self._variants.get(name, {}).get(vname)
                        if v is not None:
                            v.policy = Policy.from_state(vs["policy"])
                            v.stats = VariantStats.from_state(vs["stats"])
                            if vs.get("history") is not None:
                                v.history = ComparisonHistory.from_state(vs["history"])
                if self._guardian is not None and state.get("guardian") is not None:
                    self._guardian.set_state(state["guardian"])
                    self._guardian.add_arms(self._arm_ids)
            except (KeyError, TypeError) as exc:
                raise StateError(f"snapshot at seq {seq0} is unreadable ({exc!r})") from None
        self._replayed = 0
        self._replaying = True
        for kind, rec in self._store.events_since(seq0):
            if kind == "event":
                assert isinstance(rec, EventRecord)
                ev = GuardianEvent.from_dict(rec.event)
                if self._guardian is not None and ev.source == "operator":
                    self._guardian.add_arms([ev.arm])
                    self._guardian.apply_operator(ev)
                continue
            if kind == "decision":
                assert isinstance(rec, DecisionRecord)
                if self._guardian is not None:
                    self._guardian.add_arms([rec.arm])
                    self._guardian.tick(rec.ts)
                self._featurizer.learn(rec.context)
                p = self._pending_from_record(rec)
                learner = self._learner(p)
                if learner is not None:
                    learner.add_arm(rec.arm)
                    learner.ensure_dim(len(rec.features))
                if self._policy is not learner:
                    self._policy.ensure_dim(len(rec.features))
                self._stat(rec.arm).decisions += 1
                if p.exp is not None and p.variant is not None:
                    v = self._variants.get(p.exp, {}).get(p.variant)
                    if v is not None:
                        v.stats.assigned()
                self._pending[rec.decision_id] = p
            else:
                assert isinstance(rec, FeedbackRecord)
                fp = self._pending.pop(rec.decision_id, None)
                if fp is None:
                    drec = self._store.get_decision(rec.decision_id)
                    if drec is None:
                        raise StateError(
                            f"feedback for unknown decision {rec.decision_id!r} in the store"
                        )
                    fp = self._pending_from_record(drec)
                self._learn(fp, rec.outcome, rec.reward, rec.ts)
                self._replayed += 1
                self._since_snapshot += 1
        self._replaying = False
        self._seq = max(self._store.max_seq(), seq0)
        for drec in self._store.recent_decisions(self.recent_window):
            self._recent.append(np.asarray(drec.features, dtype=np.float64))

    def _pending_from_record(self, rec: DecisionRecord) -> _Pending:
        scal = (
            Scalarizer.from_dict(rec.reward_spec) if rec.reward_spec is not None else self._reward
        )
        return _Pending(
            rec.arm,
            np.asarray(rec.features, dtype=np.float64),
            scal,
            rec.ts,
            rec.extra.get("experiment"),
            rec.extra.get("variant"),
        )

    def _stat(self, arm: str) -> ArmStats:
        s = self._stats.get(arm)
        if s is None:
            s = self._stats[arm] = ArmStats()
        return s

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> Controller:
        """Build from a TOML config file (and ``ROUTEWISE_*`` environment variables).

        Precedence: ``overrides`` (e.g. CLI flags) > config file > environment > defaults.
        """
        from routewise.config import load_settings

        return load_settings(path, **overrides).build_controller()

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
            x = self._featurizer.transform(context)
            did = _new_id()
            extra: dict[str, Any] = {}
            if request_id is not None:
                extra["request_id"] = request_id
            policy, all_arg = self._policy, self._all
            exp_name = variant = None
            if self._running is not None:
                exp_name = self._running
                spec = self._experiments[exp_name]
                unit = (
                    unit_id
                    if unit_id is not None
                    else (request_id if request_id is not None else did)
                )
                variant = assign(spec.salt, str(unit), spec.split)
                v = self._variants[exp_name][variant]
                policy, all_arg = v.policy, self._arm_ids
                if reward is None:
                    scal = v.reward
                if v.arms is not None:
                    base = eligible if eligible is not None else self._arm_ids
                    eligible = [a for a in base if a in v.arms] or list(v.arms)
                v.stats.assigned()
                extra["experiment"], extra["variant"] = exp_name, variant
                if unit_id is not None:
                    extra["unit_id"] = unit_id
            arm_id, propensity, names, probs, scores, explored, method = self._choose(
                x, eligible, now, policy, all_arg
            )
            self._seq += 1
            rec = DecisionRecord(
                decision_id=did,
                seq=self._seq,
                ts=now,
                context=context if type(context) is dict else dict(context),
                arm=arm_id,
                propensity=propensity,
                features=x,
                policy=policy.name,
                reward_spec=None if scal is self._reward else scal.to_dict(),
                eligible=None if names is self._arm_ids else list(names),
                extra=extra,
            )
            self._store.log_decision(rec)
            self._pending[did] = _Pending(arm_id, x, scal, now, exp_name, variant)
            self._recent.append(x)
            self._stat(arm_id).decisions += 1
        decision = Decision(
            decision_id=did,
            arm=self._arm_by_id[arm_id],
            propensity=propensity,
            scores=dict(zip(names, scores.tolist(), strict=True)),
            probabilities=dict(zip(names, probs.tolist(), strict=True)),
            explored=explored,
            policy=policy.name,
            propensity_method=method,
            ts=now,
            reward=scal.name,
            experiment=exp_name,
            variant=variant,
        )
        if self.log_decisions:
            _log.info(
                "decision",
                decision_id=did,
                arm=arm_id,
                propensity=round(propensity, 6),
                explored=explored,
                policy=self._policy.name,
            )
        return decision

    def _choose(
        self,
        x: FloatArray,
        eligible: list[str] | None,
        now: float,
        policy: Policy,
        all_arg: list[str] | None,
    ) -> tuple[str, float, list[str], FloatArray, FloatArray, bool, str]:
        """Pick an arm: Guardian filtering (pin, quarantine, probe lottery), then the policy.

        The returned distribution is the one the arm was actually drawn from, after every
        filter, so the logged propensity stays exact for off-policy evaluation.
        """
        g = self._guardian
        if g is None:
            sel = policy.select(x, eligible if eligible is not None else all_arg)
            names = eligible if eligible is not None else self._arm_ids
            return _served(sel, names)
        requested = eligible if eligible is not None else self._arm_ids
        if g.quiet:  # tick and split would change nothing: serve every requested arm
            if len(requested) == len(self._arm_ids):
                names, sel = self._arm_ids, policy.select(x, all_arg)
            else:
                names = list(requested)
                sel = policy.select(x, names)
            return _served(sel, names)
        self._record(g.tick(now))
        pinned = g.pinned
        if pinned is not None and pinned in requested:
            mean, _ = policy.estimate(x, [pinned])
            return pinned, 1.0, [pinned], np.ones(1), mean, False, "exact"
        serving, probing = g.split(requested)
        full = len(serving) == len(self._arm_ids)
        serve_arg = all_arg if full else serving
        names = self._arm_ids if full else serving
        if not probing:
            sel = policy.select(x, serve_arg)
            return _served(sel, names)
        share = g.probe_share
        if self._rng.random() < share:
            probs_p, scores_p, _ = policy.distribution(x, serve_arg)
            arm = probing[int(self._rng.integers(len(probing)))]
            propensity, explored, method = (
                share / len(probing),
                True,
                policy.propensity_method,
            )
        else:
            sel = policy.select(x, serve_arg)
            probs_p, scores_p = sel.probabilities, sel.scores
            arm, propensity, explored, method = (
                sel.arm,
                (1.0 - share) * sel.propensity,
                sel.explored,
                sel.method,
            )
        mean_probe, _ = policy.estimate(x, probing)
        probs = np.concatenate(
            [(1.0 - share) * probs_p, np.full(len(probing), share / len(probing))]
        )
        return (
            arm,
            propensity,
            [*serving, *probing],
            probs,
            np.concatenate([scores_p, mean_probe]),
            explored,
            method,
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
        with self._lock:
            if self._closed or self.read_only:
                self._check_open()
            now = self.clock()
            if self.reward_wait_s is not None:
                self._expire(now)
            p = self._pending.pop(decision_id, None)
            if p is None:
                prior = self._store.get_feedback(decision_id)
                if prior is not None:
                    if prior.defaulted and self.late_feedback == "reject" and self.reward_wait_s:
                        # the wait time ran out and the default reward was learned instead
                        drec = self._store.get_decision(decision_id)
                        age = now - (drec.ts if drec is not None else prior.ts)
                        raise FeedbackTooLate(decision_id, age, self.reward_wait_s)
                    return self._duplicate(prior)
                drec = self._store.get_decision(decision_id)
                if drec is None:
                    raise UnknownDecision(decision_id)
                p = self._pending_from_record(drec)
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
        p: _Pending,
        outcome: dict[str, Any] | None,
        reward: float,
        now: float,
    ) -> FeedbackResult:
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

    def _learner(self, p: _Pending) -> Policy | None:
        """The policy that learns from a decision: its experiment variant's, else the main one
        (``None`` for a variant of an experiment that ended without being promoted)."""
        if p.exp is None or p.variant is None:
            return self._policy
        v = self._variants.get(p.exp, {}).get(p.variant)
        if v is not None:
            return v.policy
        spec = self._experiments.get(p.exp)
        if spec is not None and spec.status == "promoted" and spec.winner == p.variant:
            return self._policy
        return None

    def _learn(self, p: _Pending, outcome: dict[str, Any] | None, reward: float, ts: float) -> None:
        """Apply one feedback to the learning state (live and during restart replay alike)."""
        learner = self._policy if p.exp is None else self._learner(p)
        if learner is not None:
            learner.add_arm(p.arm)
            learner.update(p.arm, p.x, reward)
        self._stat(p.arm).observe(outcome, reward)
        if p.exp is not None and p.variant is not None and outcome is not None:
            self._observe_experiment(p.exp, p.variant, reward, outcome, ts)
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

    # --------------------------------------------------------------- guardian
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
            if self.log_events:
                _log.warning(
                    "guardian.transition",
                    arm=ev.arm,
                    from_state=ev.from_state,
                    to_state=ev.to_state,
                    reason=ev.reason,
                    evidence=ev.evidence,
                    source=ev.source,
                )

    @property
    def guardian(self) -> Guardian | None:
        """The Guardian (``None`` when disabled)."""
        return self._guardian

    def health(self) -> dict[str, str]:
        """Each active arm's state: ``"healthy"``, ``"quarantined"``, ``"probing"`` or ``"pinned"``."""
        with self._lock:
            if self._guardian is None:
                return dict.fromkeys(self._arm_ids, "healthy")
            self._record(self._guardian.tick(self.clock()))
            return {a: self._guardian.state(a) for a in self._arm_ids}

    def events(self, limit: int | None = None) -> list[GuardianEvent]:
        """Health transitions (time, arm, from, to, reason, evidence), oldest first."""
        return [GuardianEvent.from_dict(r.event) for r in self._store.list_events(limit)]

    def _operator(self, action: str, arm: ArmLike) -> None:
        aid = arm if isinstance(arm, str) else Arm.parse(arm).id
        if aid not in self._arm_by_id:
            raise UnknownArm(aid, self._arm_ids)
        if self._guardian is None:
            raise ConfigError("guardian", f"cannot {action} {aid!r}: the Guardian is disabled")
        with self._lock:
            self._check_open()
            now = self.clock()
            if action == "pin":
                events = self._guardian.pin(aid, now)
            elif action == "quarantine":
                events = self._guardian.quarantine(aid, now)
            else:
                events = self._guardian.release(aid, now)
            self._record(events)

    def pin(self, arm: ArmLike) -> None:
        """Send all traffic to ``arm`` (propensity 1) until :meth:`release`."""
        self._operator("pin", arm)

    def quarantine(self, arm: ArmLike) -> None:
        """Exclude ``arm`` from selection until :meth:`release`."""
        self._operator("quarantine", arm)

    def release(self, arm: ArmLike) -> None:
        """Return ``arm`` to healthy (unpin or unquarantine)."""
        self._operator("release", arm)

    # ----------------------------------------------------------- experiments
    def _build_variants(self, spec: ExperimentSpec, only: str | None = None) -> dict[str, _Variant]:
        out: dict[str, _Variant] = {}
        for i, (vname, vs) in enumerate(spec.variants.items()):
            if only is not None and vname != only:
                continue
            if vs.policy is None:
                pol_name, params = (
                    self._policy.name,
                    {k: v for k, v in self._policy.params().items() if k != "seed"},
                )
            elif isinstance(vs.policy, str):
                pol_name, params = vs.policy, {}
            else:
                params = dict(vs.policy)
                pol_name = str(params.pop("name", ""))
                params.pop("seed", None)
            seed = (self.seed + 7919 * (i + 1)) % (2**63)  # distinct, reproducible per variant
            policy = make_policy(pol_name, seed=seed, **params)
            policy.add_arms(self._arm_ids)
            policy.ensure_dim(self._featurizer.dim)
            arms = None
            if vs.arms is not None:
                arms = [Arm.parse(a).id for a in vs.arms]
                for a in arms:
                    if a not in self._arm_by_id:
                        raise UnknownArm(a, self._arm_ids)
            reward = self._reward if vs.reward is None else get_reward(vs.reward)
            history = None if vname == spec.control else ComparisonHistory()
            out[vname] = _Variant(policy, reward, arms, VariantStats(), history)
        return out

    def create_experiment(
        self,
        name: str,
        variants: Mapping[str, Mapping[str, Any]],
        split: Mapping[str, float] | None = None,
        **options: Any,
    ) -> ExperimentSpec:
        """Create a draft experiment. ``variants`` maps a name to a policy spec
        (``{"policy": ..., "reward": ..., "arms": [...]}``); the first is the control.
        ``split`` defaults to equal shares; ``options`` are further
        :class:`~routewise.controller.experiments.ExperimentSpec` fields (``salt``,
        ``alpha``, ``guardrails``)."""
        with self._lock:
            self._check_open()
            if name in self._experiments:
                raise ConfigError("name", f"experiment {name!r} already exists")
            if split is None:
                split = {k: 1.0 / len(variants) for k in variants}
            parsed: dict[str, VariantSpec] = {}
            for k, v in variants.items():
                if not isinstance(v, Mapping):
                    raise ConfigError(f"variants.{k}", "must be a mapping (policy, reward, arms)")
                try:
                    parsed[k] = VariantSpec.model_validate(dict(v))
                except ConfigError as exc:
                    raise ConfigError(f"variants.{k}.{exc.field}", exc.reason) from None
            try:
                spec = ExperimentSpec(
                    name=name,
                    variants=parsed,
                    split=dict(split),
                    created_ts=self.clock(),
                    **options,
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ConfigError(
                    ".".join(str(x) for x in err["loc"]) or "experiment", err["msg"]
                ) from None
            # resolve policies, rewards and arm subsets now, naming the variant on failure
            for k in spec.variants:
                try:
                    self._build_variants(spec, only=k)
                except ConfigError as exc:
                    raise ConfigError(f"variants.{k}.{exc.field}", exc.reason) from None
                except PolicyError as exc:
                    raise PolicyError(f"variants.{k}.policy: {exc}") from None
            self._experiments[name] = spec
            self._save_meta()
            return spec

    def _experiment(self, name: str) -> ExperimentSpec:
        spec = self._experiments.get(name)
        if spec is None:
            raise ConfigError(
                "name", f"no experiment {name!r} (known: {sorted(self._experiments)})"
            )
        return spec

    def _transition(self, name: str, to: str, winner: str | None = None) -> ExperimentSpec:
        new = self._experiment(name).transition(to, self.clock(), winner=winner)
        self._experiments[name] = new
        return new

    def start_experiment(self, name: str) -> ExperimentSpec:
        """Start routing traffic to the variants (one experiment runs at a time)."""
        with self._lock:
            self._check_open()
            self._experiment(name)
            if self._running is not None and self._running != name:
                raise ConfigError("name", f"experiment {self._running!r} is already running")
            spec = self._transition(name, "running")
            self._variants[name] = self._build_variants(spec)
            self._running = name
            self._save_meta()
            self.snapshot()
            return spec

    def _end(self, name: str, to: str) -> ExperimentSpec:
        """Stop routing traffic to ``name`` (stopped or aborted) and persist."""
        with self._lock:
            self._check_open()
            spec = self._transition(name, to)
            if self._running == name:
                self._running = None
            if to == "aborted":
                self._variants.pop(name, None)
            self._save_meta()
            self.snapshot()
            return spec

    def stop_experiment(self, name: str) -> ExperimentSpec:
        """Stop assigning traffic; the statistics stay for status, promote or abort."""
        return self._end(name, "stopped")

    def promote_experiment(self, name: str, variant: str) -> ExperimentSpec:
        """Make ``variant`` the default: its policy (with what it learned), reward and arms."""
        with self._lock:
            self._check_open()
            current = self._experiments.get(name)
            if current is not None and variant not in current.variants:
                raise ConfigError(
                    "variant",
                    f"{variant!r} is not a variant of {name!r} ({list(current.variants)})",
                )
            if self._running == name:
                self.stop_experiment(name)
            spec = self._transition(name, "promoted", winner=variant)
            v = self._variants[name][variant]
            self._policy = v.policy
            self._reward = v.reward
            if v.arms is not None:
                self._arms = [self._arm_by_id[a] for a in v.arms]
                self._arm_ids = list(v.arms)
            self._all = None if self._policy.arms == self._arm_ids else self._arm_ids
            del self._variants[name]
            self._save_meta()
            self.snapshot()
            return spec

    def abort_experiment(self, name: str) -> ExperimentSpec:
        """End the experiment without changing the default policy."""
        return self._end(name, "aborted")

    def experiments(self) -> list[ExperimentSpec]:
        """Every experiment, in creation order."""
        return list(self._experiments.values())

    def experiment_status(self, name: str) -> ExperimentReport:
        """Per-variant statistics and always-valid comparisons against the control."""
        with self._lock:
            spec = self._experiment(name)
            variants = self._variants.get(name)
            if variants is None and spec.status == "draft":
                return experiment_report(spec, {})  # not started yet: every count is zero
            if variants is None:
                raise ConfigError(
                    "name", f"experiment {name!r} is {spec.status}: its statistics were released"
                )
            return experiment_report(
                spec,
                {k: v.stats for k, v in variants.items()},
                {k: v.history for k, v in variants.items() if v.history is not None},
            )

    def plot_experiment(self, name: str, path: str | Path, variant: str | None = None) -> None:
        """PNG of a candidate's reward difference vs the control with its confidence sequence
        over time (default: the first candidate)."""
        with self._lock:
            variants = self._variants.get(name)
            if variants is None:
                raise ConfigError("name", f"no statistics for experiment {name!r}")
            candidates = [k for k, v in variants.items() if v.history is not None]
            chosen = variant if variant is not None else candidates[0]
            if chosen not in candidates:
                raise ConfigError(
                    "variant", f"{chosen!r} is not a candidate of {name!r} ({candidates})"
                )
            history = variants[chosen].history
            assert history is not None
            spec = self._experiments[name]
            plot_confidence_sequence(
                history,
                path,
                title=f"{name}: {chosen} − {spec.control} (reward, {1 - spec.alpha:.0%} CS)",
            )

    def _observe_experiment(
        self, name: str, variant: str, reward: float, outcome: dict[str, Any], ts: float
    ) -> None:
        v = self._variants.get(name, {}).get(variant)
        if v is None:
            return
        v.stats.observe(
            reward,
            bool(outcome["valid"]) and outcome.get("error") is None,
            float(outcome["latency_ms"]),
            float(outcome["cost_usd"]),
        )
        spec = self._experiments[name]
        variants = self._variants[name]
        control = variants[spec.control]
        for k, x in variants.items():
            if x.history is not None and (k == variant or variant == spec.control):
                x.history.update(control.stats, x.stats, alpha=spec.alpha, target_n=spec.target_n)
        if spec.status == "running" and not self._replaying and v.stats.n % 50 == 0:
            stopped = auto_stop(spec, {k: x.stats for k, x in variants.items()}, ts)
            if stopped is not spec:
                self._experiments[name] = stopped
                if self._running == name:
                    self._running = None
                self._save_meta()
                self.snapshot()
                _log.warning(
                    "experiment.auto_stopped",
                    experiment=name,
                    guardrail=stopped.stopped_by_guardrail,
                )

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
        """Per-arm counts, mean reward, validity, latency percentiles and cost."""
        with self._lock:
            health = self.health()
            arms = {a: {**self._stat(a).summary(), "health": health[a]} for a in self._arm_ids}
            for a, s in self._stats.items():
                if a not in arms:
                    arms[a] = {**s.summary(), "retired": True}
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
    def snapshot(self) -> None:
        """Persist the learned state now (done automatically every ``snapshot_every``)."""
        with self._lock:
            state = {
                "seq": self._seq,
                "policy": self._policy.to_state(),
                "featurizer": self._featurizer.to_state(),
                "stats": {k: v.to_state() for k, v in self._stats.items()},
                "rng": self._rng.bit_generator.state,
                "guardian": self._guardian.to_state() if self._guardian is not None else None,
                "experiments": {
                    name: {
                        vname: {
                            "policy": v.policy.to_state(),
                            "stats": v.stats.to_state(),
                            "history": v.history.to_state() if v.history is not None else None,
                        }
                        for vname, v in variants.items()
                    }
                    for name, variants in self._variants.items()
                },
            }
            self._store.save_snapshot(self._seq, state)
            self._since_snapshot = 0

    def export_trace(self, file: str | Path | IO[str], *, since: float | None = None) -> int:
        """Write the JSON-Lines trace (DESIGN.md format) to ``file``; returns lines written."""
        import json

        encode = json.JSONEncoder(separators=(",", ":"), default=json_default).encode

        def write(fh: IO[str]) -> int:
            n = 0
            for line in self._store.iter_trace(since):
                fh.write(encode(line) + "\n")
                n += 1
            return n

        with self._lock:
            self._store.flush()
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

    def close(self) -> None:
        """Snapshot, flush and close the store (if the controller opened it)."""
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
