"""Shared dependencies of the routers (FastAPI ``Depends``): the controller, the metrics, the
group commit, and the two gates — the bearer token and the operator gate.

:class:`Sidecar` is what :func:`~routewise.server.create_app` builds once per app (kept in
``app.state``); each dependency hands a handler one piece of it.

The bearer token has one check, :func:`check_bearer`, run twice: by the edge middleware
(:mod:`~routewise.server.middleware`) before routing, so that an unauthenticated request is
answered 401 before anything else — before a 404 for an unknown path, a 400 for malformed
JSON or a 413 (FastAPI reads and parses a JSON body *before* it solves dependencies, so a
dependency alone cannot give that order) — and by :data:`BEARER`, the dependency of every
protected router, which also makes the OpenAPI document name the scheme (only when the
server has a token). :class:`OperatorGate` is the 403 of operator actions on a server
without a token.

Examples
--------
>>> check_bearer(b"Bearer s3cret", b"s3cret")
>>> check_bearer(b"Basic s3cret", b"s3cret")
Traceback (most recent call last):
...
routewise.server.errors.Refusal: Authorization: missing or wrong bearer token: send the token this sidecar was started with (its ROUTEWISE_TOKEN or routewise.toml `token`; the CLI's --url commands send $ROUTEWISE_TOKEN)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import Request

from routewise.controller import Controller
from routewise.server.durability import Barrier
from routewise.server.errors import Refusal, error_body
from routewise.server.logline import annotate
from routewise.server.metrics import Metrics

__all__ = [
    "BEARER",
    "BearerToken",
    "CommitDep",
    "ControllerDep",
    "MetricsDep",
    "OperatorGate",
    "Sidecar",
    "check_bearer",
    "sidecar",
]

NO_TOKEN_REASON = (
    "operator actions need a bearer token and this sidecar has none: set ROUTEWISE_TOKEN=<secret> "
    '(or token = "<secret>" in routewise.toml) and restart `routewise serve`, then send '
    "'Authorization: Bearer <secret>' (`routewise pin|quarantine|release ARM --url URL` sends "
    "$ROUTEWISE_TOKEN)"
)
"""The 403 reason of an operator action on a sidecar without a token: what to do next."""
_TOKEN_HINT = (
    "the token this sidecar was started with (its ROUTEWISE_TOKEN or routewise.toml `token`; "
    "the CLI's --url commands send $ROUTEWISE_TOKEN)"
)


@dataclass(slots=True)
class Sidecar:
    """Everything the routes share, built once per app."""

    controller: Controller
    metrics: Metrics
    commit: Barrier
    token: bytes | None
    ready: bool = True
    max_lag_s: float = 5.0


def sidecar(request: Request) -> Sidecar:
    """The app's :class:`Sidecar`."""
    state: Sidecar = request.app.state.sidecar
    return state


async def _controller(request: Request) -> Controller:
    return sidecar(request).controller


async def _metrics(request: Request) -> Metrics:
    return sidecar(request).metrics


async def _commit(request: Request) -> Barrier:
    return sidecar(request).commit


ControllerDep = Annotated[Controller, Depends(_controller)]
"""The controller every endpoint calls."""
MetricsDep = Annotated[Metrics, Depends(_metrics)]
"""The app's Prometheus metrics."""
CommitDep = Annotated[Barrier, Depends(_commit)]
"""The group commit a write handler awaits before acknowledging."""


# ------------------------------------------------------------------------------- the gates
def check_bearer(authorization: bytes | None, token: bytes) -> None:
    """Raise a 401 :class:`~routewise.server.errors.Refusal` unless ``authorization`` is
    ``Bearer <token>`` (scheme case-insensitive, compared in constant time)."""
    if (
        authorization is not None
        and authorization[:7].lower() == b"bearer "
        and hmac.compare_digest(authorization[7:].strip(), token)
    ):
        return
    reason = (
        f"missing or wrong bearer token: send {_TOKEN_HINT}"
        if authorization
        else f"this server requires 'Authorization: Bearer <token>' with {_TOKEN_HINT}"
    )
    body = error_body("Unauthorized", "Authorization", reason)
    raise Refusal(401, body, {"WWW-Authenticate": "Bearer"})


class BearerToken(SecurityBase):
    """The bearer-token dependency of every protected router (declared only when the server
    has a token, so that the OpenAPI document names the scheme exactly then)."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "bearerAuth"

    async def __call__(self, request: Request) -> None:
        token = sidecar(request).token
        if token is not None:
            header = request.headers.get("authorization")
            check_bearer(header.encode("latin-1") if header is not None else None, token)


BEARER = BearerToken()
"""The bearer-token gate (see :func:`check_bearer`)."""


class OperatorGate:
    """Dependency of an operator action (pin, quarantine, release; creating, starting,
    stopping, promoting or aborting an experiment): names the action in the log line and
    refuses it with 403 on a server without a token."""

    def __init__(self, action: str) -> None:
        self.action = action

    async def __call__(self, request: Request) -> None:
        params = request.path_params
        annotate(request, action=self.action)
        if "arm_id" in params:
            annotate(request, arm=params["arm_id"])
        if "name" in params:
            annotate(request, experiment=params["name"])
        if sidecar(request).token is None:
            body = error_body("Forbidden", "Authorization", NO_TOKEN_REASON)
            raise Refusal(403, body)
