"""The experiments of one controller: specs, lifecycle, the variants' learners and their
statistics — the collaborator :class:`~routewise.Controller` delegates its experiment
methods to.

Errors: an unknown name is :class:`~routewise.errors.UnknownExperiment` (field ``name``),
whatever the operation; what conflicts with the experiments as they are is
:class:`~routewise.errors.ExperimentConflict` — field ``status`` for a disallowed transition,
``name`` when the name is already in use, another experiment is already running or the
statistics were released (an aborted or promoted experiment), ``variant`` when promoting a
variant the experiment does not have; a bad spec is a ``ConfigError`` naming the field (see
:mod:`~routewise.controller.experiments.validation`), an unknown arm ``UnknownArm``, a policy
the registry refuses ``PolicyError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import structlog

from routewise.bandits.base import Policy
from routewise.controller.experiments.assignment import Assignment
from routewise.controller.experiments.checks import auto_stop
from routewise.controller.experiments.plot import plot_confidence_sequence
from routewise.controller.experiments.report import experiment_report
from routewise.controller.experiments.validation import (
    check_options,
    check_split,
    parse_variants,
)
from routewise.controller.experiments.variants import (
    VariantDefaults,
    VariantLearner,
    build_learner,
    build_learners,
)
from routewise.errors import ConfigError, ExperimentConflict, UnknownExperiment
from routewise.types import ExperimentReport, ExperimentSpec, assign

__all__ = ["Experiments"]

_log = structlog.get_logger("routewise")

#: Guardrails are evaluated every this many outcomes of a variant.
GUARDRAIL_EVERY = 50


def _no_check() -> None:
    return None


def _no_persist(snapshot: bool) -> None:
    return None


class Experiments:
    """A controller's experiments (one runs at a time).

    Parameters
    ----------
    defaults
        Called for what a variant inherits (the controller's current default policy, reward,
        arms, feature dimension and seed).
    clock
        Time source for the lifecycle timestamps.
    lock
        Held around every operation (the controller's lock).
    check_open
        Called before every change (raises when the controller is closed or read-only).
    persist
        Called after every change: ``persist(False)`` saves the specs, ``persist(True)``
        also snapshots the learned state.
    adopt
        Called with the winner's learner when an experiment is promoted (the controller makes
        its policy, reward and arms the default).

    Examples
    --------
    >>> from routewise.bandits import make_policy
    >>> from routewise.reward import get_reward
    >>> arms = ["a:x/direct_emit", "b:y/direct_emit"]
    >>> defaults = VariantDefaults(make_policy("squarecb", seed=0), get_reward(), arms, 4, 0)
    >>> exps = Experiments(lambda: defaults, clock=lambda: 1.0)
    >>> exps.create("ab", {"control": {}, "candidate": {"policy": "linucb"}}).status
    'draft'
    >>> exps.start("ab").status
    'running'
    >>> a = exps.assign("user-7")
    >>> a is not None and a.experiment == "ab" and a.variant in ("control", "candidate")
    True
    >>> exps.status("ab").variants[a.variant].assignments
    1
    >>> exps.start("nope")
    Traceback (most recent call last):
    ...
    routewise.errors.UnknownExperiment: name: no experiment 'nope' (known: ['ab'])
    """

    def __init__(
        self,
        defaults: Callable[[], VariantDefaults],
        *,
        clock: Callable[[], float] = time.time,
        lock: AbstractContextManager[Any] | None = None,
        check_open: Callable[[], None] = _no_check,
        persist: Callable[[bool], None] = _no_persist,
        adopt: Callable[[VariantLearner], None] | None = None,
    ) -> None:
        self._defaults = defaults
        self._clock = clock
        self._lock: AbstractContextManager[Any] = lock if lock is not None else threading.RLock()
        self._check_open = check_open
        self._persist = persist
        self._adopt = adopt
        self._specs: dict[str, ExperimentSpec] = {}
        self._learners: dict[str, dict[str, VariantLearner]] = {}
        self._running: str | None = None

    # ------------------------------------------------------------------ queries
    @property
    def running(self) -> str | None:
        """The running experiment's name (``None``: none runs)."""
        return self._running

    def specs(self) -> list[ExperimentSpec]:
        """Every experiment, in creation order."""
        return list(self._specs.values())

    def get(self, name: str) -> ExperimentSpec:
        """The spec of ``name`` (``UnknownExperiment`` if never created)."""
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownExperiment(name, list(self._specs))
        return spec

    def status(self, name: str) -> ExperimentReport:
        """Per-variant statistics and always-valid comparisons against the control (a draft
        reports zero counts)."""
        with self._lock:
            spec = self.get(name)
            learners = self._learners.get(name)
            if learners is None and spec.status == "draft":
                return experiment_report(spec, {})  # not started yet: every count is zero
            if learners is None:
                raise ExperimentConflict(
                    name,
                    "name",
                    f"experiment {name!r} is {spec.status}: its statistics were released",
                )
            return experiment_report(
                spec,
                {k: v.stats for k, v in learners.items()},
                {k: v.history for k, v in learners.items() if v.history is not None},
            )

    def plot(self, name: str, path: str | Path, variant: str | None = None) -> None:
        """PNG of a candidate's reward difference vs the control with its confidence sequence
        over time (default: the first candidate)."""
        with self._lock:
            spec = self.get(name)
            learners = self._learners.get(name)
            if learners is None:
                raise ExperimentConflict(
                    name, "name", f"experiment {name!r} is {spec.status}: it has no statistics"
                )
            candidates = [k for k, v in learners.items() if v.history is not None]
            chosen = variant if variant is not None else candidates[0]
            if chosen not in candidates:
                raise ConfigError(
                    "variant", f"{chosen!r} is not a candidate of {name!r} ({candidates})"
                )
            history = learners[chosen].history
            assert history is not None
            plot_confidence_sequence(
                history,
                path,
                title=f"{name}: {chosen} − {spec.control} (reward, {1 - spec.alpha:.0%} CS)",
            )

    # ---------------------------------------------------------------- lifecycle
    def create(
        self,
        name: str,
        variants: Mapping[str, Any],
        split: Mapping[str, float] | None = None,
        **options: Any,
    ) -> ExperimentSpec:
        """Create a draft experiment; every part of the spec is checked (and each variant's
        policy, reward and arms resolved) before anything is stored."""
        with self._lock:
            self._check_open()
            if name in self._specs:
                raise ExperimentConflict(name, "name", f"experiment {name!r} already exists")
            parsed = parse_variants(variants)
            spec = ExperimentSpec(
                name=name,
                variants=parsed,
                split=check_split(split, parsed),
                created_ts=self._clock(),
                **check_options(options),
            )
            defaults = self._defaults()
            for k in spec.variants:
                build_learner(spec, k, defaults)
            self._specs[name] = spec
            self._persist(False)
            return spec

    def start(self, name: str) -> ExperimentSpec:
        """Start routing traffic to the variants (one experiment runs at a time)."""
        with self._lock:
            self._check_open()
            self.get(name)
            if self._running is not None and self._running != name:
                raise ExperimentConflict(
                    name, "name", f"experiment {self._running!r} is already running"
                )
            spec = self.get(name).transition("running", self._clock())
            learners = build_learners(spec, self._defaults())
            self._specs[name], self._learners[name] = spec, learners
            self._running = name
            self._persist(True)
            return spec

    def stop(self, name: str) -> ExperimentSpec:
        """Stop assigning traffic; the statistics stay for status, promote or abort."""
        return self._end(name, "stopped")

    def abort(self, name: str) -> ExperimentSpec:
        """End the experiment without changing the default policy (its statistics are
        released)."""
        return self._end(name, "aborted")

    def _end(self, name: str, to: str) -> ExperimentSpec:
        with self._lock:
            self._check_open()
            spec = self._specs[name] = self.get(name).transition(to, self._clock())
            if self._running == name:
                self._running = None
            if to == "aborted":
                self._learners.pop(name, None)
            self._persist(True)
            return spec

    def promote(self, name: str, variant: str) -> ExperimentSpec:
        """Make ``variant`` the default (through ``adopt``): its policy with what it learned,
        its reward and arms. A running experiment is stopped first; an unknown variant is
        refused before anything changes."""
        with self._lock:
            self._check_open()
            current = self.get(name)
            if variant not in current.variants:
                raise ExperimentConflict(
                    name,
                    "variant",
                    f"{variant!r} is not a variant of {name!r} ({list(current.variants)})",
                )
            if self._running == name:
                self.stop(name)
            spec = self.get(name).transition("promoted", self._clock(), winner=variant)
            self._specs[name] = spec
            learner = self._learners.pop(name)[variant]
            if self._adopt is not None:
                self._adopt(learner)
            self._persist(True)
            return spec

    # ------------------------------------------------------------------ routing
    def assign(self, unit: str) -> Assignment | None:
        """The running experiment's variant for ``unit`` (counted as assigned), or ``None``
        when no experiment runs."""
        name = self._running
        if name is None:
            return None
        spec = self._specs[name]
        variant = assign(spec.salt, unit, spec.split)
        learner = self._learners[name][variant]
        learner.stats.assigned()
        return Assignment(name, variant, learner)

    def learning_policy(self, experiment: str, variant: str, default: Policy) -> Policy | None:
        """The policy that learns from a decision of ``variant``: the variant's own, the
        ``default`` once the variant was promoted, ``None`` once its experiment ended
        otherwise."""
        learner = self._learners.get(experiment, {}).get(variant)
        if learner is not None:
            return learner.policy
        spec = self._specs.get(experiment)
        if spec is not None and spec.status == "promoted" and spec.winner == variant:
            return default
        return None

    def replayed_assignment(self, experiment: str, variant: str) -> None:
        """Count a logged decision of ``variant`` again (restart replay)."""
        learner = self._learners.get(experiment, {}).get(variant)
        if learner is not None:
            learner.stats.assigned()

    def observe(
        self,
        experiment: str,
        variant: str,
        reward: float,
        outcome: Mapping[str, Any],
        ts: float,
        *,
        replaying: bool = False,
    ) -> None:
        """Add one outcome to ``variant``'s statistics and comparisons; every
        ``GUARDRAIL_EVERY`` outcomes of a running experiment (not while ``replaying``) its
        guardrails may stop it."""
        learner = self._learners.get(experiment, {}).get(variant)
        if learner is None:
            return
        learner.stats.observe(
            reward,
            bool(outcome["valid"]) and outcome.get("error") is None,
            float(outcome["latency_ms"]),
            float(outcome["cost_usd"]),
        )
        spec = self._specs[experiment]
        learners = self._learners[experiment]
        control = learners[spec.control]
        for k, x in learners.items():
            if x.history is not None and (k == variant or variant == spec.control):
                x.history.update(control.stats, x.stats, alpha=spec.alpha, target_n=spec.target_n)
        if spec.status == "running" and not replaying and learner.stats.n % GUARDRAIL_EVERY == 0:
            self._guard(spec, learners, ts)

    def _guard(self, spec: ExperimentSpec, learners: dict[str, VariantLearner], ts: float) -> None:
        stopped = auto_stop(spec, {k: x.stats for k, x in learners.items()}, ts)
        if stopped is spec:
            return
        self._specs[spec.name] = stopped
        if self._running == spec.name:
            self._running = None
        self._persist(True)
        _log.warning(
            "experiment.auto_stopped",
            experiment=spec.name,
            guardrail=stopped.stopped_by_guardrail,
        )

    # -------------------------------------------------------------- persistence
    def load(self, specs: Mapping[str, Any]) -> None:
        """Restore the specs saved by :meth:`to_meta` (fresh learners for the running and
        stopped ones; :meth:`set_state` then restores what they learned)."""
        for name, raw in specs.items():
            spec = ExperimentSpec.model_validate(raw)
            self._specs[name] = spec
            if spec.status in ("running", "stopped"):
                self._learners[name] = build_learners(spec, self._defaults())
            if spec.status == "running":
                self._running = name

    def to_meta(self) -> dict[str, Any]:
        """Every spec as plain JSON (kept in the store's metadata)."""
        return {name: spec.model_dump(mode="json") for name, spec in self._specs.items()}

    def to_state(self) -> dict[str, Any]:
        """What the variants learned, as plain JSON (part of the controller's snapshot)."""
        return {
            name: {vname: v.to_state() for vname, v in learners.items()}
            for name, learners in self._learners.items()
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_state` output (variants no longer held are skipped)."""
        for name, vstates in state.items():
            for vname, vs in vstates.items():
                learner = self._learners.get(name, {}).get(vname)
                if learner is not None:
                    learner.set_state(vs)
