"""The edge of the sidecar: one ASGI middleware around every HTTP request.

In order: the bearer-token gate (before routing and before the body is read, so an
unauthenticated request learns nothing — not whether the route exists, nor whether its body
parses), the body-size limit (``Content-Length`` first, else counted while read), then the
app; when the request ends, its HTTP metrics and its one canonical log line (``event="request"``:
method, path, status, ``duration_ms`` and what the handlers added, see
:mod:`routewise.server.logline`). Tokens, headers and request contexts are never logged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routewise.server.deps import check_bearer
from routewise.server.errors import Refusal, error_body
from routewise.server.logline import LOG_KEY
from routewise.server.metrics import Metrics

__all__ = ["OPEN_PATHS", "Edge"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Paths that never need the token (liveness and readiness probes)."""

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class Edge:
    """Token gate, body-size limit, HTTP metrics and the canonical log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: bytes | None,
        max_body: int,
        metrics: Metrics,
        logger: Any,
        routes: list[BaseRoute],
    ) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.metrics = metrics
        self.log = logger
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        fields: dict[str, Any] = {}
        scope[LOG_KEY] = fields
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            auth, length = _auth_and_length(scope)
            refused = self._refusal(scope["path"], auth, length)
            if refused is not None:
                fields["error"] = refused.body.error
                await _respond(send_wrapper, refused)
                return
            limited = receive if length is not None else self._limited(receive)
            await self.app(scope, limited, send_wrapper)
        except asyncio.CancelledError:  # the client went away mid-request
            if status == 500:
                status = 499
            raise
        finally:
            self._record(scope, fields, status, time.perf_counter() - t0)

    def _refusal(self, path: str, auth: bytes | None, length: bytes | None) -> Refusal | None:
        """The answer to a request refused at the edge (token, ``Content-Length``), if any."""
        if self.token is not None and path not in OPEN_PATHS:
            try:
                check_bearer(auth, self.token)
            except Refusal as refusal:
                return refusal
        if length is None:
            return None
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:
            return Refusal(400, error_body("BadRequest", "Content-Length", "not a valid length"))
        if n > self.max_body:
            reason = f"request body larger than {self.max_body} bytes"
            return Refusal(413, error_body("PayloadTooLarge", "body", reason))
        return None

    def _limited(self, receive: Receive) -> Receive:
        """``receive``, counting the body (no ``Content-Length`` announced it)."""
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

    def _record(self, scope: Scope, fields: dict[str, Any], status: int, dt: float) -> None:
        method = scope["method"]
        self.metrics.observe_request(
            self._route(scope), method if method in _METHODS else "other", status, dt
        )
        if "error" in fields:
            self.metrics.errors(fields["error"]).inc()
        (self.log.error if status >= 500 else self.log.info)(
            "request",
            method=method,
            path=scope["path"],
            status=status,
            duration_ms=round(dt * 1000.0, 3),
            **fields,
        )

    def _route(self, scope: Scope) -> str:
        """The metrics label: the matched route's path template (``/v1/arms/{arm_id}/pin``),
        ``"other"`` for no route; a request refused before routing is matched here."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] != Match.NONE), None)
        label: str = getattr(route, "path_format", "other")
        return label


def _auth_and_length(scope: Scope) -> tuple[bytes | None, bytes | None]:
    auth: bytes | None = None
    length: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
        elif name == b"content-length":
            length = value
    return auth, length


async def _respond(send: Send, refusal: Refusal) -> None:
    data = refusal.body.model_dump_json().encode()
    headers = [(k.lower().encode(), v.encode()) for k, v in (refusal.headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
