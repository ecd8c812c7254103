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

from routewise.types import MAX_COST_USD, MAX_LATENCY_MS, Outcome

__all__ = [
    "NAME_PATTERN",
    "DecideIn",
    "ExperimentIn",
    "ExperimentName",
    "FeedbackIn",
    "GuardrailsIn",
    "OutcomeIn",
    "PromoteIn",
    "VariantIn",
]

_SCALAR_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]
}
# Values are checked by the featurizer (which names the key and the reason), not by pydantic.
Context = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "additionalProperties": _SCALAR_SCHEMA,
            "description": "Flat mapping of feature name to a string, number, boolean or null.",
        }
    ),
]

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
"""What an experiment or variant name may contain."""

ExperimentName = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class DecideIn(_Model):
    """A decision request."""

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

    variant: ExperimentName
