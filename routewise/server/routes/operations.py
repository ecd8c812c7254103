"""Operations: the probes ``GET /healthz`` and ``GET /readyz`` (never need the token), and
``GET /metrics`` (Prometheus text format), ``GET /openapi.json`` and the ``/docs`` / ``/redoc``
pages (which do, when the server has one: they are served here, behind the same gate as
every other route, instead of by FastAPI's unprotected defaults)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import HTMLResponse, JSONResponse, Response

from routewise.server.deps import MetricsDep, sidecar
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
    responses={503: {"model": ServiceHealth, "description": "Shutting down"}},
)
async def readyz(request: Request) -> Response:
    """Readiness: the app is started and not shutting down."""
    if not sidecar(request).ready:
        return Response(_SHUTTING_DOWN, status_code=503, media_type="application/json")
    return Response(_READY, media_type="application/json")


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics: decisions, feedback, rewards, validity, latency."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@docs.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document."""
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )


@docs.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return get_swagger_ui_oauth2_redirect_html()


@docs.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc."""
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title} - ReDoc")
