"""The sidecar daemon: a thin FastAPI adapter over one :class:`~routewise.Controller`.

``routewise serve`` runs it with uvicorn; tests build it with :func:`create_app` and talk to
it in-process through ``httpx.ASGITransport``.

Endpoints (JSON unless noted; OpenAPI at ``/openapi.json``, Swagger UI at ``/docs``)::

    POST /v1/decide     {context, arms?, reward?, request_id?, unit_id?} → decision (id, arm,
                        propensity, scores…, experiment, variant)
    POST /v1/feedback   {decision_id, outcome: {valid, latency_ms, cost_usd, error?, score?}}
                        → {decision_id, arm, reward, duplicate, defaulted}; idempotent per id
    GET  /v1/policy     ?context=<JSON object>&arms=<id>… → arms ranked by expected reward
    GET  /v1/arms       per-arm statistics and Guardian state (the controller's ``status()``)
    GET  /v1/health     {enabled, pinned, arms: {arm id: healthy|quarantined|probing|pinned}}
    GET  /v1/events     ?limit=N → the Guardian's and operators' transitions, oldest first
    POST /v1/arms/{arm_id}/pin|quarantine|release
                        operator actions → {arm, action, state, pinned}; ``arm_id`` is the
                        plain arm id (``/v1/arms/openai:gpt-5.4/direct_emit/pin``) or URL-encoded
                        (``openai%3Agpt-5.4%2Fdirect_emit``); the action is the last segment
    GET  /v1/experiments                 every experiment's spec, in creation order
    POST /v1/experiments                 {name, variants, split?, salt?, alpha?, guardrails?}
                                         → 201 the draft spec (operator action)
    GET  /v1/experiments/{name}          the status report (per-variant numbers, comparisons, SRM)
    POST /v1/experiments/{name}/start|stop|abort   operator actions → the updated spec
    POST /v1/experiments/{name}/promote  {variant} operator action → the updated spec
    GET  /v1/trace      ?since=<unix seconds> → the JSON-Lines trace (streamed)
    GET  /healthz       liveness (never needs the token)
    GET  /readyz        readiness (never needs the token)
    GET  /metrics       Prometheus text format

Errors
    Every error is a JSON body ``{"error", "field", "reason", "message", …}`` naming the
    offending request field: a :class:`~routewise.errors.RoutewiseError` keeps its class name
    (``InvalidContext``, ``InvalidOutcome``, ``ConfigError``, ``UnknownArm`` → 422;
    ``UnknownDecision`` → 404; ``FeedbackTooLate`` → 409; ``StateError`` → 503; an unknown
    ``arm_id`` in an operator action path is ``UnknownArm`` → 404; an unknown experiment
    ``name`` is ``UnknownExperiment`` → 404, field ``name``; a bad experiment spec or lifecycle
    transition is ``ConfigError`` → 422 naming the field, e.g. ``variants.candidate.arms`` or
    ``status``, and request-shape errors in experiment bodies are ``ConfigError`` too); request-shape
    errors are ``InvalidContext`` / ``InvalidOutcome`` / ``InvalidRequest`` (422); malformed JSON
    is ``MalformedJSON`` (400); an oversized body ``PayloadTooLarge`` (413); a missing or wrong
    token ``Unauthorized`` (401); an operator action on a server without a token ``Forbidden``
    (403). A disabled Guardian makes operator actions a ``ConfigError`` on field ``guardian``
    (422). :class:`routewise.Client` turns them back into exceptions.

Durability
    A response is sent only once what it acknowledges is durable: every write handler awaits a
    *group commit* — one :meth:`~routewise.state.Store.flush` per event-loop turn, shared by
    every request handled in that turn — before answering (a no-op with
    ``durability="always"``). So with any durability mode an acknowledged decision or feedback
    survives ``kill -9``; ``"batch"`` turns the barrier into real group commit.

Concurrency
    Every controller call runs on the event-loop thread: the calls take tens of microseconds,
    a thread hop would cost more, and it makes the store's writer path single-threaded.

Security
    Binds ``127.0.0.1`` by default. With a token (``ROUTEWISE_TOKEN`` or ``token`` in the
    config) every endpoint except ``/healthz`` and ``/readyz`` requires
    ``Authorization: Bearer <token>`` (compared in constant time). Operator actions (pin,
    quarantine, release, and creating, starting, stopping, promoting or aborting an
    experiment) always need the token: without one configured they answer 403.
    Request bodies are limited to ``max_body_bytes``. Tokens, headers and request contexts are
    never logged.

Logs
    One canonical structlog line per request (``event="request"``: method, path, status,
    ``duration_ms`` and, where they apply, decision id, arm, propensity, reward, operator
    action and resulting state, error and field); JSON when stdout is not a TTY, console rendering otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import importlib
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO, cast

import structlog
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, SecretStr, WithJsonSchema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routewise.bandits.base import REGISTRY as POLICY_REGISTRY
from routewise.controller.experiments import VariantSpec, VariantStats, experiment_report
from routewise.errors import (
    ConfigError,
    FeedbackTooLate,
    InvalidContext,
    InvalidOutcome,
    NoEligibleArms,
    PolicyError,
    RoutewiseError,
    StateError,
    UnknownArm,
    UnknownDecision,
)
from routewise.reward import PRESETS, get_reward, reward_argument
from routewise.state.base import json_default
from routewise.types import MAX_COST_USD, MAX_LATENCY_MS, Arm, Mode, Outcome, make_arms

if TYPE_CHECKING:
    from routewise.config import RoutewiseSettings
    from routewise.controller.core import Controller, Decision, FeedbackResult, RankedArm
    from routewise.reward import Scalarizer

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEMO_BACKENDS", "create_app", "serve"]

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""Largest accepted request body (1 MiB)."""

DEMO_BACKENDS: tuple[str, ...] = (
    "openai:gpt-5.4",
    "google_genai:gemini-2.5-flash-lite",
    "ollama:devstral-2",
)
"""Backends of the demo arm set (× the three output modes) that ``routewise serve`` uses when
it creates a new store and no arms are configured."""

DEFAULT_DB = "routewise.db"
"""State file ``routewise serve`` uses when neither ``--db`` nor the config names one."""

_LOG_KEY = "routewise.log"
_OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_ROUTES = frozenset(
    {
        "/v1/decide",
        "/v1/feedback",
        "/v1/policy",
        "/v1/arms",
        "/v1/trace",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/v1/health",
        "/v1/events",
        "/v1/experiments",
    }
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_TRACE_CHUNK = 256
_OPERATOR_ACTIONS = ("pin", "quarantine", "release")
_HEALTH_STATES = ("healthy", "quarantined", "probing", "pinned")
_NO_TOKEN_REASON = "operator actions need a bearer token: set ROUTEWISE_TOKEN"

_log = structlog.get_logger("routewise.server")


# ============================================================================ API models
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ArmOut(BaseModel):
    """An arm: a backend and an output mode; ``id`` is ``"backend/mode"``."""

    id: str
    backend: str
    mode: Mode


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


class DecisionOut(BaseModel):
    """The chosen arm with its exact propensity."""

    decision_id: str
    arm: ArmOut
    propensity: float
    scores: dict[str, float | None] = Field(
        description="Policy scores per eligible arm (null: +inf)."
    )
    probabilities: dict[str, float]
    explored: bool
    policy: str
    propensity_method: str
    ts: float
    reward: str = Field(description="Name of the reward this decision will be learned with.")
    experiment: str | None = Field(
        default=None, description="The running experiment that routed it (null: none)."
    )
    variant: str | None = Field(default=None, description="Its experiment variant (null: none).")


class OutcomeIn(_Model):
    """What happened when the arm served the request."""

    valid: bool = Field(description="The output parsed and validated against the schema.")
    latency_ms: float = Field(ge=0, le=MAX_LATENCY_MS)
    cost_usd: float = Field(ge=0, le=MAX_COST_USD)
    error: str | None = Field(
        default=None, max_length=256, description="Error category, if the call failed."
    )
    score: float | None = Field(
        default=None, ge=0, le=1, description="Graded correctness in [0, 1]."
    )


class FeedbackIn(_Model):
    """The outcome of a decision."""

    decision_id: str = Field(min_length=1, max_length=128)
    outcome: OutcomeIn


class FeedbackOut(BaseModel):
    """The reward learned (for a duplicate: the reward learned the first time)."""

    decision_id: str
    arm: ArmOut
    reward: float
    duplicate: bool
    defaulted: bool


class RankedArmOut(BaseModel):
    arm: ArmOut
    expected_reward: float | None
    uncertainty: float | None = Field(description="null: unbounded (no data).")
    n: int = Field(description="Feedbacks learned from for this arm.")


class PolicyOut(BaseModel):
    """Arms ranked by expected reward, best first."""

    policy: str
    arms: list[RankedArmOut]


class ArmStatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")

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
    health: Literal["healthy", "quarantined", "probing", "pinned"] | None = Field(
        default=None, description="Guardian state (absent for retired arms)."
    )


class StatusOut(BaseModel):
    """Per-arm counts, mean reward, validity, latency percentiles, cost and Guardian state."""

    policy: str
    decisions: int
    feedbacks: int
    pending: int
    arms: dict[str, ArmStatsOut]


class HealthOut(BaseModel):
    status: str


HealthStateOut = Literal["healthy", "quarantined", "probing", "pinned"]


class GuardianHealthOut(BaseModel):
    """Each arm's Guardian state."""

    enabled: bool = Field(description="The Guardian is on (when off every arm is healthy).")
    pinned: str | None = Field(description="The pinned arm, if an operator pinned one.")
    arms: dict[str, HealthStateOut]


class GuardianEventOut(BaseModel):
    """One health transition of one arm."""

    model_config = ConfigDict(populate_by_name=True)

    ts: float
    arm: str
    from_: str = Field(alias="from")
    to: str
    reason: str = Field(description="e.g. latency, validity, error_burst, operator_pin.")
    evidence: dict[str, Any] = Field(description="The numbers that tripped it (null: not finite).")
    source: Literal["guardian", "operator"]


class OperatorOut(BaseModel):
    """The arm's state after an operator action."""

    arm: str
    action: Literal["pin", "quarantine", "release"]
    state: HealthStateOut
    pinned: str | None


# ------------------------------------------------------------------------- experiments
_NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
ExperimentName = Annotated[str, Field(min_length=1, max_length=128, pattern=_NAME_PATTERN)]
ExperimentStatusOut = Literal["draft", "running", "stopped", "promoted", "aborted"]
_EXPERIMENT_ACTIONS = ("start", "stop", "abort", "promote")


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


class PromoteIn(_Model):
    """The variant to make the default policy."""

    variant: ExperimentName


class VariantSpecOut(BaseModel):
    policy: str | dict[str, Any] | None
    reward: str | dict[str, Any] | None
    arms: list[str] | None


class GuardrailsOut(BaseModel):
    validity_drop: float
    p95_latency_ratio: float
    cost_ratio: float
    min_n: int
    auto_stop: bool


class ExperimentOut(BaseModel):
    """An experiment's spec and lifecycle state."""

    name: str
    variants: dict[str, VariantSpecOut]
    split: dict[str, float]
    salt: str
    alpha: float
    guardrails: GuardrailsOut
    target_n: int
    status: ExperimentStatusOut
    winner: str | None
    stopped_by_guardrail: str | None
    created_ts: float | None
    started_ts: float | None
    stopped_ts: float | None


class VariantReportOut(BaseModel):
    n: int
    mean_reward: float | None
    ci_low: float | None
    ci_high: float | None
    validity: float | None
    p95_latency_ms: float | None
    cost: float | None
    assignments: int


class ComparisonOut(BaseModel):
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: Literal["better", "worse", "inconclusive"]
    welch_p_value: float | None
    welch_ci_low: float | None
    welch_ci_high: float | None
    guardrails: dict[str, bool]


class ExperimentReportOut(BaseModel):
    """Per-variant numbers and always-valid comparisons of each candidate with the control."""

    name: str
    status: ExperimentStatusOut
    control: str
    variants: dict[str, VariantReportOut]
    comparisons: dict[str, ComparisonOut]
    srm_p_value: float | None
    srm: bool
    stopped_by_guardrail: str | None
    alpha: float
    winner: str | None


class ErrorOut(BaseModel):
    """An error naming the offending field (``null`` when no single field is at fault)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(
        description="Error class, e.g. InvalidOutcome, UnknownDecision, MalformedJSON."
    )
    field: str | None
    reason: str
    message: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "Missing or wrong bearer token"},
    }
    text = {
        400: "Malformed JSON",
        404: "Unknown decision",
        409: "Feedback too late",
        413: "Request body too large",
        422: "Invalid request (the field and the reason are named)",
        503: "State store unavailable",
    }
    for c in codes:
        out[c] = {"model": ErrorOut, "description": text[c]}
    return out


# ======================================================================= error mapping
def _error_body(
    error: str, field: str | None, reason: str, message: str | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": error,
        "field": field,
        "reason": reason,
        "message": message if message is not None else (f"{field}: {reason}" if field else reason),
    }
    body.update(extra)
    return body


def _routewise_error(exc: RoutewiseError) -> tuple[int, dict[str, Any]]:
    """HTTP status and body for a library error (the inverse of the client's mapping)."""
    msg = str(exc)
    if isinstance(exc, InvalidContext):
        field = "context" if exc.key == "<context>" else f"context.{exc.key}"
        return 422, _error_body("InvalidContext", field, exc.reason, msg, key=exc.key)
    if isinstance(exc, InvalidOutcome):
        field = "outcome" if exc.field == "outcome" else f"outcome.{exc.field}"
        return 422, _error_body("InvalidOutcome", field, exc.reason, msg)
    if isinstance(exc, _RewardError):
        return 422, _error_body(
            "ConfigError", exc.field, exc.reason, msg, library_field=exc.library_field
        )
    if isinstance(exc, _UnknownExperiment):
        return 404, _error_body("UnknownExperiment", "name", exc.reason, msg, experiment=exc.name)
    if isinstance(exc, ConfigError):
        return 422, _error_body("ConfigError", exc.field, exc.reason, msg)
    if isinstance(exc, UnknownArm):
        return 422, _error_body(
            "UnknownArm",
            "arms",
            f"unknown arm {exc.arm_id!r}",
            msg,
            arm_id=exc.arm_id,
            known_arms=exc.known,
        )
    if isinstance(exc, UnknownDecision):
        return 404, _error_body(
            "UnknownDecision", "decision_id", "unknown decision", msg, decision_id=exc.decision_id
        )
    if isinstance(exc, FeedbackTooLate):
        return 409, _error_body(
            "FeedbackTooLate",
            "decision_id",
            f"feedback arrived {exc.age_s:.1f}s after the decision, past the reward wait time "
            f"of {exc.wait_s:.1f}s",
            msg,
            decision_id=exc.decision_id,
            age_s=exc.age_s,
            wait_s=exc.wait_s,
        )
    if isinstance(exc, NoEligibleArms):
        return 422, _error_body("NoEligibleArms", "arms", msg, msg)
    if isinstance(exc, PolicyError):
        return 422, _error_body("PolicyError", None, msg, msg)
    if isinstance(exc, StateError):
        return 503, _error_body("StateError", None, msg, msg)
    return 422, _error_body(type(exc).__name__, None, msg, msg)


def _loc_field(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_UNION_TAGS = ("str", "dict[str,any]", "list[str]")


def _drop_union_tags(loc: Iterable[int | str]) -> tuple[int | str, ...]:
    """``loc`` without pydantic's union-member tags (``policy.str`` → ``policy``) and with a
    bad mapping key named by its mapping (``variants.<key>.[key]`` → ``variants``)."""
    out: list[int | str] = []
    for part in loc:
        if out and out[-1] in ("policy", "reward", "arms") and part in _UNION_TAGS:
            continue
        if part == "[key]" and out:  # a bad mapping key: name the mapping
            out.pop()
            continue
        out.append(part)
    return tuple(out)


def _validation_error(
    exc: RequestValidationError, *, config: bool = False
) -> tuple[int, dict[str, Any]]:
    """Map a FastAPI/pydantic request error to our body, naming the first bad field.

    With ``config`` (the experiment endpoints) a bad body field is a ``ConfigError``, as the
    library raises for a bad experiment spec."""
    errors = list(exc.errors())
    if not errors:
        return 422, _error_body("InvalidRequest", None, "invalid request")
    first = errors[0]
    loc = _drop_union_tags(first.get("loc", ()))
    where, path = (
        (loc[0], loc[1:]) if loc and loc[0] in ("body", "query", "path") else ("body", loc)
    )
    kind = str(first.get("type", ""))
    reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = len(errors) - 1
    extra: dict[str, Any] = {
        "errors": [
            _loc_field(_drop_union_tags(e.get("loc", ()))[1:]) or "body" for e in errors[:20]
        ]
    }
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "JSON decode error")
        pos = path[0] if path and isinstance(path[0], int) else None
        at = f" at char {pos}" if pos is not None else ""
        return 400, _error_body("MalformedJSON", "body", f"not valid JSON ({detail}{at})")
    if where == "body" and not path:
        if kind == "missing":
            reason = "a JSON object is required"
        elif isinstance(first.get("input"), bytes | str):
            reason = "expected a JSON object (send Content-Type: application/json)"
        return 422, _error_body("InvalidRequest", "body", reason, **extra)
    field = _loc_field(path)
    if more:
        reason += f" (and {more} more error(s))"
    head = path[0] if path else None
    if head == "outcome":
        return 422, _error_body("InvalidOutcome", field, reason, **extra)
    if head == "context" and where == "body":
        return 422, _error_body("InvalidContext", field, reason, **extra)
    if head == "arms" or (config and where == "body"):
        return 422, _error_body("ConfigError", field, reason, **extra)
    return 422, _error_body("InvalidRequest", field, reason, **extra)


_HTTP_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}


# ================================================================================ JSON
def _finite(x: float) -> float | None:
    return x if x - x == 0.0 else None


def _arm(arm: Arm) -> dict[str, str]:
    return {"id": arm.id, "backend": arm.backend, "mode": arm.mode.value}


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def _decision_json(d: Decision) -> dict[str, Any]:
    return {
        "decision_id": d.decision_id,
        "arm": _arm(d.arm),
        "propensity": d.propensity,
        "scores": {k: _finite(v) for k, v in d.scores.items()},
        "probabilities": d.probabilities,
        "explored": d.explored,
        "policy": d.policy,
        "propensity_method": d.propensity_method,
        "ts": d.ts,
        "reward": d.reward,
        "experiment": d.experiment,
        "variant": d.variant,
    }


def _feedback_json(r: FeedbackResult) -> dict[str, Any]:
    return {
        "decision_id": r.decision_id,
        "arm": _arm(r.arm),
        "reward": r.reward,
        "duplicate": r.duplicate,
        "defaulted": r.defaulted,
    }


def _plain_json(value: Any) -> Any:
    """``value`` with every non-finite float (or numpy scalar) made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return _finite(value)
    item = getattr(value, "item", None)
    return _plain_json(item()) if callable(item) else str(value)


def _ranked_json(r: RankedArm) -> dict[str, Any]:
    return {
        "arm": _arm(r.arm),
        "expected_reward": _finite(r.expected_reward),
        "uncertainty": _finite(r.uncertainty),
        "n": r.n,
    }


# ============================================================================= metrics
class _StatusCollector(Collector):
    """Gauges read from the controller at scrape time (they survive restarts)."""

    def __init__(self, controller: Controller) -> None:
        self._ctl = controller

    def collect(self) -> Iterable[Metric]:
        st = self._ctl.status()
        pending = GaugeMetricFamily("routewise_pending_decisions", "Decisions awaiting feedback")
        pending.add_metric([], st.pending)
        learned = GaugeMetricFamily(
            "routewise_arm_feedbacks",
            "Feedbacks learned from, by arm (incl. before restart)",
            labels=["arm"],
        )
        mean = GaugeMetricFamily(
            "routewise_arm_mean_reward", "Mean learned reward by arm", labels=["arm"]
        )
        validity = GaugeMetricFamily(
            "routewise_arm_validity", "Share of schema-valid outcomes by arm", labels=["arm"]
        )
        health = GaugeMetricFamily(
            "routewise_arm_health",
            "Guardian state by arm (1 for the current state, else 0)",
            labels=["arm", "state"],
        )
        for arm_id, s in st.arms.items():
            learned.add_metric([arm_id], s["feedbacks"])
            if s.get("mean_reward") is not None:
                mean.add_metric([arm_id], s["mean_reward"])
            if s.get("validity") is not None:
                validity.add_metric([arm_id], s["validity"])
            if s.get("health") is not None:
                for state in _HEALTH_STATES:
                    health.add_metric([arm_id, state], 1.0 if s["health"] == state else 0.0)
        families: list[Metric] = [pending, learned, mean, validity, health]
        if self._ctl.guardian is not None:
            counts: dict[tuple[str, str, str], int] = {}
            for ev in self._ctl.events():
                key = (ev.arm, ev.to_state, ev.source)
                counts[key] = counts.get(key, 0) + 1
            transitions = CounterMetricFamily(
                "routewise_guardian_transitions",
                "Guardian state transitions (incl. before restart), by arm, new state and source",
                labels=["arm", "to", "source"],
            )
            for (arm_id, to, source), n in sorted(counts.items()):
                transitions.add_metric([arm_id, to, source], n)
            families.append(transitions)
        return families


class _Metrics:
    def __init__(self, controller: Controller, registry: CollectorRegistry) -> None:
        r = registry
        self.registry = registry
        self.http_requests = Counter(
            "routewise_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "routewise_http_request_duration_seconds",
            "Time spent handling a request, by route",
            ["route"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.decisions = Counter(
            "routewise_decisions", "Decisions by arm", ["arm", "explored"], registry=r
        )
        self.feedback = Counter(
            "routewise_feedback",
            "Feedback learned from, by arm and validity",
            ["arm", "valid"],
            registry=r,
        )
        self.duplicates = Counter(
            "routewise_feedback_duplicates", "Repeated feedback (ignored)", registry=r
        )
        self.reward = Histogram(
            "routewise_reward",
            "Rewards learned, by arm",
            ["arm"],
            registry=r,
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        )
        self.outcome_latency = Histogram(
            "routewise_outcome_latency_seconds",
            "Latency of the served requests (from feedback), by arm",
            ["arm"],
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
        )
        self.cost = Counter(
            "routewise_outcome_cost_usd", "Cost of the served requests, by arm", ["arm"], registry=r
        )
        self.errors = Counter(
            "routewise_api_errors", "Error responses by error class", ["error"], registry=r
        )
        registry.register(_StatusCollector(controller))

    def observe_feedback(self, r: FeedbackResult, outcome: Outcome) -> None:
        if r.duplicate:
            self.duplicates.inc()
            return
        arm = r.arm.id
        self.feedback.labels(arm, "true" if outcome.valid else "false").inc()
        self.reward.labels(arm).observe(r.reward)
        self.outcome_latency.labels(arm).observe(outcome.latency_ms / 1000.0)
        self.cost.labels(arm).inc(outcome.cost_usd)


# ========================================================================= group commit
class _GroupCommit:
    """Acknowledge writes only once durable: one ``store.flush()`` per event-loop turn.

    Every handler that wrote awaits :meth:`durable`; the first one in a loop turn schedules a
    flush with ``call_soon``, so it runs after every handler already runnable in this turn and
    commits all their records in one transaction.
    """

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush_store = flush
        self._waiters: list[asyncio.Future[None]] | None = None

    async def durable(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        if self._waiters is None:
            self._waiters = [fut]
            loop.call_soon(self._flush)
        else:
            self._waiters.append(fut)
        await fut

    def _flush(self) -> None:
        waiters, self._waiters = self._waiters or [], None
        try:
            self._flush_store()
        except Exception as exc:  # a failed commit: nobody gets an acknowledgement
            for f in waiters:
                if not f.done():
                    f.set_exception(StateError(f"commit failed: {exc}"))
            return
        for f in waiters:
            if not f.done():
                f.set_result(None)


# ======================================================================== ASGI middleware
class _Edge:
    """Auth, body-size limit, canonical log line and HTTP metrics for every request."""

    def __init__(
        self, app: ASGIApp, *, token: bytes | None, max_body: int, metrics: _Metrics, logger: Any
    ) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.metrics = metrics
        self.log = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        fields: dict[str, Any] = {}
        scope[_LOG_KEY] = fields
        status = 500
        path: str = scope["path"]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            auth: bytes | None = None
            length: bytes | None = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    auth = value
                elif name == b"content-length":
                    length = value
            if self.token is not None and path not in _OPEN_PATHS and not self._authorized(auth):
                body = _error_body(
                    "Unauthorized",
                    "Authorization",
                    "missing or wrong bearer token"
                    if auth
                    else "this server requires 'Authorization: Bearer <token>'",
                )
                await self._respond(send_wrapper, 401, body, [(b"www-authenticate", b"Bearer")])
                fields["error"] = "Unauthorized"
                return
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    n = -1
                if n < 0:
                    await self._respond(
                        send_wrapper,
                        400,
                        _error_body("BadRequest", "Content-Length", "not a valid length"),
                    )
                    fields["error"] = "BadRequest"
                    return
                if n > self.max_body:
                    await self._respond(send_wrapper, 413, self._too_large())
                    fields["error"] = "PayloadTooLarge"
                    return
                await self.app(scope, receive, send_wrapper)
            else:
                await self.app(scope, self._limited(receive), send_wrapper)
        except asyncio.CancelledError:  # the client went away mid-request
            if status == 500:
                status = 499
            raise
        finally:
            dt = time.perf_counter() - t0
            route = path if path in _ROUTES else _route_label(path)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            m = self.metrics
            m.http_requests.labels(route, method, str(status)).inc()
            m.http_latency.labels(route).observe(dt)
            if "error" in fields:
                m.errors.labels(fields["error"]).inc()
            (self.log.error if status >= 500 else self.log.info)(
                "request",
                method=scope["method"],
                path=path,
                status=status,
                duration_ms=round(dt * 1000.0, 3),
                **fields,
            )

    def _authorized(self, auth: bytes | None) -> bool:
        assert self.token is not None
        if auth is None or auth[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(auth[7:].strip(), self.token)

    def _too_large(self) -> dict[str, Any]:
        return _error_body(
            "PayloadTooLarge", "body", f"request body larger than {self.max_body} bytes"
        )

    def _limited(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        return receive_limited

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        body: dict[str, Any],
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    *(headers or []),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


def _route_label(path: str) -> str:
    if path.startswith("/v1/arms/"):
        action = path.rpartition("/")[2]
        if action in _OPERATOR_ACTIONS:
            return f"/v1/arms/{{arm_id}}/{action}"
    elif path.startswith("/v1/experiments/"):
        parts = path.split("/")
        if len(parts) == 4 and parts[3]:
            return "/v1/experiments/{name}"
        if len(parts) == 5 and parts[3] and parts[4] in _EXPERIMENT_ACTIONS:
            return f"/v1/experiments/{{name}}/{parts[4]}"
    return "other"


def _log_fields(request: Request) -> dict[str, Any]:
    fields: dict[str, Any] | None = request.scope.get(_LOG_KEY)
    if fields is None:
        fields = request.scope[_LOG_KEY] = {}
    return fields


# ================================================================================= app
class _RewardError(ConfigError):
    """A ConfigError in the ``reward`` of a request: ``field`` is the request field and
    ``library_field`` the field the library's ``Controller.decide(reward=...)`` names (the
    same ``reward`` / ``reward.<key>``), which the client raises."""

    def __init__(self, field: str, reason: str, library_field: str) -> None:
        super().__init__(field, reason)
        self.library_field = library_field


def _resolve_reward(spec: str | dict[str, Any] | None) -> Scalarizer | None:
    if spec is None:
        return None
    try:
        return reward_argument(spec)  # named as Controller.decide(reward=...) names it
    except ConfigError as exc:
        raise _RewardError(exc.field, exc.reason, exc.field) from None


class _UnknownExperiment(ConfigError):
    """The library's ``ConfigError("name", "no experiment …")``, answered with 404."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__("name", reason)
        self.name = name


def _experiment_call(ctl: Controller, name: str, call: Callable[[], Any]) -> Any:
    """``call()`` on a known experiment, with the library's unknown-experiment
    ``ConfigError`` made a 404 (checked first: the library may name another error first)."""
    if all(e.name != name for e in ctl.experiments()):
        known = sorted(e.name for e in ctl.experiments())
        raise _UnknownExperiment(name, f"no experiment {name!r} (known: {known})")
    try:
        return call()
    except ConfigError as exc:
        if exc.field == "name" and exc.reason.startswith("no experiment"):
            raise _UnknownExperiment(name, exc.reason) from None
        raise


def _check_json_numbers(value: Any, field: str) -> None:
    """Reject numbers JSON output cannot carry (NaN, infinity, ints beyond float range)."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        v, where = stack.pop()
        if isinstance(v, dict):
            stack.extend((x, f"{where}.{k}") for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((x, f"{where}[{i}]") for i, x in enumerate(v))
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(where, f"must be a finite number, got {v!r}")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63:
            raise ConfigError(where, "is out of range (|value| > 2**63)")


def _experiment_variants(variants: dict[str, VariantIn]) -> dict[str, dict[str, Any]]:
    """The variants as the controller takes them, checked first so that an error names the
    request field (``variants.<name>.<field>``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, v in variants.items():
        where = f"variants.{name}"
        spec = {"policy": v.policy, "reward": v.reward, "arms": v.arms}
        _check_json_numbers(spec, where)
        try:
            VariantSpec(**spec)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc.field}", exc.reason) from None
        if v.reward is not None:
            try:
                get_reward(v.reward)
            except ConfigError as exc:
                field = f"{where}.reward" + ("" if isinstance(v.reward, str) else f".{exc.field}")
                raise ConfigError(field, exc.reason) from None
        for i, arm in enumerate(v.arms or ()):
            try:
                Arm.parse(arm)
            except ConfigError as exc:
                raise ConfigError(f"{where}.arms[{i}]", exc.reason) from None
        out[name] = spec
    return out


def _parse_context_param(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        ctx = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidContext(
            "<context>", f"the 'context' query parameter is not valid JSON ({exc})"
        ) from None
    if not isinstance(ctx, dict):
        raise InvalidContext("<context>", f"must be a JSON object, got {type(ctx).__name__}")
    return ctx


def create_app(
    controller: Controller,
    *,
    token: str | SecretStr | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry: CollectorRegistry | None = None,
    logger: Any = None,
) -> FastAPI:
    """Build the sidecar app over ``controller`` (the app does not close it).

    Parameters
    ----------
    controller
        The controller every endpoint calls.
    token
        When set, every endpoint except ``/healthz`` and ``/readyz`` requires
        ``Authorization: Bearer <token>``.
    max_body_bytes
        Larger request bodies get 413.
    registry
        Prometheus registry for ``/metrics`` (default: a new one per app, never the global).
    logger
        structlog logger for the canonical request lines (default ``routewise.server``).

    Examples
    --------
    >>> import httpx, asyncio, routewise as rw
    >>> from structlog.testing import capture_logs
    >>> from routewise.server import create_app
    >>> app = create_app(rw.Controller(arms=["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"], seed=0))
    >>> async def main() -> int:
    ...     async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rw") as c:
    ...         r = await c.post("/v1/decide", json={"context": {"task": "extraction"}})
    ...         return r.status_code
    >>> with capture_logs() as logs:
    ...     asyncio.run(main())
    200
    >>> [(e["event"], e["path"], e["status"]) for e in logs]
    [('request', '/v1/decide', 200)]
    """
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    if secret is not None and not secret.strip():
        raise ConfigError("token", "must not be empty (unset it to disable authentication)")
    if (
        isinstance(max_body_bytes, bool)
        or not isinstance(max_body_bytes, int)
        or max_body_bytes < 1
    ):
        raise ConfigError("max_body_bytes", f"must be a positive integer, got {max_body_bytes!r}")
    ctl = controller
    metrics = _Metrics(
        ctl, registry if registry is not None else CollectorRegistry(auto_describe=True)
    )
    store = ctl.store
    commit = (
        _GroupCommit(store.flush) if getattr(store, "durability", "always") != "always" else None
    )
    state = {"ready": True}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False

    app = FastAPI(
        title="routewise sidecar",
        version=_version(),
        summary="Learn online which (backend, output mode) arm serves each structured-output LLM request.",
        lifespan=lifespan,
        default_response_class=_JSON,
    )
    app.state.controller = ctl
    app.state.metrics_registry = metrics.registry

    # ------------------------------------------------------------------ errors
    async def on_routewise_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RoutewiseError)
        status, body = _routewise_error(exc)
        fields = _log_fields(request)
        fields["error"], fields["field"] = body["error"], body["field"]
        return _JSON(body, status_code=status)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        status, body = _validation_error(exc, config=request.url.path.startswith("/v1/experiments"))
        fields = _log_fields(request)
        fields["error"], fields["field"] = body["error"], body["field"]
        return _JSON(body, status_code=status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _HTTP_ERRORS.get(exc.status_code, "HTTPError")
        if exc.status_code == 413:
            body = _error_body(code, "body", str(exc.detail))
        elif exc.status_code == 404:
            body = _error_body(code, None, f"no endpoint at {request.url.path!r} (see /docs)")
        elif exc.status_code == 405:
            body = _error_body(
                code, None, f"{request.method} is not allowed on {request.url.path!r}"
            )
        else:
            body = _error_body(code, None, str(exc.detail))
        _log_fields(request)["error"] = code
        return _JSON(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        _log_fields(request)["error"] = "InternalError"
        _log.exception("unhandled error", path=request.url.path)
        return _JSON(
            _error_body("InternalError", None, "internal error (see the server log)"),
            status_code=500,
        )

    app.add_exception_handler(RoutewiseError, on_routewise_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)

    # --------------------------------------------------------------- endpoints
    @app.post(
        "/v1/decide",
        response_model=DecisionOut,
        responses=_errors(400, 413, 422, 503),
        tags=["routing"],
    )
    async def decide(body: DecideIn, request: Request) -> Response:
        """Choose an arm for a request context; log the decision with its exact propensity."""
        d = ctl.decide(
            body.context,
            arms=body.arms,
            reward=_resolve_reward(body.reward),
            request_id=body.request_id,
            unit_id=body.unit_id,
        )
        if commit is not None:
            await commit.durable()
        metrics.decisions.labels(d.arm.id, "true" if d.explored else "false").inc()
        fields = _log_fields(request)
        fields.update(
            decision_id=d.decision_id,
            arm=d.arm.id,
            propensity=round(d.propensity, 6),
            explored=d.explored,
        )
        if body.request_id is not None:
            fields["request_id"] = body.request_id
        if d.experiment is not None:
            fields.update(experiment=d.experiment, variant=d.variant)
        return _JSON(_decision_json(d))

    @app.post(
        "/v1/feedback",
        response_model=FeedbackOut,
        responses=_errors(400, 404, 409, 413, 422, 503),
        tags=["routing"],
    )
    async def feedback(body: FeedbackIn, request: Request) -> Response:
        """Report the outcome of a decision; learn from it. Idempotent per decision id."""
        o = body.outcome
        outcome = Outcome(
            valid=o.valid,
            latency_ms=o.latency_ms,
            cost_usd=o.cost_usd,
            error=o.error,
            score=o.score,
        )
        fields = _log_fields(request)
        fields["decision_id"] = body.decision_id
        r = ctl.feedback(body.decision_id, outcome)
        if commit is not None:
            await commit.durable()
        metrics.observe_feedback(r, outcome)
        fields.update(arm=r.arm.id, reward=round(r.reward, 6), duplicate=r.duplicate, valid=o.valid)
        return _JSON(_feedback_json(r))

    @app.get("/v1/policy", response_model=PolicyOut, responses=_errors(422), tags=["inspection"])
    async def policy(
        context: Annotated[
            str | None,
            Query(
                description='Request context as a JSON object, e.g. {"task": "extraction"}. '
                "Default: the recent traffic mix."
            ),
        ] = None,
        arms: Annotated[
            list[str] | None, Query(description="Restrict the ranking to these arm ids.")
        ] = None,
    ) -> Response:
        """Arms ranked by expected reward (with uncertainty), best first."""
        rows = ctl.best_policy(_parse_context_param(context), arms=arms or None)
        return _JSON({"policy": ctl.policy.name, "arms": [_ranked_json(r) for r in rows]})

    @app.get("/v1/arms", response_model=StatusOut, responses=_errors(), tags=["inspection"])
    async def arms_status() -> Response:
        """Per-arm counts, mean reward, validity, latency percentiles and cost."""
        return _JSON(ctl.status().to_dict())

    @app.get("/v1/health", response_model=GuardianHealthOut, responses=_errors(), tags=["guardian"])
    async def guardian_health() -> Response:
        """Each arm's Guardian state: healthy, quarantined, probing or pinned."""
        g = ctl.guardian
        arms = ctl.health()
        return _JSON(
            {"enabled": g is not None, "pinned": g.pinned if g is not None else None, "arms": arms}
        )

    @app.get(
        "/v1/events",
        response_model=list[GuardianEventOut],
        responses=_errors(422, 503),
        tags=["guardian"],
    )
    async def guardian_events(
        limit: Annotated[
            int | None, Query(ge=0, le=1_000_000_000, description="Only the newest N events.")
        ] = None,
    ) -> Response:
        """Health transitions (Guardian trips, probes, recoveries and operator actions), oldest first."""
        return _JSON([_plain_json(e.to_dict()) for e in ctl.events(limit)])

    operator_responses: dict[int | str, dict[str, Any]] = {
        **_errors(413, 422, 503),
        403: {
            "model": ErrorOut,
            "description": "The server has no token: operator actions are disabled",
        },
        404: {"model": ErrorOut, "description": "Unknown arm (UnknownArm, field arm_id)"},
    }
    operator_responses[422] = {
        "model": ErrorOut,
        "description": "The Guardian is disabled (ConfigError, field guardian)",
    }
    no_token = _error_body("Forbidden", "Authorization", _NO_TOKEN_REASON)
    operator_docs = {
        "pin": "Send all traffic to the arm (propensity 1) until it is released.",
        "quarantine": "Exclude the arm from selection until it is released.",
        "release": "Return the arm to healthy (unpin or unquarantine) and forget its detectors' history.",
    }

    def operator_endpoint(action: str) -> Callable[..., Any]:
        async def operator_action(
            arm_id: Annotated[
                str,
                PathParam(
                    description="Arm id, e.g. 'openai:gpt-5.4/direct_emit' (plain, or URL-encoded: %2F)."
                ),
            ],
            request: Request,
        ) -> Response:
            fields = _log_fields(request)
            fields.update(arm=arm_id, action=action)
            if secret is None:
                fields["error"], fields["field"] = "Forbidden", "Authorization"
                return _JSON(no_token, status_code=403)
            try:
                getattr(ctl, action)(arm_id)
            except UnknownArm as exc:
                fields["error"], fields["field"] = "UnknownArm", "arm_id"
                body = _error_body(
                    "UnknownArm",
                    "arm_id",
                    f"unknown arm {exc.arm_id!r}",
                    str(exc),
                    arm_id=exc.arm_id,
                    known_arms=exc.known,
                )
                return _JSON(body, status_code=404)
            if commit is not None:
                await commit.durable()
            g = ctl.guardian
            pinned = g.pinned if g is not None else None
            state = ctl.health().get(arm_id, "healthy")
            fields["state"] = state
            return _JSON({"arm": arm_id, "action": action, "state": state, "pinned": pinned})

        operator_action.__name__ = f"{action}_arm"
        operator_action.__doc__ = operator_docs[action] + " Needs the bearer token."
        return operator_action

    for action in _OPERATOR_ACTIONS:
        app.post(
            f"/v1/arms/{{arm_id:path}}/{action}",
            response_model=OperatorOut,
            responses=operator_responses,
            tags=["guardian"],
            name=f"{action}_arm",
        )(operator_endpoint(action))

    # ------------------------------------------------------------ experiments
    def experiment_responses(*codes: int, unknown: bool = True) -> dict[int | str, Any]:
        out: dict[int | str, dict[str, Any]] = {
            **_errors(*codes),
            403: {
                "model": ErrorOut,
                "description": "The server has no token: operator actions are disabled",
            },
            422: {
                "model": ErrorOut,
                "description": "ConfigError naming the field (a bad spec, e.g. "
                "variants.candidate.arms, or a disallowed transition: status), PolicyError, "
                "UnknownArm",
            },
        }
        if unknown:
            out[404] = {
                "model": ErrorOut,
                "description": "Unknown experiment (UnknownExperiment, field name)",
            }
        return out

    def spec_json(spec: Any) -> dict[str, Any]:
        return cast(dict[str, Any], _plain_json(spec.model_dump(mode="json")))

    async def operator_gate(request: Request, action: str, name: str) -> Response | None:
        fields = _log_fields(request)
        fields.update(experiment=name, action=action)
        if secret is None:
            fields["error"], fields["field"] = "Forbidden", "Authorization"
            return _JSON(no_token, status_code=403)
        return None

    async def acknowledge(request: Request, spec: Any, status_code: int = 200) -> Response:
        if commit is not None:
            await commit.durable()
        _log_fields(request)["state"] = spec.status
        return _JSON(spec_json(spec), status_code=status_code)

    @app.get(
        "/v1/experiments",
        response_model=list[ExperimentOut],
        responses=_errors(),
        tags=["experiments"],
    )
    async def list_experiments() -> Response:
        """Every experiment's spec and lifecycle state, in creation order."""
        return _JSON([spec_json(e) for e in ctl.experiments()])

    @app.post(
        "/v1/experiments",
        status_code=201,
        response_model=ExperimentOut,
        responses=experiment_responses(400, 413, 503, unknown=False),
        tags=["experiments"],
    )
    async def create_experiment(body: ExperimentIn, request: Request) -> Response:
        """Create a draft experiment (the first variant is the control). Needs the bearer token."""
        if (denied := await operator_gate(request, "create", body.name)) is not None:
            return denied
        variants = _experiment_variants(body.variants)
        options: dict[str, Any] = {}
        if body.salt is not None:
            options["salt"] = body.salt
        if body.alpha is not None:
            options["alpha"] = body.alpha
        if body.guardrails is not None:
            options["guardrails"] = body.guardrails.model_dump(exclude_none=True)
        try:
            spec = ctl.create_experiment(body.name, variants, body.split, **options)
        except RoutewiseError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:  # a policy refusing its params
            raise ConfigError("variants", f"rejected by the controller ({exc})") from None
        return await acknowledge(request, spec, 201)

    @app.get(
        "/v1/experiments/{name}",
        response_model=ExperimentReportOut,
        responses={
            **experiment_responses(503),
            422: {
                "model": ErrorOut,
                "description": "The experiment was promoted or aborted: its statistics were "
                "released (ConfigError, field name). A draft answers with zero counts.",
            },
        },
        tags=["experiments"],
    )
    async def experiment_status(
        name: Annotated[str, PathParam(description="Experiment name.")],
    ) -> Response:
        """Per-variant numbers (n, mean reward with its confidence sequence, validity, p95
        latency, cost), each candidate's always-valid comparison with the control, the
        sample-ratio-mismatch check and guardrails."""
        spec = next((e for e in ctl.experiments() if e.name == name), None)
        if spec is not None and spec.status == "draft":  # not started: every count is zero
            report = experiment_report(spec, {k: VariantStats() for k in spec.variants})
        else:
            report = _experiment_call(ctl, name, lambda: ctl.experiment_status(name))
        return _JSON(_plain_json(report.to_dict()))

    lifecycle_docs = {
        "start": "Start routing traffic to the variants (one experiment runs at a time).",
        "stop": "Stop assigning traffic; the statistics stay for status, promote or abort.",
        "abort": "End the experiment without changing the default policy.",
    }

    def lifecycle_endpoint(action: str) -> Callable[..., Any]:
        method = getattr(ctl, f"{action}_experiment")

        async def lifecycle(
            name: Annotated[str, PathParam(description="Experiment name.")], request: Request
        ) -> Response:
            if (denied := await operator_gate(request, action, name)) is not None:
                return denied
            spec = _experiment_call(ctl, name, lambda: method(name))
            return await acknowledge(request, spec)

        lifecycle.__name__ = f"{action}_experiment"
        lifecycle.__doc__ = lifecycle_docs[action] + " Needs the bearer token."
        return lifecycle

    for action in ("start", "stop", "abort"):
        app.post(
            f"/v1/experiments/{{name}}/{action}",
            response_model=ExperimentOut,
            responses=experiment_responses(503),
            tags=["experiments"],
            name=f"{action}_experiment",
        )(lifecycle_endpoint(action))

    @app.post(
        "/v1/experiments/{name}/promote",
        response_model=ExperimentOut,
        responses=experiment_responses(400, 413, 503),
        tags=["experiments"],
    )
    async def promote_experiment(
        name: Annotated[str, PathParam(description="Experiment name.")],
        body: PromoteIn,
        request: Request,
    ) -> Response:
        """Make the variant the default policy (its policy with what it learned, its reward
        and arms); a running experiment is stopped first. Needs the bearer token."""
        if (denied := await operator_gate(request, "promote", name)) is not None:
            return denied
        _log_fields(request)["variant"] = body.variant
        spec = next((e for e in ctl.experiments() if e.name == name), None)
        if spec is not None and body.variant not in spec.variants:
            # checked here: the library would stop a running experiment before refusing
            raise ConfigError(
                "variant", f"{body.variant!r} is not a variant of {name!r} ({list(spec.variants)})"
            )
        spec = _experiment_call(ctl, name, lambda: ctl.promote_experiment(name, body.variant))
        return await acknowledge(request, spec)

    @app.get(
        "/v1/trace",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "One JSON object per line (the DESIGN.md trace format).",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            },
            **_errors(422, 503),
        },
        tags=["inspection"],
    )
    async def trace(
        since: Annotated[
            float | None,
            Query(
                description="Only decisions with ts >= since (unix seconds).", allow_inf_nan=False
            ),
        ] = None,
    ) -> StreamingResponse:
        """Stream the decision/feedback trace as JSON Lines, up to the time of the request."""
        lines = ctl.store.iter_trace(since)
        first = list(islice(lines, _TRACE_CHUNK))  # errors surface before the 200 is sent
        return StreamingResponse(
            _trace_body(first, lines, ctl.clock()), media_type="application/x-ndjson"
        )

    @app.get("/healthz", response_model=HealthOut, tags=["operations"])
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return _JSON({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=HealthOut,
        responses={503: {"model": HealthOut, "description": "Shutting down"}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Readiness: the app is started and not shutting down."""
        if not state["ready"]:
            return _JSON({"status": "shutting down"}, status_code=503)
        return _JSON({"status": "ready"})

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        tags=["operations"],
    )
    async def prometheus_metrics() -> Response:
        """Prometheus metrics: decisions, feedback, rewards, validity, latency."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _customize_openapi(app, [a.id for a in ctl.arms], secret is not None)
    app.add_middleware(
        _Edge,
        token=secret.encode() if secret is not None else None,
        max_body=max_body_bytes,
        metrics=metrics,
        logger=logger if logger is not None else _log,
    )
    return app


async def _trace_body(
    first: list[dict[str, Any]], rest: Iterator[dict[str, Any]], cutoff: float
) -> AsyncIterator[bytes]:
    chunk = first
    while chunk:
        lines = []
        done = False
        for line in chunk:
            if line.get("ts", 0.0) > cutoff:  # written after the request: stop here
                done = True
                break
            lines.append(json.dumps(line, separators=(",", ":"), default=json_default))
        if lines:
            yield ("\n".join(lines) + "\n").encode()
        if done:
            return
        await asyncio.sleep(0)  # let decisions and feedback through between chunks
        chunk = list(islice(rest, _TRACE_CHUNK))


def _customize_openapi(app: FastAPI, arm_ids: list[str], auth: bool) -> None:
    """Document this controller's arm ids, the policies and the reward presets as enums, and the bearer
    scheme when a token is set (validation stays in the controller, which names the field)."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base()
        components = schema.setdefault("components", {})
        arm_enum = {"type": "string", "enum": list(arm_ids)}
        decide = components.get("schemas", {}).get("DecideIn", {}).get("properties", {})
        for variant in decide.get("arms", {}).get("anyOf", []):
            if variant.get("type") == "array":
                variant["items"] = arm_enum
        for variant in decide.get("reward", {}).get("anyOf", []):
            if variant.get("type") == "string":
                variant["enum"] = sorted(PRESETS)
        experiment = components.get("schemas", {}).get("ExperimentIn", {}).get("properties", {})
        for prop in (experiment.get("variants", {}), *experiment.get("split", {}).get("anyOf", [])):
            # constrained keys: pydantic emits patternProperties (other keys allowed); say
            # that every key must match, as the validator does
            patterns = prop.pop("patternProperties", None)
            if patterns:
                prop["additionalProperties"] = next(iter(patterns.values()))
                prop.setdefault("propertyNames", {})["pattern"] = _NAME_PATTERN
        variant = components.get("schemas", {}).get("VariantIn", {}).get("properties", {})
        for option in variant.get("policy", {}).get("anyOf", []):
            if option.get("type") == "string":
                option["enum"] = sorted(POLICY_REGISTRY)
        for option in variant.get("reward", {}).get("anyOf", []):
            if option.get("type") == "string":
                option["enum"] = sorted(PRESETS)
        for option in variant.get("arms", {}).get("anyOf", []):
            if option.get("type") == "array":
                option["items"] = arm_enum
        for param in (
            schema.get("paths", {}).get("/v1/policy", {}).get("get", {}).get("parameters", [])
        ):
            if param.get("name") == "arms":
                for variant in param.get("schema", {}).get("anyOf", []):
                    if variant.get("type") == "array":
                        variant["items"] = arm_enum
        for action in _OPERATOR_ACTIONS:
            op = schema.get("paths", {}).get(f"/v1/arms/{{arm_id}}/{action}", {}).get("post", {})
            for param in op.get("parameters", []):
                if param.get("name") == "arm_id":
                    param["schema"] = {**param.get("schema", {}), **arm_enum}
        if auth:
            components["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
            for path, ops in schema.get("paths", {}).items():
                if path in _OPEN_PATHS:
                    continue
                for op in ops.values():
                    op["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _version() -> str:
    from routewise import __version__

    return __version__


# =============================================================================== serve
class _BatchedWriter:
    """A text stream for JSON log lines that writes them out every ``interval`` seconds from a
    daemon thread (and on :meth:`close`) instead of one ``write`` syscall per line, which costs
    ~10% of the sidecar's throughput. A ``kill -9`` loses at most the last ``interval`` of log
    lines (never state: that is in the store)."""

    def __init__(self, stream: Any, interval: float = 0.05) -> None:
        self._stream = stream
        self._interval = interval
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routewise-log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf.append(text)
        return len(text)

    def flush(self) -> None:
        """structlog flushes after every line: deferred to the writer thread."""

    def isatty(self) -> bool:
        return False

    def drain(self) -> None:
        with self._lock:
            buf, self._buf = self._buf, []
        if buf:
            self._stream.write("".join(buf))
            self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.drain()


def configure_logging(
    json_lines: bool | None = None, *, stream: Any = None, batched: bool = False
) -> _BatchedWriter | None:
    """Configure structlog: JSON lines (``json_lines=True``, or when ``stream`` is not a TTY)
    or console rendering, written to ``stream`` (default stdout) at INFO and above.

    With ``batched=True`` JSON lines are written by a background thread every 50 ms; the
    returned writer must then be closed at exit (``routewise serve`` does)."""
    out = stream if stream is not None else sys.stdout
    if json_lines is None:
        json_lines = not (hasattr(out, "isatty") and out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    writer = _BatchedWriter(out) if batched and json_lines else None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(
            file=cast(TextIO, writer) if writer is not None else out
        ),
        cache_logger_on_first_use=True,
    )
    return writer


def _open_controller(settings: RoutewiseSettings) -> tuple[Controller, list[Arm] | None]:
    """Build the controller; a new store with no arms configured gets the demo arm set."""
    try:
        return settings.build_controller(), None
    except ConfigError as exc:
        if exc.field != "arms" or settings.arm_list() is not None:
            raise
    demo = make_arms(DEMO_BACKENDS)
    ctl = settings.model_copy(update={"arms": [a.id for a in demo]}).build_controller()
    return ctl, demo


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError("host", f"cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)  # connections queue from now on, before uvicorn starts accepting
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def serve(
    config: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    db: str | Path | None = None,
    log_json: bool | None = None,
) -> None:
    """Run the sidecar until SIGTERM/SIGINT (``routewise serve``).

    Settings precedence: arguments > config file > ``ROUTEWISE_*`` environment > defaults.
    Unless ``durability`` is configured, the store runs in ``"batch"`` mode: the app's group
    commit makes every acknowledgement durable anyway, and batching lets concurrent requests
    share a transaction. With no ``db`` anywhere the state lives in ``routewise.db`` in the
    working directory; a new store with no arms configured starts with the demo arm set
    (:data:`DEMO_BACKENDS` × every output mode). On SIGTERM/SIGINT the server stops accepting, finishes in-flight requests,
    then the controller snapshots its learned state and closes the store.
    """
    from routewise.config import load_settings

    settings = load_settings(
        config, host=host, port=port, db=str(db) if db is not None else None, log_json=log_json
    )
    if settings.db is None:
        settings = settings.model_copy(update={"db": DEFAULT_DB})
    if "durability" not in settings.model_fields_set:
        # Acknowledgements are durable in every mode (the app's group commit); "batch" lets
        # the group commit share one transaction between concurrent requests.
        settings = settings.model_copy(update={"durability": "batch"})
    writer = configure_logging(settings.log_json, batched=True)
    try:
        _serve(settings)
    finally:
        if writer is not None:
            writer.close()


def _serve(settings: RoutewiseSettings) -> None:
    import uvicorn

    log = structlog.get_logger("routewise.server")
    ctl, demo = _open_controller(settings)
    try:
        app = create_app(ctl, token=settings.token)
        sock = _bind(settings.host, settings.port)
        bound_host, bound_port = sock.getsockname()[:2]
        if demo is not None:
            log.warning(
                "serve.demo_arms",
                message=f"new store {settings.db!r} and no arms configured: using the demo arm set "
                f"({', '.join(DEMO_BACKENDS)} x every output mode); configure 'backends' or 'arms' "
                "in routewise.toml for real routing",
                arms=[a.id for a in demo],
            )
        log.info(
            "serve.listening",
            url=f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}",
            host=bound_host,
            port=bound_port,
            db=settings.db,
            policy=ctl.policy.name,
            arms=len(ctl.arms),
            durability=getattr(ctl.store, "durability", None),
            auth="bearer" if settings.token is not None else "none",
        )
        uv_config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
            lifespan="on",
        )
        uv_config.load()  # imports the HTTP protocol and event loop now, not after gc.freeze()
        _preload()
        uv = uvicorn.Server(uv_config)
        # uvicorn re-raises the signal that stopped it; make that a no-op so we get to close().
        previous = {
            sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        # Everything built so far (modules, app, learned state) lives for the whole run: move it
        # out of the collector's view, so full collections stay short (no 50-100 ms pauses).
        gc.collect()
        gc.freeze()
        try:
            uv.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()
    finally:
        ctl.close()
        log.info("serve.stopped", db=settings.db, snapshot=True)


def _preload() -> None:
    """Import what the hot path would import lazily (a first import in a request stalls
    every request in flight, and lands after ``gc.freeze()``)."""
    for name in ("scipy.linalg",):  # ridge-based policies refresh their inverse with it
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _ignore_signal(signum: int, frame: object) -> None:
    return None
