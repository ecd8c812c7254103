"""Experiment wire types: the spec of an A/B experiment and its status report.

An experiment compares routing policies: each assignment unit (user, session or request id)
is hashed with a per-experiment salt into one *variant* (sticky and deterministic,
:func:`assign`); the first variant is the control. :class:`ExperimentSpec` is the immutable
spec with its lifecycle (:meth:`ExperimentSpec.transition`)::

    draft ──► running ──► stopped ──► promoted   (the winner becomes the default policy)
      │          │           │
      └──────────┴───────────┴──────► aborted

:class:`ExperimentReport` (with :class:`VariantReport` and :class:`Comparison`) is what an
operator reads: per-variant numbers and always-valid comparisons against the control. The
statistics that fill it live in :mod:`routewise.controller.experiments`.

Every spec error is a :class:`~routewise.errors.ConfigError` naming the field path; a
disallowed lifecycle step is an :class:`~routewise.errors.ExperimentConflict` on ``status``.
The report types are wire dataclasses: ``to_dict()`` / ``from_dict()`` come from one pydantic
``TypeAdapter`` (:class:`~routewise.types.wire.Wire`), as for every other wire type.

Examples
--------
>>> spec = ExperimentSpec(
...     name="ls-weights",
...     variants={"control": {"policy": "squarecb"},
...               "candidate": {"policy": "linucb", "reward": "low_latency"}},
...     split={"control": 0.5, "candidate": 0.5},
... )
>>> spec.control, spec.status
('control', 'draft')
>>> spec.variant_for("user-42") == assign(spec.salt, "user-42", spec.split)
True
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from routewise.errors import ConfigError, ExperimentConflict
from routewise.types.wire import Wire

__all__ = [
    "GUARDRAILS",
    "MAX_NAME_LENGTH",
    "Comparison",
    "ExperimentReport",
    "ExperimentSpec",
    "ExperimentStatus",
    "Guardrails",
    "VariantReport",
    "VariantSpec",
    "assign",
    "check_alpha",
]

ExperimentStatus = Literal["draft", "running", "stopped", "promoted", "aborted"]
"""An experiment's lifecycle state."""
_STATUSES: Final = get_args(ExperimentStatus)
_TRANSITIONS: Final[dict[str, tuple[str, ...]]] = {
    "draft": ("running", "aborted"),
    "running": ("stopped", "aborted"),
    "stopped": ("promoted", "aborted"),
    "promoted": (),
    "aborted": (),
}

#: Names of the guardrail checks, in reporting order.
GUARDRAILS: Final = ("validity", "p95_latency", "cost")
#: Tolerance on ``sum(split) == 1``.
_SPLIT_TOL: Final = 1e-9
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_MIN_N: Final = 1_000_000_000
#: Longest experiment or variant name.
MAX_NAME_LENGTH: Final = 128


def check_alpha(alpha: float, name: str) -> None:
    """Raise ``ConfigError(name)`` unless ``alpha`` is a number in (0, 1)."""
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ConfigError(name, f"must be in (0, 1), got {alpha!r}")


def _check_name(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ConfigError(
            field_name, f"must be a non-empty string of [A-Za-z0-9_.-], got {value!r}"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigError(
            field_name, f"must be at most {MAX_NAME_LENGTH} characters, got {len(value)}"
        )
    return value


def _config_error(exc: ValidationError) -> ConfigError:
    """The first pydantic error as a :class:`ConfigError` naming the field path."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        if not path:
            return ConfigError(cause.field, cause.reason)
        if path == cause.field or path.endswith("." + cause.field):
            return ConfigError(path, cause.reason)
        return ConfigError(f"{path}.{cause.field}", cause.reason)
    return ConfigError(path or "experiment", str(err["msg"]))


class _Model(BaseModel):
    """Frozen, extra-forbidding pydantic base whose validation errors are ConfigErrors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def model_validate(cls, *args: Any, **kwargs: Any) -> Self:
        """Like :meth:`pydantic.BaseModel.model_validate`, raising :class:`ConfigError`."""
        try:
            return super().model_validate(*args, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc) from None

    @classmethod
    def model_validate_json(cls, *args: Any, **kwargs: Any) -> Self:
        """Like :meth:`pydantic.BaseModel.model_validate_json`, raising :class:`ConfigError`."""
        try:
            return super().model_validate_json(*args, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc) from None


class VariantSpec(_Model):
    """One arm of an experiment: the policy, reward and arm subset its traffic runs with.

    ``None`` means "the controller's default". ``policy`` is a registry name or
    ``{"name": ..., **params}``; ``reward`` a preset name or a reward dict; ``arms`` a subset
    of the controller's arm ids (resolved by the controller).

    Examples
    --------
    >>> VariantSpec(policy={"name": "linucb", "alpha": 0.5}, arms=["a/direct_emit"]).arms
    ['a/direct_emit']
    >>> VariantSpec(policy={"alpha": 0.5})
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: policy: a policy dict needs a non-empty string 'name'
    """

    policy: str | dict[str, Any] | None = None
    reward: str | dict[str, Any] | None = None
    arms: list[str] | None = None

    @field_validator("policy", "reward", mode="before")
    @classmethod
    def _name_or_mapping(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None or isinstance(v, str | dict):
            return v
        what = "policy" if info.field_name == "policy" else "reward preset"
        raise ConfigError(
            str(info.field_name),
            f"must be a {what} name or a mapping, got {type(v).__name__}",
        )

    @field_validator("arms", mode="before")
    @classmethod
    def _arm_list(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, list | tuple) or not all(isinstance(a, str) for a in v):
            raise ConfigError("arms", "must be a list of arm ids (strings)")
        return list(v)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(v, str) and not v.strip():
            raise ConfigError("policy", "must be a non-empty policy name")
        if isinstance(v, dict) and not (isinstance(v.get("name"), str) and v["name"].strip()):
            raise ConfigError("policy", "a policy dict needs a non-empty string 'name'")
        return v

    @field_validator("reward")
    @classmethod
    def _reward(cls, v: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(v, str) and not v.strip():
            raise ConfigError("reward", "must be a non-empty preset name")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ConfigError("arms", "an arm subset must not be empty (use null for all arms)")
        if any(not a.strip() for a in v):
            raise ConfigError("arms", "arm ids must be non-empty strings")
        dup = sorted({a for a in v if v.count(a) > 1})
        if dup:
            raise ConfigError("arms", f"duplicate arm ids: {', '.join(dup)}")
        return v


class Guardrails(_Model):
    """Guardrail thresholds: what "significantly worse than the control" means.

    Attributes
    ----------
    validity_drop
        Tolerated absolute drop of the validity rate (0.05 = five points).
    p95_latency_ratio
        Tolerated ratio of the candidate's p95 latency to the control's.
    cost_ratio
        Tolerated ratio of the mean cost per request.
    min_n
        Observations each of the two variants needs before a guardrail is evaluated.
    auto_stop
        Whether :func:`auto_stop` stops a running experiment on a violation.

    Examples
    --------
    >>> Guardrails(cost_ratio=2.0).cost_ratio, Guardrails().min_n
    (2.0, 200)
    >>> Guardrails(p95_latency_ratio=0.9)
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: p95_latency_ratio: must be a finite number >= 1, got 0.9
    """

    validity_drop: float = 0.05
    p95_latency_ratio: float = 1.5
    cost_ratio: float = 1.5
    min_n: int = 200
    auto_stop: bool = True

    @field_validator("validity_drop")
    @classmethod
    def _drop(cls, v: float) -> float:
        if not (math.isfinite(v) and 0.0 <= v < 1.0):
            raise ConfigError("validity_drop", f"must be in [0, 1), got {v!r}")
        return v

    @field_validator("p95_latency_ratio", "cost_ratio")
    @classmethod
    def _ratio(cls, v: float, info: Any) -> float:
        if not (math.isfinite(v) and v >= 1.0):
            raise ConfigError(str(info.field_name), f"must be a finite number >= 1, got {v!r}")
        return v

    @field_validator("min_n")
    @classmethod
    def _min_n(cls, v: int) -> int:
        if not 2 <= v <= _MAX_MIN_N:
            raise ConfigError("min_n", f"must be in [2, {_MAX_MIN_N:_}], got {v!r}")
        return v


class ExperimentSpec(_Model):
    """An experiment: variants, traffic split, salt, test level, guardrails and lifecycle.

    The first variant (dict order) is the control. ``split`` has the variants' keys, each
    share > 0, summing to 1 (±1e-9); it is stored in the variants' order, which is the order
    :func:`assign` walks. ``salt`` defaults to ``sha256(name)[:16]``: give a fresh salt to
    re-randomize a re-run under the same name. ``target_n`` is the per-variant sample size at
    which the confidence sequence is tightest (see the module docstring); changing it after
    the start invalidates the guarantees. Specs are immutable: :meth:`transition` returns a
    new one.

    Examples
    --------
    >>> spec = ExperimentSpec(name="x", variants={"a": {}, "b": {"policy": "linucb"}},
    ...                       split={"b": 0.2, "a": 0.8})
    >>> spec.control, list(spec.split), spec.salt == ExperimentSpec.default_salt("x")
    ('a', ['a', 'b'], True)
    >>> running = spec.transition("running", ts=10.0)
    >>> running.status, running.started_ts, spec.status
    ('running', 10.0, 'draft')
    >>> running.transition("promoted", ts=11.0, winner="b")
    Traceback (most recent call last):
    ...
    routewise.errors.ExperimentConflict: status: cannot go from 'running' to 'promoted' (allowed: stopped, aborted)
    >>> done = running.transition("stopped", ts=20.0).transition("promoted", ts=21.0, winner="b")
    >>> done.status, done.winner, done.stopped_ts
    ('promoted', 'b', 20.0)
    >>> ExperimentSpec(name="x", variants={"a": {}, "b": {}}, split={"a": 0.5, "b": 0.6})
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: split: shares must sum to 1, got 1.1
    """

    name: str
    variants: dict[str, VariantSpec]
    split: dict[str, float]
    salt: str = ""
    alpha: float = 0.05
    guardrails: Guardrails = Field(default_factory=Guardrails)
    target_n: int = 10_000
    status: ExperimentStatus = "draft"
    winner: str | None = None
    stopped_by_guardrail: str | None = None
    created_ts: float | None = None
    started_ts: float | None = None
    stopped_ts: float | None = None

    @staticmethod
    def default_salt(name: str) -> str:
        """The salt used when none is given: the first 16 hex digits of ``sha256(name)``."""
        return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.get("name")
        if not data.get("salt") and isinstance(name, str):
            data["salt"] = cls.default_salt(name)
        variants, split = data.get("variants"), data.get("split")
        if isinstance(variants, dict) and isinstance(split, dict) and set(variants) == set(split):
            data["split"] = {k: split[k] for k in variants}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "name")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        check_alpha(v, "alpha")
        return v

    @field_validator("target_n")
    @classmethod
    def _target_n(cls, v: int) -> int:
        if v < 2:
            raise ConfigError("target_n", f"must be >= 2, got {v!r}")
        return v

    @field_validator("created_ts", "started_ts", "stopped_ts")
    @classmethod
    def _ts(cls, v: float | None, info: Any) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ConfigError(str(info.field_name), f"must be a finite timestamp, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        if len(self.variants) < 2:
            raise ConfigError("variants", f"need at least 2 variants, got {len(self.variants)}")
        for v in self.variants:
            _check_name(v, "variants")
        if set(self.split) != set(self.variants):
            raise ConfigError(
                "split",
                f"keys {sorted(self.split)} must be the variants {sorted(self.variants)}",
            )
        for k, share in self.split.items():
            if not (math.isfinite(share) and share > 0.0):
                raise ConfigError("split", f"share of {k!r} must be > 0, got {share!r}")
        total = math.fsum(self.split.values())
        if abs(total - 1.0) > _SPLIT_TOL:
            raise ConfigError("split", f"shares must sum to 1, got {total!r}")
        if self.winner is not None and self.winner not in self.variants:
            raise ConfigError("winner", f"{self.winner!r} is not a variant")
        if self.status == "promoted" and self.winner is None:
            raise ConfigError("winner", "a promoted experiment needs a winner")
        if self.status != "promoted" and self.winner is not None:
            raise ConfigError("winner", f"only a promoted experiment has a winner ({self.status})")
        if self.stopped_by_guardrail is not None and self.status in ("draft", "running"):
            raise ConfigError("stopped_by_guardrail", f"set on a {self.status} experiment")
        return self

    @property
    def control(self) -> str:
        """The control variant (the first one)."""
        return next(iter(self.variants))

    def variant_for(self, unit_id: str) -> str:
        """The variant of ``unit_id``: ``assign(self.salt, unit_id, self.split)``."""
        return assign(self.salt, unit_id, self.split)

    def transition(
        self, to: str, ts: float, winner: str | None = None, *, guardrail: str | None = None
    ) -> ExperimentSpec:
        """A copy in status ``to``, enforcing the lifecycle.

        ``running`` sets ``started_ts``; ``stopped`` (and ``aborted`` when not stopped
        before) sets ``stopped_ts``; ``promoted`` needs ``winner`` (a variant); ``guardrail``
        (only with ``stopped``) records which guardrail stopped it, e.g. ``"b:validity"``.

        Raises
        ------
        ConfigError
            ``status`` for an unknown or disallowed transition, ``winner`` for a missing or
            unknown winner, ``ts`` for a non-finite time, ``guardrail`` when misplaced.
        """
        if to not in _STATUSES:
            raise ConfigError("status", f"unknown status {to!r}; one of: {', '.join(_STATUSES)}")
        allowed = _TRANSITIONS[self.status]
        if to not in allowed:
            hint = f"allowed: {', '.join(allowed)}" if allowed else f"{self.status!r} is final"
            raise ExperimentConflict(
                self.name, "status", f"cannot go from {self.status!r} to {to!r} ({hint})"
            )
        if not (isinstance(ts, int | float) and math.isfinite(ts)):
            raise ConfigError("ts", f"must be a finite timestamp, got {ts!r}")
        if to == "promoted":
            if winner is None:
                raise ConfigError("winner", "promoting needs a winner")
            if winner not in self.variants:
                raise ConfigError(
                    "winner", f"{winner!r} is not a variant; one of: {', '.join(self.variants)}"
                )
        elif winner is not None:
            raise ConfigError("winner", "a winner is only given when promoting")
        if guardrail is not None and to != "stopped":
            raise ConfigError("guardrail", "only a stop can be caused by a guardrail")
        update: dict[str, Any] = {"status": to, "winner": winner, "stopped_by_guardrail": None}
        if to in ("stopped", "promoted", "aborted"):
            update["stopped_by_guardrail"] = self.stopped_by_guardrail
        if guardrail is not None:
            update["stopped_by_guardrail"] = guardrail
        if to == "running":
            update["started_ts"] = float(ts)
        if to == "stopped" or (to == "aborted" and self.stopped_ts is None):
            update["stopped_ts"] = float(ts)
        return type(self).model_validate({**self.model_dump(), **update})


# --------------------------------------------------------------------------------------------
# assignment


def assign(salt: str, unit_id: str, split: Mapping[str, float]) -> str:
    """The variant of ``unit_id``: deterministic, sticky, uniform over the split.

    ``u = int(blake2b(f"{salt}:{unit_id}", digest_size=8)) / 2**64`` is uniform in [0, 1);
    the variant is the first whose cumulative share (in ``split``'s order, normalized to
    sum 1) exceeds ``u``. The same (salt, unit, split) always gives the same variant, so
    traces can be re-assigned offline; a new salt re-randomizes independently.

    Examples
    --------
    >>> split = {"control": 0.5, "candidate": 0.5}
    >>> assign("s1", "user-42", split) == assign("s1", "user-42", split)
    True
    >>> sorted({assign("s1", f"u{i}", split) for i in range(100)})
    ['candidate', 'control']
    """
    if not isinstance(unit_id, str):
        raise ConfigError("unit_id", f"must be a string, got {type(unit_id).__name__}")
    if not split:
        raise ConfigError("split", "must name at least one variant")
    total = math.fsum(split.values())
    if not (math.isfinite(total) and total > 0):
        raise ConfigError("split", f"shares must be positive, got {dict(split)!r}")
    digest = hashlib.blake2b(f"{salt}:{unit_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64 * total
    cum = 0.0
    last = ""
    for name, share in split.items():
        cum += share
        last = name
        if u < cum:
            return name
    return last  # u within rounding of the total


# --------------------------------------------------------------------------------------------
# reports


@dataclass(slots=True)
class VariantReport(Wire):
    """One variant's numbers. ``ci_low``/``ci_high`` are the always-valid ``1 − α``
    confidence sequence for its mean reward (``None`` during the burn-in); ``cost`` is the
    mean cost per request.

    Examples
    --------
    >>> VariantReport(n=0, mean_reward=None, ci_low=None, ci_high=None, validity=None,
    ...               p95_latency_ms=None, cost=None, assignments=3).assignments
    3
    """

    n: int
    mean_reward: float | None
    ci_low: float | None
    ci_high: float | None
    validity: float | None
    p95_latency_ms: float | None
    cost: float | None
    assignments: int


@dataclass(slots=True)
class Comparison(Wire):
    """A candidate against the control: ``diff = mean_candidate − mean_control``.

    ``ci_low``/``ci_high``/``p_value``/``verdict`` come from the always-valid confidence
    sequence (``"better"`` when it lies above 0, ``"worse"`` below, else
    ``"inconclusive"``); the ``welch_*`` fields are the fixed-horizon Welch view (valid at
    one pre-planned look only). ``guardrails`` maps each guardrail to ``True`` when violated.

    Examples
    --------
    >>> c = Comparison(diff=0.03, ci_low=0.01, ci_high=0.05, p_value=0.001, verdict="better",
    ...                welch_p_value=1e-5, welch_ci_low=0.02, welch_ci_high=0.04,
    ...                guardrails={"validity": False, "p95_latency": False, "cost": False})
    >>> c.verdict, any(c.guardrails.values())
    ('better', False)
    >>> Comparison.from_dict(c.to_dict()) == c
    True
    """

    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    verdict: Literal["better", "worse", "inconclusive"]
    welch_p_value: float | None
    welch_ci_low: float | None
    welch_ci_high: float | None
    guardrails: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class ExperimentReport(Wire):
    """The state of an experiment: per-variant numbers, comparisons, SRM and guardrails
    (what :meth:`Controller.experiment_status <routewise.Controller.experiment_status>`
    returns and ``GET /v1/experiments/{name}`` answers).

    Examples
    --------
    >>> empty = VariantReport(0, None, None, None, None, None, None, 0)
    >>> rep = ExperimentReport(
    ...     name="e", status="draft", control="a", variants={"a": empty, "b": empty},
    ...     comparisons={"b": Comparison(None, None, None, 1.0, "inconclusive", None, None, None)},
    ...     srm_p_value=None, srm=False, stopped_by_guardrail=None)
    >>> sorted(rep.to_dict())  # doctest: +NORMALIZE_WHITESPACE
    ['alpha', 'comparisons', 'control', 'name', 'srm', 'srm_p_value', 'status',
     'stopped_by_guardrail', 'variants', 'winner']
    >>> ExperimentReport.from_dict(rep.to_dict()) == rep
    True
    """

    name: str
    status: ExperimentStatus
    control: str
    variants: dict[str, VariantReport]
    comparisons: dict[str, Comparison]
    srm_p_value: float | None
    srm: bool
    stopped_by_guardrail: str | None
    alpha: float = 0.05
    winner: str | None = None
