"""The Guardian: ``GET /v1/health``, ``GET /v1/events`` and the operator actions
``POST /v1/arms/{arm_id}/pin|quarantine|release``.

``arm_id`` is the plain arm id (``/v1/arms/openai:gpt-5.4/direct_emit/pin``) or URL-encoded
(``openai%3Agpt-5.4%2Fdirect_emit``); the action is the last segment. An operator action
needs the bearer token (403 on a server without one) and is acknowledged once durable.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from routewise.controller import Controller
from routewise.server.deps import CommitDep, ControllerDep, OperatorGate
from routewise.server.durability import Barrier
from routewise.server.errors import error_responses
from routewise.server.logline import annotate
from routewise.types import GuardianEvent, GuardianHealth, OperatorResult

__all__ = ["router"]

router = APIRouter(tags=["guardian"])

ArmId = Annotated[
    str,
    PathParam(
        description="Arm id, e.g. 'openai:gpt-5.4/direct_emit' (plain, or URL-encoded: %2F)."
    ),
]
_OPERATOR_RESPONSES = error_responses(
    403,
    404,
    413,
    422,
    503,
    e404="Unknown arm (UnknownArm, field arm_id)",
    e422="The Guardian is disabled (ConfigError, field guardian)",
)


def _json(body: str) -> Response:
    return Response(body, media_type="application/json")


@router.get("/v1/health", response_model=GuardianHealth, responses=error_responses())
async def guardian_health(ctl: ControllerDep) -> Response:
    """Each arm's Guardian state: healthy, quarantined, probing or pinned."""
    return _json(ctl.guardian_health().to_json())


@router.get("/v1/events", response_model=list[GuardianEvent], responses=error_responses(422, 503))
async def guardian_events(
    ctl: ControllerDep,
    limit: Annotated[
        int | None, Query(ge=0, le=1_000_000_000, description="Only the newest N events.")
    ] = None,
) -> Response:
    """Health transitions (Guardian trips, probes, recoveries and operator actions), oldest first."""
    return _json("[" + ",".join(e.to_json() for e in ctl.events(limit)) + "]")


async def _operate(
    request: Request,
    ctl: Controller,
    commit: Barrier,
    arm_id: str,
    action: Literal["pin", "quarantine", "release"],
) -> Response:
    await commit.write(lambda: getattr(ctl, action)(arm_id))
    health = ctl.guardian_health()
    state = health.arms.get(arm_id, "healthy")
    annotate(request, state=state)
    result = OperatorResult(arm=arm_id, action=action, state=state, pinned=health.pinned)
    return _json(result.to_json())


@router.post(
    "/v1/arms/{arm_id:path}/pin",
    response_model=OperatorResult,
    responses=_OPERATOR_RESPONSES,
    dependencies=[Depends(OperatorGate("pin"))],
)
async def pin_arm(
    arm_id: ArmId, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Send all traffic to the arm (propensity 1) until it is released. Needs the bearer token."""
    return await _operate(request, ctl, commit, arm_id, "pin")


@router.post(
    "/v1/arms/{arm_id:path}/quarantine",
    response_model=OperatorResult,
    responses=_OPERATOR_RESPONSES,
    dependencies=[Depends(OperatorGate("quarantine"))],
)
async def quarantine_arm(
    arm_id: ArmId, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Exclude the arm from selection until it is released. Needs the bearer token."""
    return await _operate(request, ctl, commit, arm_id, "quarantine")


@router.post(
    "/v1/arms/{arm_id:path}/release",
    response_model=OperatorResult,
    responses=_OPERATOR_RESPONSES,
    dependencies=[Depends(OperatorGate("release"))],
)
async def release_arm(
    arm_id: ArmId, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Return the arm to healthy (unpin or unquarantine) and forget its detectors' history.
    Needs the bearer token."""
    return await _operate(request, ctl, commit, arm_id, "release")
