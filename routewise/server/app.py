"""The app factory: :func:`create_app` builds the sidecar over one controller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version as _package_version
from typing import Any

import structlog
from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.routing import BaseRoute

from routewise.controller import Controller
from routewise.errors import ConfigError
from routewise.server.deps import BEARER, Sidecar
from routewise.server.durability import group_commit
from routewise.server.errors import install_error_handlers
from routewise.server.metrics import Metrics
from routewise.server.middleware import DEFAULT_BODY_TIMEOUT_S, Edge
from routewise.server.openapi import customize_openapi
from routewise.server.routes import decisions, experiments, guardian, inspection, operations, trace

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""Largest accepted request body (1 MiB)."""


def _secret(token: str | SecretStr | None) -> bytes | None:
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    if secret is not None and not secret.strip():
        raise ConfigError("token", "must not be empty (unset it to disable authentication)")
    return secret.encode() if secret is not None else None


def _seconds(value: float, field: str = "max_lag_s") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(field, f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_body_limit(max_body_bytes: int) -> None:
    n = max_body_bytes
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("max_body_bytes", f"must be a positive integer, got {n!r}")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: Sidecar = app.state.sidecar
    state.ready = True
    try:
        yield
    finally:
        state.ready = False


def _include_routers(app: FastAPI, *, gated: bool) -> list[BaseRoute]:
    """Include every router (all but the probes behind the bearer gate when the server has a
    token); returns their routes, which name the metrics of requests refused before routing.

    The hot path (decide, feedback) gets no gate dependency: the edge middleware has already
    checked the token, and a dependency costs every request ~15 µs of CPU; the OpenAPI
    document still names the scheme for it (:mod:`~routewise.server.openapi`)."""
    gate = [Depends(BEARER)] if gated else []
    routers = [
        (decisions.router, []),  # first: the hot path is matched first
        (operations.probes, []),
        *((module.router, gate) for module in (inspection, guardian, experiments, trace)),
        (operations.router, gate),
        (operations.docs, gate),
    ]
    for router, dependencies in routers:
        app.include_router(router, dependencies=dependencies)
    return [route for router, _ in routers for route in router.routes]


def create_app(
    controller: Controller,
    *,
    token: str | SecretStr | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    registry: CollectorRegistry | None = None,
    logger: Any = None,
    max_lag_s: float = 5.0,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
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
    max_lag_s
        A replica on a shared store answers ``/readyz`` 503 while it is more than this many
        seconds behind the shared log (or cannot reach the store).
    body_timeout_s
        A request body must arrive within this many seconds of the request's start, else
        408 ``RequestTimeout`` (the connection is closed).

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
    secret = _secret(token)
    _check_body_limit(max_body_bytes)
    metrics = Metrics(
        controller, registry if registry is not None else CollectorRegistry(auto_describe=True)
    )
    app = FastAPI(
        title="routewise sidecar",
        version=_package_version("routewise"),
        summary="Learn online which (backend, output mode) arm serves each structured-output LLM request.",
        lifespan=_lifespan,
        openapi_url=None,  # served by the operations router, behind the token gate
        docs_url=None,
        redoc_url=None,
    )
    commit = group_commit(controller.store)
    app.state.sidecar = Sidecar(controller, metrics, commit, secret, max_lag_s=_seconds(max_lag_s))
    routes = _include_routers(app, gated=secret is not None)
    install_error_handlers(app)
    customize_openapi(app, [a.id for a in controller.arms])
    app.add_middleware(
        Edge,
        token=secret,
        max_body=max_body_bytes,
        metrics=metrics,
        logger=logger if logger is not None else structlog.get_logger("routewise.server"),
        routes=routes,
        body_timeout_s=_seconds(body_timeout_s, "body_timeout_s"),
    )
    return app
