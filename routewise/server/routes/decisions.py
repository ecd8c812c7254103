"""Routing: ``POST /v1/decide`` and ``POST /v1/feedback`` (the hot path).

Each handler parses its request model, calls one controller method, waits for the group
commit and answers with the wire type's own JSON (no re-validation of the answer). They read
the app's :class:`~routewise.server.deps.Sidecar` directly instead of through ``Depends``:
resolving a dependency costs FastAPI about 5 µs a request, 3% of a decision.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from routewise.server.deps import sidecar
from routewise.server.errors import error_responses
from routewise.server.logline import log_fields
from routewise.server.models import DecideIn, FeedbackIn, check_reward_numbers
from routewise.types import Decision, FeedbackResult

__all__ = ["router"]

router = APIRouter(tags=["routing"])


@router.post(
    "/v1/decide", response_model=Decision, responses=error_responses(400, 408, 413, 422, 503)
)
async def decide(body: DecideIn, request: Request) -> Response:
    """Choose an arm for a request context; log the decision with its exact propensity."""
    sc = sidecar(request)
    if body.reward is not None:
        check_reward_numbers(body.reward, "reward")
    mark = sc.commit.mark()  # before writing: see ThreadedGroupCommit
    d = sc.controller.decide(
        body.context,
        arms=body.arms,
        reward=body.reward,
        request_id=body.request_id,
        unit_id=body.unit_id,
    )
    await sc.commit.durable(mark)
    sc.metrics.observe_decision(d)
    fields = log_fields(request)
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
    return Response(d.to_json(), media_type="application/json")


@router.post(
    "/v1/feedback",
    response_model=FeedbackResult,
    responses=error_responses(400, 404, 408, 409, 413, 422, 503),
)
async def feedback(body: FeedbackIn, request: Request) -> Response:
    """Report the outcome of a decision; learn from it. Idempotent per decision id."""
    sc = sidecar(request)
    outcome = body.outcome.to_outcome()
    fields = log_fields(request)
    fields["decision_id"] = body.decision_id
    mark = sc.commit.mark()
    ctl = sc.controller
    if ctl.feedback_reads_store(body.decision_id):
        # a replica that has not applied the decision yet reads it from the shared store: a
        # network round trip (up to the connect timeout while the database is down), which
        # must not stall every other request on the event loop
        r = await run_in_threadpool(ctl.feedback, body.decision_id, outcome)
    else:
        r = ctl.feedback(body.decision_id, outcome)
    await sc.commit.durable(mark)
    r = sc.controller.settle(r)  # a shared store may have dropped it as a duplicate
    sc.metrics.observe_feedback(r, outcome)
    fields.update(
        arm=r.arm.id, reward=round(r.reward, 6), duplicate=r.duplicate, valid=outcome.valid
    )
    return Response(r.to_json(), media_type="application/json")
