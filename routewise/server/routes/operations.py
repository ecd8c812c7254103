"""Operations: the probes ``GET /healthz`` and ``GET /readyz`` (never need the token), and
``GET /metrics`` (Prometheus text format), ``GET /openapi.json`` and the ``/docs`` / ``/redoc``
pages with their static files under ``/docs/static/`` (which do, when the server has one:
they are served here, behind the same gate as every other route, instead of by FastAPI's
unprotected defaults; the pages' JavaScript and CSS come from the installed package, not a
CDN — see :mod:`routewise.server.apidocs`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import HTMLResponse, JSONResponse, Response

from routewise.server import apidocs
from routewise.server.deps import MetricsDep, sidecar
from routewise.server.errors import error_responses
from routewise.types import ServiceHealth

__all__ = ["docs", "probes", "router"]

probes = APIRouter(tags=["operations"])
"""Liveness and readiness (open)."""
router = APIRouter(tags=["operations"])
"""Metrics (behind the token gate)."""
docs = APIRouter(include_in_schema=False)
"""The OpenAPI document and its pages (behind the token gate)."""

_OK = ServiceHealth("ok").to_json()
_READY = ServiceHealth("ready").to_json()
_SHUTTING_DOWN = ServiceHealth("shutting down").to_json()


@probes.get("/healthz", response_model=ServiceHealth)
async def healthz() -> Response:
    """Liveness: the process answers."""
    return Response(_OK, media_type="application/json")


@probes.get(
    "/readyz",
    response_model=ServiceHealth,
    responses={
        503: {
            "model": ServiceHealth,
            "description": "Shutting down, or (a replica) the shared store is unreachable "
            "or this replica lags its log by more than max_lag_s",
        }
    },
)
async def readyz(request: Request) -> Response:
    """Readiness: the app is started and not shutting down; a replica on a shared store also
    reaches it and is at most ``max_lag_s`` behind its log."""
    sc = sidecar(request)
    if not sc.ready:
        return Response(_SHUTTING_DOWN, status_code=503, media_type="application/json")
    rep = sc.controller.replication()
    if rep is not None:
        if not rep["connected"]:
            return _not_ready("not ready: the shared store is unreachable")
        if rep["lag_s"] > sc.max_lag_s:
            return _not_ready(
                f"not ready: {rep['lag_s']:.1f} s behind the shared log (max_lag_s {sc.max_lag_s:g})"
            )
    return Response(_READY, media_type="application/json")


def _not_ready(status: str) -> Response:
    return Response(ServiceHealth(status).to_json(), status_code=503, media_type="application/json")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(),
    },
)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: decisions, feedback, rewards, validity, latency."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@docs.get(apidocs.OPENAPI_PATH)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document."""
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI (its files from ``/docs/static/``)."""
    return apidocs.swagger_ui_html(request.app.title, root_path=request.scope.get("root_path", ""))


@docs.get(apidocs.OAUTH2_REDIRECT_PATH)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@docs.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc (its files from ``/docs/static/``)."""
    return apidocs.redoc_html(request.app.title, root_path=request.scope.get("root_path", ""))


@docs.get(apidocs.ASSET_PREFIX + "/{name}")
async def docs_asset(name: str, request: Request) -> Response:
    """A static file of the documentation pages (JavaScript, CSS, favicon)."""
    return await apidocs.asset_response(name, request.scope)
