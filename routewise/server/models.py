"""Request bodies: the input shapes of the sidecar's endpoints.

Only shapes live here — types, lengths and the bounds the wire types define (``MAX_LATENCY_MS``,
``MAX_COST_USD``). Everything else (a context's feature values, a reward spec, an experiment's
variants) is checked by the library, which names the field. The answers are the wire types of
:mod:`routewise.types`.

Examples
--------
>>> from routewise.server.models import FeedbackIn
>>> body = FeedbackIn.model_validate_json(
...     '{"decision_id": "d1", "outcome": {"valid": true, "latency_ms": 840.0, "cost_usd": 0.0004}}'
... )
>>> body.outcome.to_outcome()
Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004, error=None, score=None)
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from routewise.errors import ConfigError
from routewise.types import MAX_COST_USD, MAX_LATENCY_MS, Outcome

__all__ = [
    "CONTEXT_SCHEMA",
    "MAX_REWARD_NUMBER",
    "NAME_PATTERN",
    "DecideIn",
    "ExperimentIn",
    "ExperimentName",
    "FeedbackIn",
    "GuardrailsIn",
    "OutcomeIn",
    "PromoteIn",
    "VariantIn",
    "check_reward_numbers",
]

_SCALAR_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
    ]
}
CONTEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"minLength": 1},
    "additionalProperties": _SCALAR_SCHEMA,
    "description": "Flat mapping of feature name to a string, number, boolean or null. A "
    "feature keeps the type of its first value (a number, a string or a boolean); a number "
    "must be a finite double (an integer of 309 digits or more is refused).",
}
"""The JSON schema of a request context (the body's ``context``, ``GET /v1/policy?context=``)."""
# Values are checked by the featurizer (which names the key and the reason), not by pydantic.
Context = Annotated[dict[str, Any], WithJsonSchema(CONTEXT_SCHEMA)]

MAX_REWARD_NUMBER = 2**63
"""Largest number a reward spec may carry over HTTP (a weight, a budget): JSON integers are
unbounded, and three weights near the float maximum overflow their sum."""

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
"""What an experiment or variant name may contain."""

ExperimentName = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _example(value: dict[str, Any]) -> ConfigDict:
    """A model config adding ``value`` as the schema's example (shown by /docs and sent by
    schemathesis's examples phase)."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class DecideIn(_Model):
    """A decision request."""

    model_config = _example(
        {"context": {"task": "extraction", "schema_depth": 3, "input_tokens": 900}}
    )

    context: Context = Field(
        description="The request's features, e.g. task, schema_depth, input_tokens."
    )
    arms: list[str] | None = Field(
        default=None, min_length=1, description="Eligible arm ids (default: every arm)."
    )
    reward: str | dict[str, Any] | None = Field(
        default=None,
        description="Reward override for this decision: a preset name or a reward spec.",
    )
    request_id: str | None = Field(default=None, max_length=256, description="Kept in the trace.")
    unit_id: str | None = Field(
        default=None,
        max_length=256,
        description="Assignment unit (user, session…): while an experiment runs it picks the "
        "variant, sticky per unit (default: request_id, else the decision). Ignored otherwise.",
    )


class OutcomeIn(_Model):
    """What happened when the arm served the request (the fields of
    :class:`~routewise.types.Outcome`)."""

    valid: bool = Field(description="The output parsed and validated against the schema.")
    latency_ms: float = Field(ge=0, le=MAX_LATENCY_MS)
    cost_usd: float = Field(ge=0, le=MAX_COST_USD)
    error: str | None = Field(
        default=None, max_length=256, description="Error category, if the call failed."
    )
    score: float | None = Field(
        default=None, ge=0, le=1, description="Graded correctness in [0, 1]."
    )

    def to_outcome(self) -> Outcome:
        """The library's :class:`~routewise.types.Outcome`."""
        return Outcome(self.valid, self.latency_ms, self.cost_usd, self.error, self.score)


class FeedbackIn(_Model):
    """The outcome of a decision."""

    model_config = _example(
        {
            "decision_id": "01a24dd64bc092fa809862aa244e0287",
            "outcome": {"valid": True, "latency_ms": 840.0, "cost_usd": 0.0004},
        }
    )

    decision_id: str = Field(min_length=1, max_length=128)
    outcome: OutcomeIn


class VariantIn(_Model):
    """One variant: the policy, reward and arm subset its traffic runs with (null: the
    controller's default)."""

    policy: str | dict[str, Any] | None = Field(
        default=None,
        description='A policy name, or {"name": ..., **parameters}.',
    )
    reward: str | dict[str, Any] | None = Field(
        default=None, description="A reward preset name or a reward spec."
    )
    arms: list[str] | None = Field(
        default=None, min_length=1, description="Arm subset (default: every arm)."
    )


class GuardrailsIn(_Model):
    """Guardrail thresholds (omitted: the defaults)."""

    validity_drop: float | None = Field(default=None, ge=0, lt=1)
    p95_latency_ratio: float | None = Field(default=None, ge=1)
    cost_ratio: float | None = Field(default=None, ge=1)
    min_n: int | None = Field(default=None, ge=2, le=1_000_000_000)
    auto_stop: bool | None = None


class ExperimentIn(_Model):
    """A new (draft) experiment; the first variant is the control."""

    model_config = _example(
        {
            "name": "ls-weights",
            "variants": {"control": {}, "candidate": {"policy": "linucb", "reward": "low_latency"}},
            "split": {"control": 0.5, "candidate": 0.5},
        }
    )

    name: ExperimentName
    variants: dict[ExperimentName, VariantIn] = Field(
        min_length=2, description="Variant name → spec, control first."
    )
    split: dict[ExperimentName, Annotated[float, Field(gt=0, le=1)]] | None = Field(
        default=None, description="Traffic share per variant, summing to 1 (default: equal)."
    )
    salt: str | None = Field(
        default=None, min_length=1, max_length=256, description="Assignment salt."
    )
    alpha: float | None = Field(default=None, gt=0, lt=1, description="Test level (0.05).")
    guardrails: GuardrailsIn | None = None

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`Controller.create_experiment
        <routewise.Controller.create_experiment>` (an omitted option keeps its default)."""
        return self.model_dump(exclude_none=True)


class PromoteIn(_Model):
    """The variant to make the default policy."""

    model_config = _example({"variant": "candidate"})

    variant: ExperimentName


def check_reward_numbers(spec: Any, field: str) -> None:
    """Refuse a number above :data:`MAX_REWARD_NUMBER` in a reward spec (``field``: where the
    spec is, e.g. ``reward`` or ``variants.b.reward``), naming it (``reward.weights.cost``);
    the library checks the rest.

    Examples
    --------
    >>> check_reward_numbers({"preset": "balanced", "weights": {"cost": 10**400}}, "reward")
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: reward.weights.cost: must be within ±2**63, got ~1e+400
    """
    if not isinstance(spec, dict):
        return
    stack: list[tuple[Any, str]] = [(v, f"{field}.{k}") for k, v in spec.items()]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}") for k, v in value.items())
        elif type(value) in (int, float) and abs(value) > MAX_REWARD_NUMBER:
            raise ConfigError(where, f"must be within ±2**63, got {_magnitude(value)}")


def _magnitude(x: float) -> str:
    try:
        return f"{float(x):.3g}"
    except OverflowError:  # an integer beyond the float range
        return f"{'-' if x < 0 else ''}~1e+{int(abs(int(x)).bit_length() * 0.30103)}"
