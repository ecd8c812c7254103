"""Errors as HTTP answers: the library's exception tree mapped to status codes, once.

Every error answer is an :class:`~routewise.types.ErrorBody` naming the offending request
field. A :class:`~routewise.errors.RoutewiseError` keeps its class name: ``UnknownDecision``
and ``UnknownExperiment`` are 404 (and ``UnknownArm`` when the arm is named in the path: a
missing resource), ``FeedbackTooLate`` and ``ExperimentConflict`` 409, ``StateError`` 503,
every other library error 422. Request-shape errors (pydantic) are ``InvalidContext`` /
``InvalidOutcome`` / ``ConfigError`` / ``InvalidRequest`` (422) by where they are, malformed
JSON ``MalformedJSON`` (400: not JSON, invalid UTF-8, nested too deep). :class:`Refusal` is
the gate's answer (401, 403); :class:`BodyError` the edge's answer to a body it refuses while
it is read (400, 408, 413). :func:`routewise.client.error_from_response` is the inverse
mapping.

Examples
--------
>>> from routewise.errors import UnknownDecision
>>> status, body = library_error(UnknownDecision("d1"), in_path=())
>>> status, body.error, body.field
(404, 'UnknownDecision', 'decision_id')
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from routewise.errors import (
    ConfigError,
    ExperimentConflict,
    FeedbackTooLate,
    InvalidContext,
    InvalidOutcome,
    NoEligibleArms,
    PolicyError,
    RoutewiseError,
    StateError,
    UnknownArm,
    UnknownDecision,
    UnknownExperiment,
)
from routewise.server.logline import annotate
from routewise.types import ErrorBody

__all__ = [
    "BodyError",
    "Refusal",
    "error_body",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "library_error",
    "validation_error",
]

_log = structlog.get_logger("routewise.server")

_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or wrong bearer token (the one the server was started with: ROUTEWISE_TOKEN)",
    403: "The server has no token: operator actions are disabled (restart it with ROUTEWISE_TOKEN)",
    404: "Unknown decision",
    408: "The request body did not arrive in time (body_timeout_s)",
    409: "Feedback too late",
    413: "Request body too large",
    422: "Invalid request (the field and the reason are named)",
    503: "State store unavailable",
}
_HTTP_ERRORS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
}


def error_body(
    error: str, field: str | None, reason: str, message: str | None = None, **extra: Any
) -> ErrorBody:
    """An error answer; ``message`` defaults to ``"<field>: <reason>"``."""
    if message is None:
        message = f"{field}: {reason}" if field else reason
    return ErrorBody(error=error, field=field, reason=reason, message=message, **extra)


def error_response(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None
) -> Response:
    """The HTTP answer carrying ``body``."""
    return Response(
        body.model_dump_json(), status_code=status, headers=headers, media_type="application/json"
    )


def error_responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error codes (401 always: the token may be required);
    ``described`` overrides a description, keyed ``e404``, ``e422``…"""
    out: dict[int | str, dict[str, Any]] = {}
    for code in (401, *codes):
        text = described.get(f"e{code}", _DESCRIPTIONS[code])
        out[code] = {"model": ErrorBody, "description": text}
    return out


class Refusal(Exception):
    """A request refused before it reaches the library (no or a wrong token: 401; an
    operator action on a server without one: 403)."""

    def __init__(self, status: int, body: ErrorBody, headers: dict[str, str] | None = None):
        super().__init__(body.message)
        self.status = status
        self.body = body
        self.headers = headers


class BodyError(HTTPException):
    """A request body the edge refuses while it is read (too deep: 400 ``MalformedJSON``; too
    slow: 408 ``RequestTimeout``; too large: 413 ``PayloadTooLarge``). Raised from the
    ``receive`` the app reads through; an ``HTTPException``, so FastAPI passes it on from its
    body parsing to :func:`on_http_error` instead of answering its own 400."""

    def __init__(
        self, status: int, error: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, reason, headers)
        self.body = error_body(error, "body", reason)


# ------------------------------------------------------------------------- library errors
def library_error(exc: RoutewiseError, *, in_path: Collection[str]) -> tuple[int, ErrorBody]:
    """HTTP status and body for a library error (``in_path``: the request's path parameters;
    an unknown arm named there is a missing resource, 404, not a bad field)."""
    msg = str(exc)
    match exc:
        case InvalidContext():
            field = "context" if exc.key == "<context>" else f"context.{exc.key}"
            return 422, error_body("InvalidContext", field, exc.reason, msg, key=exc.key)
        case InvalidOutcome():
            field = "outcome" if exc.field == "outcome" else f"outcome.{exc.field}"
            return 422, error_body("InvalidOutcome", field, exc.reason, msg)
        case UnknownExperiment():
            extra: dict[str, Any] = {"experiment": exc.name, "known_experiments": exc.known}
            return 404, error_body("UnknownExperiment", "name", exc.reason, msg, **extra)
        case ExperimentConflict():
            body = error_body("ExperimentConflict", exc.field, exc.reason, msg, experiment=exc.name)
            return 409, body
        case ConfigError():
            return 422, error_body("ConfigError", exc.field, exc.reason, msg)
        case UnknownArm():
            field = "arm_id" if "arm_id" in in_path else "arms"
            reason = f"unknown arm {exc.arm_id!r}"
            body = error_body(
                "UnknownArm", field, reason, msg, arm_id=exc.arm_id, known_arms=exc.known
            )
            return (404 if field == "arm_id" else 422), body
        case UnknownDecision():
            reason = "unknown decision"
            body = error_body(
                "UnknownDecision", "decision_id", reason, msg, decision_id=exc.decision_id
            )
            return 404, body
        case FeedbackTooLate():
            reason = (
                f"feedback arrived {exc.age_s:.1f}s after the decision, past the reward wait "
                f"time of {exc.wait_s:.1f}s"
            )
            extra = {"decision_id": exc.decision_id, "age_s": exc.age_s, "wait_s": exc.wait_s}
            return 409, error_body("FeedbackTooLate", "decision_id", reason, msg, **extra)
        case NoEligibleArms():
            return 422, error_body("NoEligibleArms", "arms", msg, msg)
        case PolicyError():
            return 422, error_body("PolicyError", None, msg, msg)
        case StateError():
            return 503, error_body("StateError", None, msg, msg)
    return 422, error_body(type(exc).__name__, None, msg, msg)


# ---------------------------------------------------------------------- validation errors
def _loc_field(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_UNION_TAGS = ("str", "dict[str,any]", "list[str]")


def _drop_union_tags(loc: Iterable[int | str]) -> tuple[int | str, ...]:
    """``loc`` without pydantic's union-member tags (``policy.str`` → ``policy``) and with a
    bad mapping key named by its mapping (``variants.<key>.[key]`` → ``variants``)."""
    out: list[int | str] = []
    for part in loc:
        if out and out[-1] in ("policy", "reward", "arms") and part in _UNION_TAGS:
            continue
        if part == "[key]" and out:  # a bad mapping key: name the mapping
            out.pop()
            continue
        out.append(part)
    return tuple(out)


def _malformed(first: Any, path: tuple[int | str, ...]) -> ErrorBody:
    detail = first.get("ctx", {}).get("error", "JSON decode error")
    pos = path[0] if path and isinstance(path[0], int) else None
    at = f" at char {pos}" if pos is not None else ""
    return error_body("MalformedJSON", "body", f"not valid JSON ({detail}{at})")


def validation_error(exc: RequestValidationError, *, config: bool = False) -> tuple[int, ErrorBody]:
    """Map a FastAPI/pydantic request error to an answer naming the first bad field.

    With ``config`` (the experiment endpoints) a bad body field is a ``ConfigError``, as the
    library raises for a bad experiment spec."""
    errors = list(exc.errors())
    if not errors:
        return 422, error_body("InvalidRequest", None, "invalid request")
    first = errors[0]
    loc = _drop_union_tags(first.get("loc", ()))
    where, path = (
        (loc[0], loc[1:]) if loc and loc[0] in ("body", "query", "path") else ("body", loc)
    )
    kind = str(first.get("type", ""))
    reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    named = [_loc_field(_drop_union_tags(e.get("loc", ()))[1:]) or "body" for e in errors[:20]]
    if kind == "json_invalid":
        return 400, _malformed(first, path)
    if where == "body" and not path:
        if kind == "missing":
            reason = "a JSON object is required"
        elif isinstance(first.get("input"), bytes | str):
            reason = "expected a JSON object (send Content-Type: application/json)"
        return 422, error_body("InvalidRequest", "body", reason, errors=named)
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error(s))"
    head = path[0] if path else None
    if head == "outcome":
        error = "InvalidOutcome"
    elif head == "context" and where == "body":
        error = "InvalidContext"
    elif head == "arms" or (config and where == "body"):
        error = "ConfigError"
    else:
        error = "InvalidRequest"
    return 422, error_body(error, _loc_field(path), reason, errors=named)


# ------------------------------------------------------------------------------- handlers
def _answer(request: Request, status: int, body: ErrorBody, **kw: Any) -> Response:
    annotate(request, error=body.error, field=body.field)
    return error_response(status, body, **kw)


async def on_library_error(request: Request, exc: Exception) -> Response:
    """A :class:`~routewise.errors.RoutewiseError` raised by the library."""
    assert isinstance(exc, RoutewiseError)
    status, body = library_error(exc, in_path=request.path_params)
    return _answer(request, status, body)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    """A request that does not fit its endpoint's input model."""
    assert isinstance(exc, RequestValidationError)
    config = request.url.path.startswith("/v1/experiments")
    status, body = validation_error(exc, config=config)
    return _answer(request, status, body)


async def on_refusal(request: Request, exc: Exception) -> Response:
    """The token gate's 401 / 403."""
    assert isinstance(exc, Refusal)
    return _answer(request, exc.status, exc.body, headers=exc.headers)


def _unparsable(cause: BaseException | None) -> tuple[int, ErrorBody]:
    """FastAPI's own 400 for a body it could not parse, by what went wrong (its message,
    "There was an error parsing the body", names nothing)."""
    if isinstance(cause, UnicodeDecodeError):
        encoding = cause.encoding.upper().replace("_", "-")
        reason = f"invalid {encoding} at byte {cause.start}"
    elif isinstance(cause, RecursionError):
        reason = "nested too deep"
    elif cause is not None:
        reason = f"not valid JSON ({type(cause).__name__}: {cause})"
    else:
        reason = "not valid JSON"
    return 400, error_body("MalformedJSON", "body", reason)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors: no route (404), wrong method (405), body too large (413)…;
    the edge's :class:`BodyError`; FastAPI's 400 for a body it could not parse."""
    assert isinstance(exc, HTTPException)
    if isinstance(exc.__cause__, ClientDisconnect):  # the client is gone: nobody reads this
        annotate(request, error="ClientDisconnected")
        return Response(status_code=499)
    if isinstance(exc, BodyError):
        return _answer(request, exc.status_code, exc.body, headers=exc.headers)
    if exc.status_code == 400 and exc.__cause__ is not None:
        return _answer(request, *_unparsable(exc.__cause__))
    code = _HTTP_ERRORS.get(exc.status_code, "HTTPError")
    path = request.url.path
    if exc.status_code == 413:
        body = error_body(code, "body", str(exc.detail))
    elif exc.status_code == 404:
        body = error_body(code, None, f"no endpoint at {path!r} (see /docs)")
    elif exc.status_code == 405:
        body = error_body(code, None, f"{request.method} is not allowed on {path!r}")
    else:
        body = error_body(code, None, str(exc.detail))
    annotate(request, error=code)
    return error_response(exc.status_code, body, exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback, answered with a 500 that names nothing."""
    annotate(request, error="InternalError")
    _log.exception("unhandled error", path=request.url.path)
    return error_response(
        500, error_body("InternalError", None, "internal error (see the server log)")
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to its answer on ``app``."""
    handlers: dict[type[Exception], Callable[[Request, Exception], Any]] = {
        RoutewiseError: on_library_error,
        RequestValidationError: on_validation_error,
        Refusal: on_refusal,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
