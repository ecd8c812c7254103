"""``GET /v1/trace``: the decision/feedback trace as JSON Lines, streamed.

The first chunk is read before the 200 is sent (a store error is still an error answer);
the stream stops at the time of the request, and yields to the event loop between chunks so
decisions and feedback keep flowing while a long trace is read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from routewise.server.deps import ControllerDep
from routewise.server.errors import error_responses
from routewise.state.base import json_default

__all__ = ["router"]

router = APIRouter(tags=["inspection"])

_CHUNK = 256
_encode = json.JSONEncoder(separators=(",", ":"), default=json_default).encode


async def _lines(
    first: list[dict[str, Any]], rest: Iterator[dict[str, Any]], cutoff: float
) -> AsyncIterator[bytes]:
    chunk = first
    while chunk:
        lines = []
        done = False
        for line in chunk:
            if line.get("ts", 0.0) > cutoff:  # written after the request: stop here
                done = True
                break
            lines.append(_encode(line))
        if lines:
            yield ("\n".join(lines) + "\n").encode()
        if done:
            return
        await asyncio.sleep(0)  # let decisions and feedback through between chunks
        chunk = list(islice(rest, _CHUNK))


@router.get(
    "/v1/trace",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One JSON object per line (the trace format: docs/api.md#the-trace-format).",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        **error_responses(422, 503),
    },
)
async def trace(
    ctl: ControllerDep,
    since: Annotated[
        float | None,
        Query(description="Only decisions with ts >= since (unix seconds).", allow_inf_nan=False),
    ] = None,
) -> StreamingResponse:
    """Stream the decision/feedback trace as JSON Lines, up to the time of the request."""
    lines = ctl.store.iter_trace(since)
    first = list(islice(lines, _CHUNK))  # errors surface before the 200 is sent
    return StreamingResponse(_lines(first, lines, ctl.clock()), media_type="application/x-ndjson")
