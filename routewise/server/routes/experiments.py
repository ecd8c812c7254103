"""A/B experiments: ``/v1/experiments`` (list, create) and ``/v1/experiments/{name}`` (status
report, start, stop, abort, promote).

Creating and every lifecycle step are operator actions (the bearer token; 403 without one),
acknowledged once durable. The controller checks everything and names the field: an unknown
``name`` is ``UnknownExperiment`` (404); what conflicts with the experiments as they are — a
name already in use, a step the experiment's state forbids, promoting a variant it does not
have — ``ExperimentConflict`` (409); a bad spec a ``ConfigError`` (422).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from routewise.server.deps import CommitDep, ControllerDep, OperatorGate
from routewise.server.durability import Barrier
from routewise.server.errors import error_responses
from routewise.server.logline import annotate
from routewise.server.models import ExperimentIn, PromoteIn, check_reward_numbers
from routewise.types import ExperimentReport, ExperimentSpec

__all__ = ["router"]

router = APIRouter(tags=["experiments"])

Name = Annotated[str, PathParam(description="Experiment name.")]
_UNKNOWN = "Unknown experiment (UnknownExperiment, field name)"
_CONFLICT = (
    "A step the experiment's state forbids (ExperimentConflict naming the field, e.g. status: "
    "stopping a draft, starting a second experiment)"
)
_INVALID = (
    "ConfigError naming the field (a bad spec, e.g. variants.candidate.arms), PolicyError, "
    "UnknownArm"
)
_LIFECYCLE = error_responses(403, 404, 409, 422, 503, e404=_UNKNOWN, e409=_CONFLICT, e422=_INVALID)
_IN_USE = "The name is already in use (ExperimentConflict, field name)"
_NO_VARIANT = (
    "A step the experiment's state forbids, or a variant it does not have (ExperimentConflict "
    "naming the field: status, variant)"
)


async def _take_step(
    request: Request, commit: Barrier, step: Callable[[], ExperimentSpec], status: int = 200
) -> Response:
    spec = await commit.write(step)
    annotate(request, state=spec.status)
    return Response(spec.model_dump_json(), status_code=status, media_type="application/json")


@router.get("/v1/experiments", response_model=list[ExperimentSpec], responses=error_responses())
async def list_experiments(ctl: ControllerDep) -> Response:
    """Every experiment's spec and lifecycle state, in creation order."""
    specs = ",".join(spec.model_dump_json() for spec in ctl.experiments())
    return Response(f"[{specs}]", media_type="application/json")


@router.post(
    "/v1/experiments",
    status_code=201,
    response_model=ExperimentSpec,
    responses=error_responses(400, 403, 408, 409, 413, 422, 503, e409=_IN_USE, e422=_INVALID),
    dependencies=[Depends(OperatorGate("create"))],
)
async def create_experiment(
    body: ExperimentIn, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Create a draft experiment (the first variant is the control). Needs the bearer token."""
    annotate(request, experiment=body.name)
    for variant, spec_in in body.variants.items():
        check_reward_numbers(spec_in.reward, f"variants.{variant}.reward")
    arguments = body.arguments()
    return await _take_step(request, commit, lambda: ctl.create_experiment(**arguments), 201)


@router.get(
    "/v1/experiments/{name}",
    response_model=ExperimentReport,
    responses=error_responses(
        404,
        409,
        422,
        503,
        e404=_UNKNOWN,
        e409="The experiment was promoted or aborted: its statistics were released "
        "(ExperimentConflict). A draft answers with zero counts.",
    ),
)
async def experiment_status(name: Name, ctl: ControllerDep) -> Response:
    """Per-variant numbers (n, mean reward with its confidence sequence, validity, p95
    latency, cost), each candidate's always-valid comparison with the control, the
    sample-ratio-mismatch check and guardrails."""
    return Response(ctl.experiment_status(name).to_json(), media_type="application/json")


@router.post(
    "/v1/experiments/{name}/start",
    response_model=ExperimentSpec,
    responses=_LIFECYCLE,
    dependencies=[Depends(OperatorGate("start"))],
)
async def start_experiment(
    name: Name, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Start routing traffic to the variants (one experiment runs at a time). Needs the
    bearer token."""
    return await _take_step(request, commit, lambda: ctl.start_experiment(name))


@router.post(
    "/v1/experiments/{name}/stop",
    response_model=ExperimentSpec,
    responses=_LIFECYCLE,
    dependencies=[Depends(OperatorGate("stop"))],
)
async def stop_experiment(
    name: Name, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Stop assigning traffic; the statistics stay for status, promote or abort. Needs the
    bearer token."""
    return await _take_step(request, commit, lambda: ctl.stop_experiment(name))


@router.post(
    "/v1/experiments/{name}/abort",
    response_model=ExperimentSpec,
    responses=_LIFECYCLE,
    dependencies=[Depends(OperatorGate("abort"))],
)
async def abort_experiment(
    name: Name, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """End the experiment without changing the default policy. Needs the bearer token."""
    return await _take_step(request, commit, lambda: ctl.abort_experiment(name))


@router.post(
    "/v1/experiments/{name}/promote",
    response_model=ExperimentSpec,
    responses={**_LIFECYCLE, **error_responses(400, 408, 409, 413, e409=_NO_VARIANT)},
    dependencies=[Depends(OperatorGate("promote"))],
)
async def promote_experiment(
    name: Name, body: PromoteIn, request: Request, ctl: ControllerDep, commit: CommitDep
) -> Response:
    """Make the variant the default policy (its policy with what it learned, its reward
    and arms); a running experiment is stopped first. Needs the bearer token."""
    annotate(request, variant=body.variant)
    return await _take_step(request, commit, lambda: ctl.promote_experiment(name, body.variant))
