"""Inspection: ``GET /v1/policy`` (arms ranked by expected reward) and ``GET /v1/arms`` (the
per-arm statistics). Queries only: nothing here writes."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from routewise.errors import InvalidContext
from routewise.server.deps import ControllerDep
from routewise.server.errors import error_responses
from routewise.types import PolicyRanking, Status

__all__ = ["context_param", "router"]

router = APIRouter(tags=["inspection"])


async def context_param(
    context: Annotated[
        str | None,
        Query(
            description='Request context as a JSON object, e.g. {"task": "extraction"}. '
            "Omitted or empty: the recent traffic mix."
        ),
    ] = None,
) -> dict[str, Any] | None:
    """The ``context`` query parameter: a JSON object (a bad one is ``InvalidContext``); an
    empty one (``?context=``) is no context, as when it is omitted."""
    if context is None or not context.strip():
        return None
    try:
        ctx = json.loads(context)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidContext(
            "<context>", f"the 'context' query parameter is not valid JSON ({exc})"
        ) from None
    if not isinstance(ctx, dict):
        raise InvalidContext("<context>", f"must be a JSON object, got {type(ctx).__name__}")
    return ctx


@router.get("/v1/policy", response_model=PolicyRanking, responses=error_responses(422))
async def policy(
    ctl: ControllerDep,
    context: Annotated[dict[str, Any] | None, Depends(context_param)],
    arms: Annotated[
        list[str] | None, Query(description="Restrict the ranking to these arm ids.")
    ] = None,
) -> Response:
    """Arms ranked by expected reward (with uncertainty), best first."""
    ranking = PolicyRanking(ctl.policy.name, ctl.best_policy(context, arms=arms or None))
    return Response(ranking.to_json(), media_type="application/json")


@router.get("/v1/arms", response_model=Status, responses=error_responses())
async def arms_status(ctl: ControllerDep) -> Response:
    """Per-arm counts, mean reward, validity, latency percentiles and cost."""
    return Response(ctl.status().to_json(), media_type="application/json")
