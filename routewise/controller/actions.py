"""Operator actions and experiment lifecycle steps of the :class:`~routewise.Controller`.

Both are control-plane changes: pin / quarantine / release an arm, and create / start / stop /
promote / abort an experiment. On a single-writer store they change this controller and are
recorded (operator actions as Guardian events, experiments in the store's metadata). On a
shared store (several replicas, :mod:`~routewise.controller.replica`) the replica that takes
the action applies it at once and appends it to the shared log — an operator action as a
Guardian event, an experiment step as a control record — and every other replica applies it
from the log, so all of them route the same way within their replication lag.

Examples
--------
>>> import routewise as rw
>>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0, log_events=False)
>>> ctl.quarantine("a:x/direct_emit")
>>> ctl.health()["a:x/direct_emit"]
'quarantined'
>>> ctl.release("a:x/direct_emit")
>>> ctl.health()["a:x/direct_emit"]
'healthy'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from pydantic_core import to_jsonable_python

from routewise.controller.experiments.variants import VariantDefaults
from routewise.controller.persistence import LearningState
from routewise.errors import ConfigError, UnknownArm
from routewise.state.base import ControlRecord
from routewise.types import Arm, ArmLike, ExperimentReport, ExperimentSpec

__all__ = ["Actions"]

_log = structlog.get_logger("routewise")


class Actions(LearningState):
    """Operator actions and the experiment lifecycle (a base class of the Controller).

    Examples
    --------
    >>> import routewise as rw
    >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
    >>> isinstance(ctl, Actions)
    True
    """

    _control_ts: float | None

    # ---------------------------------------------------------------- operator
    def _operator(self, action: str, arm: ArmLike) -> None:
        aid = arm if isinstance(arm, str) else Arm.parse(arm).id
        if aid not in self._arm_by_id:
            raise UnknownArm(aid, self._arm_ids)
        if self._guardian is None:
            raise ConfigError("guardian", f"cannot {action} {aid!r}: the Guardian is disabled")
        with self._lock:
            self._check_open()
            now = self.clock()
            self._record(self._guardian.tick(now))  # time-driven transitions first
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

    # ------------------------------------------------------------- experiments
    def _variant_defaults(self) -> VariantDefaults:
        return VariantDefaults(
            self._policy,
            self._reward,
            self._arm_ids,
            self._featurizer.dim,
            self.seed,
            frozenset(self._arm_by_id),
        )

    def _experiment_clock(self) -> float:
        """Now — or, while a replica applies another replica's step, the time it was taken
        (so every replica records the same start and end times)."""
        return self._control_ts if self._control_ts is not None else self.clock()

    def _step(self, body: dict[str, Any]) -> ExperimentSpec:
        """Run one lifecycle step here, and on a shared store append it to the log for the
        other replicas."""
        with self._lock:
            self._check_open()
            if self._shared:  # the step travels through the log as JSON
                body = to_jsonable_python(body)
            now = self._control_ts = self.clock()  # one time for every replica's copy
            try:
                spec = self._run_step(body)
            finally:
                self._control_ts = None
            if self._shared and not self._replaying:
                self._store.log_control(  # type: ignore[attr-defined]
                    ControlRecord(0, now, body, self._origin)
                )
            return spec

    def _run_step(self, body: Mapping[str, Any]) -> ExperimentSpec:
        op, name = body["op"], body["name"]
        if op == "create":
            return self._exp.create(
                name, body["variants"], body.get("split"), **(body.get("options") or {})
            )
        if op == "promote":
            return self._exp.promote(name, body["variant"])
        if op in ("start", "stop", "abort"):
            step: Any = getattr(self._exp, op)
            result: ExperimentSpec = step(name)
            return result
        raise ConfigError("op", f"unknown experiment step {op!r}")

    def _apply_control(self, rec: ControlRecord) -> None:
        """Apply another replica's lifecycle step from the log. A step this replica cannot
        take (it already did: a restart replays what the metadata holds) is skipped."""
        if rec.origin is not None and rec.origin == self._origin:
            return
        self._control_ts = rec.ts
        try:
            self._run_step(rec.body)
        except ConfigError as exc:
            _log.debug("replica.control_skipped", step=rec.body.get("op"), reason=str(exc))
        finally:
            self._control_ts = None

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
        :class:`~routewise.types.ExperimentSpec` fields (``salt``, ``alpha``,
        ``guardrails``, ``target_n``). Errors name the field (``variants.<name>.<field>``,
        ``split.<name>``…; see :mod:`routewise.controller.experiments.validation`)."""
        body = {
            "op": "create",
            "name": name,
            "variants": variants,
            "split": split,
            "options": options,
        }
        return self._step(body)

    def start_experiment(self, name: str) -> ExperimentSpec:
        """Start routing traffic to the variants (one experiment runs at a time)."""
        return self._step({"op": "start", "name": name})

    def stop_experiment(self, name: str) -> ExperimentSpec:
        """Stop assigning traffic; the statistics stay for status, promote or abort."""
        return self._step({"op": "stop", "name": name})

    def promote_experiment(self, name: str, variant: str) -> ExperimentSpec:
        """Make ``variant`` the default: its policy (with what it learned), reward and arms."""
        return self._step({"op": "promote", "name": name, "variant": variant})

    def abort_experiment(self, name: str) -> ExperimentSpec:
        """End the experiment without changing the default policy."""
        return self._step({"op": "abort", "name": name})

    def experiments(self) -> list[ExperimentSpec]:
        """Every experiment, in creation order."""
        return self._exp.specs()

    def experiment_status(self, name: str) -> ExperimentReport:
        """Per-variant statistics and always-valid comparisons against the control."""
        return self._exp.status(name)

    def plot_experiment(self, name: str, path: str | Path, variant: str | None = None) -> None:
        """PNG of a candidate's reward difference vs the control with its confidence sequence
        over time (default: the first candidate)."""
        self._exp.plot(name, path, variant)
