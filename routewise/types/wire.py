"""The wire types: every result that crosses a boundary, defined once.

The library returns these objects, the sidecar answers with them (FastAPI's
``response_model``: the OpenAPI schema is generated from these classes), and the HTTP client
parses the answers back into them. Each type's JSON form comes from one pydantic
``TypeAdapter`` (:class:`Wire`): ``to_dict()`` / ``to_json()`` / ``from_dict()`` are the same
code for every type, so the library, the server and the client cannot drift apart.

They are slotted dataclasses, not pydantic models, because ``Decision`` and
``FeedbackResult`` are built once per request on the hot path (a dataclass costs ~0.2 µs, a
validated model several µs); pydantic reads dataclasses natively for schemas and parsing.

Non-finite floats (an untried arm's UCB score, an unbounded uncertainty) are ``null`` in JSON
and read back as ``inf``.

Examples
--------
>>> from routewise.types import Arm, FeedbackResult
>>> r = FeedbackResult("d1", Arm("openai:gpt-5.4", "direct_emit"), 0.75)
>>> r.to_json()
'{"decision_id":"d1","arm":{"id":"openai:gpt-5.4/direct_emit","backend":"openai:gpt-5.4","mode":"direct_emit"},"reward":0.75,"duplicate":false,"defaulted":false}'
>>> FeedbackResult.from_dict(r.to_dict()) == r
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, NotRequired, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, WithJsonSchema
from typing_extensions import TypedDict

from routewise.types.values import Arm

__all__ = [
    "ArmStats",
    "Decision",
    "ErrorBody",
    "FeedbackResult",
    "GuardianEvent",
    "GuardianHealth",
    "HealthState",
    "OperatorResult",
    "PolicyRanking",
    "RankedArm",
    "ServiceHealth",
    "Status",
    "Wire",
    "WireFloat",
]

HealthState = Literal["healthy", "quarantined", "probing", "pinned"]
"""An arm's Guardian state."""


def _none_is_inf(value: Any) -> Any:
    return math.inf if value is None else value


WireFloat = Annotated[
    float,
    BeforeValidator(_none_is_inf),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]}),
]
"""A float that may be infinite: ``null`` on the wire, ``inf`` in Python."""


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[Any]) -> TypeAdapter[Any]:
    """The one ``TypeAdapter`` of a wire type (built on first use)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


class Wire:
    """Mixin: the one JSON mapping of a wire dataclass (through a cached ``TypeAdapter``)."""

    __slots__ = ()
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(ser_json_inf_nan="null")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (what the sidecar answers; non-finite floats become ``None``)."""
        out: dict[str, Any] = json.loads(_adapter(type(self)).dump_json(self, by_alias=True))
        return out

    def to_json(self) -> str:
        """The compact JSON text of :meth:`to_dict`."""
        return _adapter(type(self)).dump_json(self, by_alias=True).decode()

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Parse the JSON-able form (what the client does with an answer)."""
        out: Self = _adapter(cls).validate_python(data, by_alias=True)
        return out


@dataclass(slots=True)
class Decision(Wire):
    """The result of :meth:`Controller.decide <routewise.Controller.decide>`.

    ``propensity`` is the exact probability with which ``arm`` was drawn (after every
    filter), ``probabilities`` the whole distribution over the eligible arms and ``scores``
    the policy's per-arm scores. ``propensity_method`` is ``"monte_carlo"`` for Thompson-style
    policies, whose distribution is a Monte-Carlo estimate that the draw then follows.
    """

    decision_id: str
    arm: Arm
    propensity: float
    scores: Annotated[
        dict[str, WireFloat], Field(description="Policy scores per eligible arm (null: +inf).")
    ]
    probabilities: dict[str, float]
    explored: bool
    policy: Annotated[str, Field(description="The policy that chose (a variant's, if any).")]
    propensity_method: str
    ts: float
    reward: Annotated[
        str, Field(description="Name of the reward this decision will be learned with.")
    ]
    experiment: Annotated[
        str | None, Field(description="The running experiment that routed it (null: none).")
    ] = None
    variant: Annotated[str | None, Field(description="Its experiment variant (null: none).")] = None


@dataclass(slots=True, frozen=True)
class FeedbackResult(Wire):
    """The result of :meth:`Controller.feedback <routewise.Controller.feedback>`: the reward
    learned from (for a duplicate, the reward learned the first time)."""

    decision_id: str
    arm: Arm
    reward: float
    duplicate: bool = False
    defaulted: bool = False


@dataclass(slots=True, frozen=True)
class RankedArm(Wire):
    """One row of :meth:`Controller.best_policy <routewise.Controller.best_policy>`."""

    arm: Arm
    expected_reward: WireFloat
    uncertainty: Annotated[WireFloat, Field(description="null: unbounded (no data).")]
    n: Annotated[int, Field(description="Feedbacks learned from for this arm.")]


@dataclass(slots=True, frozen=True)
class PolicyRanking(Wire):
    """Arms ranked by expected reward, best first (``GET /v1/policy``)."""

    policy: str
    arms: list[RankedArm]


class ArmStats(TypedDict):
    """One arm's row of :class:`Status`: counts, mean reward, validity, latency, cost."""

    decisions: int
    feedbacks: int
    mean_reward: float | None
    validity: float | None
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    cost_usd_total: float
    cost_usd_mean: float | None
    health: NotRequired[HealthState]
    retired: NotRequired[bool]


@dataclass(slots=True)
class Status(Wire):
    """Per-arm counts, mean reward, validity, latency percentiles, cost and Guardian state
    (``health`` is absent for retired arms, which carry ``retired: true``)."""

    policy: str
    decisions: int
    feedbacks: int
    pending: int
    arms: dict[str, ArmStats] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class GuardianEvent(Wire):
    """One state transition of one arm (kept in the store, logged and served).

    On the wire ``from_state`` / ``to_state`` are ``from`` / ``to``; ``evidence`` holds the
    numbers that tripped it (``null`` where not finite).
    """

    ts: float
    arm: str
    from_state: Annotated[str, Field(alias="from")]
    to_state: Annotated[str, Field(alias="to")]
    reason: Annotated[str, Field(description="e.g. latency, validity, error_burst, operator_pin.")]
    evidence: dict[str, Any] = field(default_factory=dict)
    source: Literal["guardian", "operator"] = "guardian"

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Parse a stored or served event (``evidence`` and ``source`` may be absent)."""
        d = dict(data)
        return cls(
            ts=float(d["ts"]),
            arm=d["arm"],
            from_state=d["from"],
            to_state=d["to"],
            reason=d["reason"],
            evidence=dict(d.get("evidence") or {}),
            source=d.get("source", "guardian"),
        )


@dataclass(slots=True, frozen=True)
class GuardianHealth(Wire):
    """Each arm's Guardian state (``GET /v1/health``)."""

    enabled: Annotated[
        bool, Field(description="The Guardian is on (when off every arm is healthy).")
    ]
    pinned: Annotated[str | None, Field(description="The pinned arm, if an operator pinned one.")]
    arms: dict[str, HealthState]


@dataclass(slots=True, frozen=True)
class OperatorResult(Wire):
    """An arm's state after an operator action (pin, quarantine, release)."""

    arm: str
    action: Literal["pin", "quarantine", "release"]
    state: HealthState
    pinned: str | None


@dataclass(slots=True, frozen=True)
class ServiceHealth(Wire):
    """Liveness / readiness answer."""

    status: str


class ErrorBody(BaseModel):
    """An error answer, naming the offending field (``null`` when no single field is at
    fault); error classes may add context fields (``decision_id``, ``arm_id``…)."""

    model_config = ConfigDict(extra="allow")

    error: Annotated[
        str, Field(description="Error class, e.g. InvalidOutcome, UnknownDecision, MalformedJSON.")
    ]
    field: str | None
    reason: str
    message: str
