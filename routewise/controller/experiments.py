"""A/B experiments: policy-vs-policy comparisons with statistics that stay valid under peeking.

An operator who wants to change the routing policy (algorithm, reward weighting, arm set)
runs an experiment: each assignment unit (user, session or request id) is hashed with a
per-experiment salt into one *variant* (sticky and deterministic, :func:`assign`); every
variant learns with its own policy; its outcomes feed a :class:`VariantStats`; and
:func:`experiment_report` says, at any time, whether a candidate is better, worse or not yet
distinguishable from the control (the first variant). This module is pure: no I/O, no clock,
no Controller — the Controller, the CLI and the sidecar wire it in.

Lifecycle (:meth:`ExperimentSpec.transition`)::

    draft ──► running ──► stopped ──► promoted   (the winner becomes the default policy)
      │          │           │
      └──────────┴───────────┴──────► aborted

Statistics
----------
*Primary test — an always-valid confidence sequence (CS) for the difference in mean reward*
``θ = μ_candidate − μ_control``. It is the two-sided normal-mixture boundary of Howard,
Ramdas, McAuliffe & Sekhon (2021, *Time-uniform, nonparametric, nonasymptotic confidence
sequences*, Ann. Statist., §3.2), i.e. the mixture SPRT of Johari, Pekelis & Walsh (2017,
*Peeking at A/B tests*): with ``θ̂`` the difference of the sample means, ``V`` its
(plug-in) variance ``s²_ctl/n_ctl + s²_cand/n_cand`` and a ``N(0, τ²)`` mixture over ``θ``,
the mixture likelihood ratio against ``θ = θ₀`` is, with ``φ = τ²/V``,

.. math:: Λ = (1 + φ)^{-1/2} \\exp\\bigl(φ (θ̂ − θ₀)^2 / (2V(1 + φ))\\bigr),

so the ``1 − α`` CS is ``θ̂ ± sqrt(V (1 + φ)/φ · (log(1 + φ) + 2 log(1/α)))`` and the
always-valid p-value is ``min(1, 1/Λ(0))``, reported as a running minimum (it never increases)
when a :class:`ComparisonHistory` is kept; the reported CS is then the running intersection.
In the information time ``1/V`` the score ``θ̂/V`` is a Gaussian process with independent
increments for any interleaving of the two arms (Jennison & Turnbull's canonical joint
distribution), which is why unequal splits need no special treatment; plugging in the sample
variances makes the guarantee asymptotic (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas,
2024, *Time-uniform central limit theory and asymptotic confidence sequences*).

*Mixing parameter* ``ρ``. The boundary is tightest where ``V`` equals a target ``V*``; with
``τ² = V*/r*`` and ``r*(α)`` the root of ``log((1 + r)/(r α²)) = 1/r`` (≈ 0.1218 for
α = 0.05; Howard et al.'s ``ρ = r*·V*`` in intrinsic time, cf. their closed-form
approximation ``1/(−2 log α + log(1 − 2 log α))`` ≈ 0.126) the width at ``V*`` is minimal.
``V* = (s²_ctl + s²_cand)/n*`` with ``n* = ExperimentSpec.target_n`` (default 10,000 per
variant), so ``φ = V*/(r*·V)`` ≈ ``n/(r*·n*)`` for a balanced split: the CS is scale-free
and about 1.5× the fixed-horizon 95 % interval at ``n*``, wider before, narrower after.
Both arms need ``MIN_N_SEQUENTIAL`` (30) observations before a CS is reported (a burn-in that
keeps a zero plug-in variance — e.g. the first few Bernoulli rewards all equal — from
producing a spurious rejection); before that the CS is unbounded (``None``) and ``p = 1``.

*Per-variant intervals* use the same construction for one mean (``φ = n/(r*·n*)``), so they
may be watched continuously too; they are stateless (no running intersection).

*Secondary view* — the fixed-horizon Welch t-test (``scipy.stats.ttest_ind_from_stats``,
``equal_var=False``) and its Welch–Satterthwaite interval: valid only when looked at once,
at a sample size fixed in advance (:func:`sample_size`).

*Sample-ratio mismatch* — a chi-square goodness-of-fit test of the assignment counts against
the declared split (``scipy.stats.chisquare``), flagged at ``p < 0.001``.

*Guardrails* — a non-control variant is flagged when it is *significantly* worse than the
control, each test using the worse-side bound of a two-sided ``1 − α`` confidence sequence
(one-sided error ≤ α, so an auto-stop under continuous monitoring stays rare), and only once
both variants have ``min_n`` observations:

* ``validity``: the upper bound of ``validity_cand − validity_ctl`` is below ``−validity_drop``;
* ``p95_latency``: the lower bound of the candidate's p95 exceeds ``p95_latency_ratio`` × the
  upper bound of the control's p95 (quantile CS via the Bernoulli indicator ``1{X ≤ q}``,
  Howard & Ramdas 2022, *Sequential estimation of quantiles with applications to A/B testing*;
  latencies are kept in the ±1 % log-bucketed :class:`~routewise.controller.stats.LatencyHistogram`);
* ``cost``: the lower bound of ``cost_cand − cost_ratio · cost_ctl`` is above 0.

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
>>> spec = spec.transition("running", ts=1.0)
>>> v = spec.variant_for("user-42")
>>> v == assign(spec.salt, "user-42", spec.split) == spec.variant_for("user-42")
True
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> stats = {name: VariantStats() for name in spec.variants}
>>> for _ in range(4000):
...     stats["control"].assigned()
...     stats["control"].observe(float(rng.random() < 0.70), True, 800.0, 0.001)
...     stats["candidate"].assigned()
...     stats["candidate"].observe(float(rng.random() < 0.75), True, 800.0, 0.001)
>>> rep = experiment_report(spec, stats)
>>> rep.comparisons["candidate"].verdict, rep.srm
('better', False)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal, Self, get_args

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from scipy import optimize
from scipy import stats as sps

from routewise.controller.stats import LatencyHistogram
from routewise.errors import ConfigError, InvalidOutcome, StateError

__all__ = [
    "GUARDRAILS",
    "MIN_N_SEQUENTIAL",
    "SRM_THRESHOLD",
    "Comparison",
    "ComparisonHistory",
    "ExperimentReport",
    "ExperimentSpec",
    "ExperimentStatus",
    "Guardrails",
    "VariantReport",
    "VariantSpec",
    "VariantStats",
    "assign",
    "auto_stop",
    "experiment_report",
    "guardrail_violations",
    "mixing_ratio",
    "normal_mixture_half_width",
    "normal_mixture_p_value",
    "plot_confidence_sequence",
    "sample_size",
    "srm_p_value",
]

FloatArray = npt.NDArray[np.float64]

ExperimentStatus = Literal["draft", "running", "stopped", "promoted", "aborted"]
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
#: Observations each side needs before a confidence sequence is reported.
MIN_N_SEQUENTIAL: Final = 30
#: Sample-ratio mismatch is flagged below this chi-square p-value.
SRM_THRESHOLD: Final = 0.001
#: Tolerance on ``sum(split) == 1``.
_SPLIT_TOL: Final = 1e-9
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_P95: Final = 0.95


# --------------------------------------------------------------------------------------------
# the normal-mixture boundary


@lru_cache(maxsize=64)
def mixing_ratio(alpha: float) -> float:
    """``r*(α)``: the mixture variance, as a fraction of the target precision, that makes the
    normal-mixture boundary tightest at the target (root of ``log((1 + r)/(r α²)) = 1/r``).

    Examples
    --------
    >>> round(mixing_ratio(0.05), 4)
    0.1218
    """
    _check_alpha(alpha, "alpha")
    log_inv_a2 = -2.0 * math.log(alpha)

    def f(r: float) -> float:
        return math.log1p(1.0 / r) + log_inv_a2 - 1.0 / r

    return float(optimize.brentq(f, 1e-12, 1e12, xtol=1e-15, rtol=1e-12))


def _phi(v: FloatArray, vt: FloatArray, alpha: float) -> FloatArray:
    """``φ = τ²/V`` with ``τ² = V*/r*``; callers guarantee ``v > 0`` and ``vt > 0``."""
    out: FloatArray = vt / (mixing_ratio(alpha) * v)
    return out


def normal_mixture_half_width(
    var: npt.ArrayLike, var_target: npt.ArrayLike, alpha: float
) -> FloatArray:
    """Half-width of the two-sided ``1 − α`` normal-mixture confidence sequence.

    Parameters
    ----------
    var
        Variance of the estimator now (e.g. ``s²/n`` for a mean, ``s²_a/n_a + s²_b/n_b`` for
        a difference). ``0`` gives a zero width (a degenerate, deterministic estimate).
    var_target
        Its variance at the target sample size, where the boundary is tightest.
    alpha
        Error probability, uniformly over time.

    Examples
    --------
    >>> round(float(normal_mixture_half_width(1.0, 1.0, 0.05)) / 1.96, 2)  # vs a fixed 95 % CI
    1.55
    """
    v = np.asarray(var, dtype=np.float64)
    vt = np.asarray(var_target, dtype=np.float64)
    ok = (v > 0) & (vt > 0)
    sv = np.where(ok, v, 1.0)
    svt = np.where(ok, vt, 1.0)
    phi = _phi(sv, svt, alpha)
    hw2 = (sv + mixing_ratio(alpha) * sv * sv / svt) * (np.log1p(phi) - 2.0 * math.log(alpha))
    out: FloatArray = np.where(ok, np.sqrt(hw2), np.where(v > 0, np.inf, 0.0))
    return out


def normal_mixture_p_value(
    diff: npt.ArrayLike, var: npt.ArrayLike, var_target: npt.ArrayLike, alpha: float
) -> FloatArray:
    """Always-valid p-value ``min(1, 1/Λ)`` of ``H₀: θ = 0`` (not yet running-minimized).

    ``p ≤ α`` exactly when 0 lies outside the ``1 − α`` confidence sequence.

    Examples
    --------
    >>> hw = float(normal_mixture_half_width(1e-4, 1e-4, 0.05))
    >>> round(float(normal_mixture_p_value(hw, 1e-4, 1e-4, 0.05)), 6)
    0.05
    """
    d = np.asarray(diff, dtype=np.float64)
    v = np.asarray(var, dtype=np.float64)
    vt = np.asarray(var_target, dtype=np.float64)
    ok = (v > 0) & (vt > 0)
    sv = np.where(ok, v, 1.0)
    phi = _phi(sv, np.where(ok, vt, 1.0), alpha)
    log_lr = -0.5 * np.log1p(phi) + phi / (1.0 + phi) * d * d / (2.0 * sv)
    p = np.minimum(1.0, np.exp(-log_lr))
    degenerate = np.where((v <= 0) & (d != 0), 0.0, 1.0)
    out: FloatArray = np.where(ok, p, degenerate)
    return out


def _half_width(var: float, var_target: float, alpha: float) -> float:
    """Scalar :func:`normal_mixture_half_width` (pure ``math``: the per-feedback hot path)."""
    if var <= 0:
        return 0.0
    if var_target <= 0:
        return math.inf
    r = mixing_ratio(alpha)
    phi = var_target / (r * var)
    return math.sqrt((var + r * var * var / var_target) * (math.log1p(phi) - 2.0 * math.log(alpha)))


def _cs(diff: float, var: float, var_target: float, alpha: float) -> tuple[float, float, float]:
    """``(low, high, p)`` of the CS for one estimate (scalar twin of the public functions)."""
    if var <= 0 or var_target <= 0:
        hw = _half_width(var, var_target, alpha)
        return diff - hw, diff + hw, (0.0 if var <= 0 and diff != 0 else 1.0)
    phi = var_target / (mixing_ratio(alpha) * var)
    log_lr = -0.5 * math.log1p(phi) + phi / (1.0 + phi) * diff * diff / (2.0 * var)
    hw = _half_width(var, var_target, alpha)
    return diff - hw, diff + hw, min(1.0, math.exp(-log_lr))


# --------------------------------------------------------------------------------------------
# specs


def _check_alpha(alpha: float, name: str) -> None:
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ConfigError(name, f"must be in (0, 1), got {alpha!r}")


def _check_name(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ConfigError(
            field_name, f"must be a non-empty string of [A-Za-z0-9_.-], got {value!r}"
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
        if v < 2:
            raise ConfigError("min_n", f"must be >= 2, got {v!r}")
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
    routewise.errors.ConfigError: status: cannot go from 'running' to 'promoted' (allowed: stopped, aborted)
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
        _check_alpha(v, "alpha")
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
            raise ConfigError("status", f"cannot go from {self.status!r} to {to!r} ({hint})")
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
# streaming statistics


class VariantStats:
    """Streaming outcome statistics of one variant (mergeable, plain-JSON state).

    Reward and cost moments are Welford running means and sums of squared deviations
    (merged with Chan et al.'s formula); validity is a count; latency goes into a ±1 %
    log-bucketed histogram (p95). ``assignments`` counts decisions routed to the variant
    (:meth:`assigned`), ``n`` the outcomes observed.

    Examples
    --------
    >>> s = VariantStats()
    >>> for r, ok, ms in [(1.0, True, 100.0), (0.0, False, 300.0), (0.5, True, 200.0)]:
    ...     s.assigned()
    ...     s.observe(r, ok, ms, 0.001)
    >>> s.n, s.mean_reward, s.var_reward, round(s.validity, 3), s.assignments
    (3, 0.5, 0.25, 0.667, 3)
    >>> VariantStats.from_state(s.to_state()).to_state() == s.to_state()
    True
    """

    __slots__ = (
        "_cost_m2",
        "_cost_mean",
        "_latency",
        "_n",
        "_reward_m2",
        "_reward_mean",
        "_valid",
        "assignments",
    )

    def __init__(self) -> None:
        self.assignments = 0
        self._n = 0
        self._reward_mean = 0.0
        self._reward_m2 = 0.0
        self._valid = 0
        self._cost_mean = 0.0
        self._cost_m2 = 0.0
        self._latency = LatencyHistogram()

    def assigned(self, k: int = 1) -> None:
        """Count ``k`` decisions routed to this variant."""
        self.assignments += k

    def observe(self, reward: float, valid: bool, latency_ms: float, cost_usd: float) -> None:
        """Add one outcome (the reward it earned, schema validity, latency and cost).

        Raises
        ------
        InvalidOutcome
            A non-finite reward, or a negative or non-finite latency or cost; nothing is
            changed then.
        """
        if not math.isfinite(reward):
            raise InvalidOutcome("reward", f"must be finite, got {reward!r}")
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            raise InvalidOutcome("latency_ms", f"must be finite and >= 0, got {latency_ms!r}")
        if not (math.isfinite(cost_usd) and cost_usd >= 0):
            raise InvalidOutcome("cost_usd", f"must be finite and >= 0, got {cost_usd!r}")
        self._n += 1
        n = self._n
        d = reward - self._reward_mean
        self._reward_mean += d / n
        self._reward_m2 += d * (reward - self._reward_mean)
        d = cost_usd - self._cost_mean
        self._cost_mean += d / n
        self._cost_m2 += d * (cost_usd - self._cost_mean)
        self._valid += bool(valid)
        self._latency.add(float(latency_ms))

    def merge(self, other: VariantStats) -> None:
        """Add ``other``'s observations (another replica's) into this one."""
        if other._n == 0:
            self.assignments += other.assignments
            return
        n_a, n_b = self._n, other._n
        n = n_a + n_b
        for mean_attr, m2_attr in (("_reward_mean", "_reward_m2"), ("_cost_mean", "_cost_m2")):
            ma, mb = getattr(self, mean_attr), getattr(other, mean_attr)
            delta = mb - ma
            setattr(self, mean_attr, ma + delta * n_b / n)
            setattr(
                self,
                m2_attr,
                getattr(self, m2_attr) + getattr(other, m2_attr) + delta * delta * n_a * n_b / n,
            )
        self._n = n
        self._valid += other._valid
        self.assignments += other.assignments
        merged = self._latency.to_state()
        for k, c in other._latency.to_state().items():
            merged[k] = merged.get(k, 0) + c
        self._latency = LatencyHistogram.from_state(merged)

    @property
    def n(self) -> int:
        """Number of observed outcomes."""
        return self._n

    @property
    def mean_reward(self) -> float | None:
        """Mean reward (``None`` before the first outcome)."""
        return self._reward_mean if self._n else None

    @property
    def var_reward(self) -> float | None:
        """Sample variance of the reward (``ddof=1``; ``None`` below 2 outcomes)."""
        return self._reward_m2 / (self._n - 1) if self._n > 1 else None

    @property
    def validity(self) -> float | None:
        """Share of schema-valid outcomes."""
        return self._valid / self._n if self._n else None

    @property
    def p95_latency_ms(self) -> float | None:
        """95th percentile latency (±1 %, from the log-bucketed histogram)."""
        return self._latency.quantile(_P95)

    @property
    def cost_mean(self) -> float | None:
        """Mean cost per request (USD)."""
        return self._cost_mean if self._n else None

    @property
    def var_cost(self) -> float | None:
        """Sample variance of the cost per request (``ddof=1``)."""
        return self._cost_m2 / (self._n - 1) if self._n > 1 else None

    @property
    def latency(self) -> LatencyHistogram:
        """The latency histogram (read it, do not add to it)."""
        return self._latency

    def _var(self) -> float:
        return max(self._reward_m2, 0.0) / (self._n - 1) if self._n > 1 else 0.0

    def _cvar(self) -> float:
        return max(self._cost_m2, 0.0) / (self._n - 1) if self._n > 1 else 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON state; :meth:`from_state` restores it exactly."""
        return {
            "version": 1,
            "assignments": self.assignments,
            "n": self._n,
            "reward_mean": self._reward_mean,
            "reward_m2": self._reward_m2,
            "valid": self._valid,
            "cost_mean": self._cost_mean,
            "cost_m2": self._cost_m2,
            "latency": self._latency.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> VariantStats:
        """Restore from :meth:`to_state` output.

        Raises
        ------
        StateError
            A missing key or a value of the wrong type.
        """
        try:
            s = cls()
            s.assignments = int(state["assignments"])
            s._n = int(state["n"])
            s._reward_mean = float(state["reward_mean"])
            s._reward_m2 = float(state["reward_m2"])
            s._valid = int(state["valid"])
            s._cost_mean = float(state["cost_mean"])
            s._cost_m2 = float(state["cost_m2"])
            s._latency = LatencyHistogram.from_state(dict(state["latency"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"variant stats state: {exc!r}") from None
        if s._latency.count != s._n:
            raise StateError(f"variant stats state: {s._latency.count} latencies for n={s._n}")
        return s

    def __repr__(self) -> str:
        return f"VariantStats(n={self._n}, mean_reward={self.mean_reward}, assignments={self.assignments})"


# --------------------------------------------------------------------------------------------
# comparisons


def _diff_cs(
    ctrl: VariantStats, cand: VariantStats, alpha: float, target_n: int
) -> tuple[float, float, float, float] | None:
    """``(diff, low, high, p)`` of the reward-difference CS, ``None`` during the burn-in."""
    if ctrl.n < MIN_N_SEQUENTIAL or cand.n < MIN_N_SEQUENTIAL:
        return None
    va, vb = ctrl._var(), cand._var()
    diff = cand._reward_mean - ctrl._reward_mean
    low, high, p = _cs(diff, va / ctrl.n + vb / cand.n, (va + vb) / target_n, alpha)
    return diff, low, high, p


Point = tuple[int, int, float, float, float]


class ComparisonHistory:
    """The reward-difference confidence sequence of one candidate against the control,
    over time: the running p-value minimum and CS intersection, and a thinned time series.

    Call :meth:`update` after every outcome of either variant (or at any other times: the
    guarantees hold at arbitrary, data-dependent times). ``points`` keeps
    ``(n_control, n_candidate, diff, cs_low, cs_high)`` at every ``stride``-th update; when
    it would exceed ``max_points`` every other point is dropped and the stride doubles, so
    it spans the whole experiment in at most ``max_points`` points.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ctl, cand, h = VariantStats(), VariantStats(), ComparisonHistory(max_points=50)
    >>> for _ in range(2000):
    ...     ctl.observe(float(rng.random() < 0.6), True, 100.0, 0.0)
    ...     cand.observe(float(rng.random() < 0.7), True, 100.0, 0.0)
    ...     h.update(ctl, cand, alpha=0.05)
    >>> len(h.points) <= 50, h.min_p_value < 0.05, h.cs_low > 0
    (True, True, True)
    >>> ComparisonHistory.from_state(h.to_state()).to_state() == h.to_state()
    True
    """

    def __init__(self, max_points: int = 500) -> None:
        if not isinstance(max_points, int) or max_points < 4:
            raise ConfigError("max_points", f"must be an integer >= 4, got {max_points!r}")
        self.max_points = max_points
        self._points: list[Point] = []
        self._stride = 1
        self._updates = 0
        self._min_p = 1.0
        self._low = -math.inf
        self._high = math.inf
        self._last: Point | None = None

    def update(
        self,
        control: VariantStats,
        candidate: VariantStats,
        *,
        alpha: float = 0.05,
        target_n: int = 10_000,
    ) -> None:
        """Evaluate the CS on the current statistics and record it (no-op in the burn-in)."""
        res = _diff_cs(control, candidate, alpha, target_n)
        if res is None:
            return
        diff, low, high, p = res
        self.record(control.n, candidate.n, diff, low, high, p)

    def record(
        self, n_control: int, n_candidate: int, diff: float, low: float, high: float, p: float
    ) -> None:
        """Record one evaluated CS (what :meth:`update` does after computing it)."""
        pt: Point = (int(n_control), int(n_candidate), float(diff), float(low), float(high))
        self._min_p = min(self._min_p, float(p))
        self._low = max(self._low, pt[3])
        self._high = min(self._high, pt[4])
        self._last = pt
        if self._updates % self._stride == 0:
            self._points.append(pt)
            if len(self._points) > self.max_points:
                self._points = self._points[::2]
                self._stride *= 2
        self._updates += 1

    @property
    def points(self) -> list[Point]:
        """The thinned series ``(n_control, n_candidate, diff, cs_low, cs_high)``."""
        return list(self._points)

    @property
    def last(self) -> Point | None:
        """The latest evaluated point (kept even when thinned out of ``points``)."""
        return self._last

    @property
    def updates(self) -> int:
        """How many CS evaluations were recorded."""
        return self._updates

    @property
    def min_p_value(self) -> float:
        """Running minimum of the always-valid p-value (1 before any evaluation)."""
        return self._min_p

    @property
    def cs_low(self) -> float | None:
        """Running maximum of the lower bounds (the intersected CS), ``None`` if unbounded."""
        return self._low if math.isfinite(self._low) else None

    @property
    def cs_high(self) -> float | None:
        """Running minimum of the upper bounds, ``None`` if unbounded."""
        return self._high if math.isfinite(self._high) else None

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON state (unbounded ends are ``null``)."""
        return {
            "version": 1,
            "max_points": self.max_points,
            "points": [list(p) for p in self._points],
            "stride": self._stride,
            "updates": self._updates,
            "min_p": self._min_p,
            "low": self.cs_low,
            "high": self.cs_high,
            "last": list(self._last) if self._last is not None else None,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ComparisonHistory:
        """Restore from :meth:`to_state` output (``StateError`` when malformed)."""

        def point(p: Any) -> Point:
            a, b, c, d, e = p
            return (int(a), int(b), float(c), float(d), float(e))

        try:
            h = cls(int(state["max_points"]))
            h._points = [point(p) for p in state["points"]]
            h._stride = int(state["stride"])
            h._updates = int(state["updates"])
            h._min_p = float(state["min_p"])
            h._low = -math.inf if state["low"] is None else float(state["low"])
            h._high = math.inf if state["high"] is None else float(state["high"])
            h._last = None if state["last"] is None else point(state["last"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"comparison history state: {exc!r}") from None
        return h


# --------------------------------------------------------------------------------------------
# reports


@dataclass(slots=True)
class VariantReport:
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
class Comparison:
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
class ExperimentReport:
    """The state of an experiment: per-variant numbers, comparisons, SRM and guardrails.

    Examples
    --------
    >>> spec = ExperimentSpec(name="e", variants={"a": {}, "b": {}}, split={"a": .5, "b": .5})
    >>> rep = experiment_report(spec, {"a": VariantStats(), "b": VariantStats()})
    >>> rep.control, rep.comparisons["b"].verdict, rep.srm_p_value, rep.srm
    ('a', 'inconclusive', None, False)
    >>> sorted(rep.to_dict())  # doctest: +NORMALIZE_WHITESPACE
    ['alpha', 'comparisons', 'control', 'name', 'srm', 'srm_p_value', 'status',
     'stopped_by_guardrail', 'variants', 'winner']
    """

    name: str
    status: str
    control: str
    variants: dict[str, VariantReport]
    comparisons: dict[str, Comparison]
    srm_p_value: float | None
    srm: bool
    stopped_by_guardrail: str | None
    alpha: float = 0.05
    winner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (no NaN or infinity: undefined numbers are ``None``)."""
        return asdict(self)


def srm_p_value(counts: Mapping[str, int], split: Mapping[str, float]) -> float | None:
    """Chi-square goodness-of-fit p-value of assignment ``counts`` against ``split``.

    ``None`` while some expected count is below 5 (the chi-square approximation is poor).

    Examples
    --------
    >>> srm_p_value({"a": 5500, "b": 4500}, {"a": 0.5, "b": 0.5}) < 0.001
    True
    >>> srm_p_value({"a": 5020, "b": 4980}, {"a": 0.5, "b": 0.5}) > 0.5
    True
    """
    keys = list(split)
    obs = np.array([int(counts.get(k, 0)) for k in keys], dtype=np.float64)
    shares = np.array([split[k] for k in keys], dtype=np.float64)
    total = obs.sum()
    exp = total * shares / shares.sum()
    if len(keys) < 2 or total <= 0 or exp.min() < 5:
        return None
    return float(sps.chisquare(obs, exp).pvalue)


def _welch(
    ctrl: VariantStats, cand: VariantStats, alpha: float
) -> tuple[float | None, float | None, float | None]:
    if ctrl.n < 2 or cand.n < 2:
        return None, None, None
    va, vb = ctrl._var(), cand._var()
    sa, sb = va / ctrl.n, vb / cand.n
    se2 = sa + sb
    if se2 <= 0:
        return None, None, None
    res = sps.ttest_ind_from_stats(
        mean1=cand._reward_mean,
        std1=math.sqrt(vb),
        nobs1=cand.n,
        mean2=ctrl._reward_mean,
        std2=math.sqrt(va),
        nobs2=ctrl.n,
        equal_var=False,
    )
    df = se2 * se2 / (sa * sa / (ctrl.n - 1) + sb * sb / (cand.n - 1))
    half = float(sps.t.ppf(1.0 - alpha / 2.0, df)) * math.sqrt(se2)
    diff = cand._reward_mean - ctrl._reward_mean
    return float(res.pvalue), diff - half, diff + half


def _guardrail_checks(ctrl: VariantStats, cand: VariantStats, spec: ExperimentSpec) -> list[str]:
    g = spec.guardrails
    if ctrl.n < g.min_n or cand.n < g.min_n:
        return []
    alpha, nt = spec.alpha, spec.target_n
    out: list[str] = []
    # validity: upper bound of (p_cand − p_ctl) below −drop
    pa, pb = ctrl._valid / ctrl.n, cand._valid / cand.n
    va, vb = pa * (1 - pa), pb * (1 - pb)
    _, high, _ = _cs(pb - pa, va / ctrl.n + vb / cand.n, (va + vb) / nt, alpha)
    if high < -g.validity_drop:
        out.append("validity")
    # p95 latency: quantile CSs from the indicator 1{X <= q}, whose variance is .95 · .05
    pv = _P95 * (1 - _P95)
    h_cand = _half_width(pv / cand.n, pv / nt, alpha)
    h_ctl = _half_width(pv / ctrl.n, pv / nt, alpha)
    if _P95 - h_cand > 0 and _P95 + h_ctl < 1:
        lb = cand.latency.quantile(_P95 - h_cand)
        ub = ctrl.latency.quantile(_P95 + h_ctl)
        if lb is not None and ub is not None and lb > g.p95_latency_ratio * ub:
            out.append("p95_latency")
    # cost: lower bound of (cost_cand − ratio · cost_ctl) above 0
    r = g.cost_ratio
    ca, cb = ctrl._cvar(), cand._cvar()
    low, _, _ = _cs(
        cand._cost_mean - r * ctrl._cost_mean,
        cb / cand.n + r * r * ca / ctrl.n,
        (cb + r * r * ca) / nt,
        alpha,
    )
    if low > 0:
        out.append("cost")
    return out


def _stats_for(spec: ExperimentSpec, stats: Mapping[str, VariantStats]) -> dict[str, VariantStats]:
    return {v: stats.get(v) or VariantStats() for v in spec.variants}


def guardrail_violations(
    spec: ExperimentSpec, stats: Mapping[str, VariantStats]
) -> dict[str, list[str]]:
    """Violated guardrails of every non-control variant (empty lists when none).

    A guardrail is violated when the variant is significantly worse than the control (see
    the module docstring); nothing is evaluated before both have ``guardrails.min_n``
    observations. A missing variant counts as having no observations.

    Examples
    --------
    >>> spec = ExperimentSpec(name="g", variants={"a": {}, "b": {}}, split={"a": .5, "b": .5})
    >>> a, b = VariantStats(), VariantStats()
    >>> for i in range(1000):
    ...     a.observe(1.0, i % 10 != 0, 500.0 + i % 50, 0.001)   # validity 0.9
    ...     b.observe(1.0, i % 10 < 7, 500.0 + i % 50, 0.001)    # validity 0.7
    >>> guardrail_violations(spec, {"a": a, "b": b})
    {'b': ['validity']}
    """
    vs = _stats_for(spec, stats)
    ctrl = vs[spec.control]
    return {v: _guardrail_checks(ctrl, s, spec) for v, s in vs.items() if v != spec.control}


def auto_stop(spec: ExperimentSpec, stats: Mapping[str, VariantStats], ts: float) -> ExperimentSpec:
    """``spec`` stopped by its first guardrail violation, or ``spec`` itself (same object).

    Acts only on a running experiment whose ``guardrails.auto_stop`` is on; the stop records
    ``stopped_by_guardrail = "<variant>:<guardrail>[,<guardrail>…]"``.
    """
    if spec.status != "running" or not spec.guardrails.auto_stop:
        return spec
    for variant, names in guardrail_violations(spec, stats).items():
        if names:
            return spec.transition("stopped", ts, guardrail=f"{variant}:{','.join(names)}")
    return spec


def _variant_report(s: VariantStats, alpha: float, target_n: int) -> VariantReport:
    low = high = None
    if s.n >= MIN_N_SEQUENTIAL:
        v = s._var()
        low, high, _ = _cs(s._reward_mean, v / s.n, v / target_n, alpha)
    return VariantReport(
        n=s.n,
        mean_reward=s.mean_reward,
        ci_low=low,
        ci_high=high,
        validity=s.validity,
        p95_latency_ms=s.p95_latency_ms,
        cost=s.cost_mean,
        assignments=s.assignments,
    )


def _comparison(
    ctrl: VariantStats,
    cand: VariantStats,
    spec: ExperimentSpec,
    history: ComparisonHistory | None,
    violated: list[str],
) -> Comparison:
    diff = cand._reward_mean - ctrl._reward_mean if ctrl.n and cand.n else None
    low: float | None = None
    high: float | None = None
    p = 1.0
    res = _diff_cs(ctrl, cand, spec.alpha, spec.target_n)
    if res is not None:
        _, low, high, p = res
    if history is not None and history.updates:
        p = min(p, history.min_p_value)
        h_low = max(low if low is not None else -math.inf, history._low)
        h_high = min(high if high is not None else math.inf, history._high)
        if h_low <= h_high:  # an empty intersection (plug-in noise) falls back to the current CS
            low = h_low if math.isfinite(h_low) else None
            high = h_high if math.isfinite(h_high) else None
    verdict: Literal["better", "worse", "inconclusive"] = "inconclusive"
    if low is not None and low > 0:
        verdict = "better"
    elif high is not None and high < 0:
        verdict = "worse"
    wp, wlo, whi = _welch(ctrl, cand, spec.alpha)
    return Comparison(
        diff=diff,
        ci_low=low,
        ci_high=high,
        p_value=p,
        verdict=verdict,
        welch_p_value=wp,
        welch_ci_low=wlo,
        welch_ci_high=whi,
        guardrails={g: g in violated for g in GUARDRAILS},
    )


def experiment_report(
    spec: ExperimentSpec,
    stats: Mapping[str, VariantStats],
    histories: Mapping[str, ComparisonHistory] | None = None,
) -> ExperimentReport:
    """Everything an operator looks at: per-variant numbers, one comparison per non-control
    variant, the SRM check and the guardrails.

    Parameters
    ----------
    spec
        The experiment.
    stats
        Statistics per variant (a missing variant counts as empty; extra keys are ignored).
    histories
        Optional :class:`ComparisonHistory` per non-control variant. With it the p-value is
        the running minimum and the CS the running intersection (the always-valid reading);
        without it, both are the current-time values.
    """
    vs = _stats_for(spec, stats)
    control = spec.control
    violations = guardrail_violations(spec, vs)
    hist = histories or {}
    srm_p = srm_p_value({v: s.assignments for v, s in vs.items()}, spec.split)
    return ExperimentReport(
        name=spec.name,
        status=spec.status,
        control=control,
        variants={v: _variant_report(s, spec.alpha, spec.target_n) for v, s in vs.items()},
        comparisons={
            v: _comparison(vs[control], s, spec, hist.get(v), violations[v])
            for v, s in vs.items()
            if v != control
        },
        srm_p_value=srm_p,
        srm=srm_p is not None and srm_p < SRM_THRESHOLD,
        stopped_by_guardrail=spec.stopped_by_guardrail,
        alpha=spec.alpha,
        winner=spec.winner,
    )


# --------------------------------------------------------------------------------------------
# planning and plotting


def sample_size(
    mde: float, sd: float, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> int:
    """Fixed-horizon sample size of the control for a two-sided two-sample z-test.

    ``n = (z_{1−α/2} + z_{power})² · sd² · (1 + 1/ratio) / mde²``, rounded up; the candidate
    then needs ``ceil(ratio · n)`` (``ratio = n_candidate / n_control``; 1 = per variant).
    The always-valid test needs more for the same power (see ``benchmarks/experiments.py``).

    Examples
    --------
    >>> sample_size(mde=0.1, sd=1.0)
    1570
    >>> sample_size(mde=0.02, sd=(0.7 * 0.3) ** 0.5)
    8242
    """
    if not (isinstance(mde, int | float) and math.isfinite(mde) and mde != 0):
        raise ConfigError("mde", f"must be a finite non-zero effect, got {mde!r}")
    if not (isinstance(sd, int | float) and math.isfinite(sd) and sd > 0):
        raise ConfigError("sd", f"must be a finite number > 0, got {sd!r}")
    _check_alpha(alpha, "alpha")
    _check_alpha(power, "power")
    if not (isinstance(ratio, int | float) and math.isfinite(ratio) and ratio > 0):
        raise ConfigError("ratio", f"must be a finite number > 0, got {ratio!r}")
    z = float(sps.norm.ppf(1.0 - alpha / 2.0)) + float(sps.norm.ppf(power))
    return math.ceil(z * z * sd * sd * (1.0 + 1.0 / ratio) / (mde * mde) - 1e-9)


def plot_confidence_sequence(
    history: ComparisonHistory, path: str | Path, *, title: str | None = None
) -> None:
    """Write a PNG of the reward difference (candidate − control) and its confidence
    sequence over the number of observations (matplotlib, Agg canvas, no pyplot state)."""
    from matplotlib.figure import Figure

    pts = history.points
    if history.last is not None and (not pts or pts[-1] != history.last):
        pts.append(history.last)
    fig = Figure(figsize=(9, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", lw=0.8, ls="--")
    if pts:
        arr = np.asarray(pts, dtype=np.float64)
        n = arr[:, 0] + arr[:, 1]
        ax.fill_between(
            n, arr[:, 3], arr[:, 4], color="tab:blue", alpha=0.25, lw=0, label="confidence sequence"
        )
        ax.plot(n, np.maximum.accumulate(arr[:, 3]), color="tab:blue", lw=0.8, ls=":")
        ax.plot(
            n,
            np.minimum.accumulate(arr[:, 4]),
            color="tab:blue",
            lw=0.8,
            ls=":",
            label="running intersection",
        )
        ax.plot(n, arr[:, 2], color="tab:blue", lw=1.5, label="difference in mean reward")
        lo, hi = np.percentile(arr[:, 3], 5), np.percentile(arr[:, 4], 95)
        pad = 0.1 * (hi - lo) if hi > lo else 0.1
        ax.set_ylim(min(lo, 0.0) - pad, max(hi, 0.0) + pad)
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no confidence sequence yet (burn-in)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("observations (control + candidate)")
    ax.set_ylabel("reward difference (candidate − control)")
    ax.set_title(title or f"always-valid p = {history.min_p_value:.3g}")
    ax.grid(alpha=0.3)
    fig.savefig(Path(path))
