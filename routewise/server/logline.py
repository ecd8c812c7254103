"""The fields of a request's canonical log line.

The edge middleware writes one structlog line per request when it ends; handlers, dependencies
and exception handlers add what they know (decision id, arm, error, field…) to the request's
fields, which live in the ASGI scope.

Examples
--------
>>> from starlette.requests import Request
>>> request = Request({"type": "http", "method": "GET", "path": "/v1/arms", "headers": []})
>>> annotate(request, arm="openai:gpt-5.4/direct_emit")
>>> log_fields(request)
{'arm': 'openai:gpt-5.4/direct_emit'}
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

__all__ = ["LOG_KEY", "annotate", "log_fields"]

LOG_KEY = "routewise.log"
"""The scope key of the request's log fields."""


def log_fields(request: Request) -> dict[str, Any]:
    """The request's log fields (created if the middleware did not)."""
    fields: dict[str, Any] | None = request.scope.get(LOG_KEY)
    if fields is None:
        fields = request.scope[LOG_KEY] = {}
    return fields


def annotate(request: Request, **fields: Any) -> None:
    """Add ``fields`` to the request's log line."""
    log_fields(request).update(fields)
