"""HTTP clients for the sidecar (``routewise serve``), with the verbs of the Controller.

:class:`Client` (sync) and :class:`AsyncClient` (asyncio) speak to the daemon over httpx and
return the library's own objects (:class:`~routewise.Decision`,
:class:`~routewise.FeedbackResult`, :class:`~routewise.RankedArm`, :class:`~routewise.Status`).
The Guardian's verbs are there too: :meth:`Client.health` (arm id → state),
:meth:`Client.events`, and the operator actions :meth:`Client.pin`, :meth:`Client.quarantine`
and :meth:`Client.release` (which need the sidecar's bearer token: a sidecar without one
refuses them with 403). Experiments: :meth:`Client.create_experiment`,
:meth:`Client.start_experiment`, :meth:`Client.stop_experiment`,
:meth:`Client.promote_experiment` and :meth:`Client.abort_experiment` (operator actions: they
need the token) return the experiment's spec as a plain dict (``ExperimentSpec.model_dump(mode="json")``),
:meth:`Client.experiments` a list of them and :meth:`Client.experiment_status` the report as a
plain dict (``ExperimentReport.to_dict()``); an unknown experiment raises
``UnknownExperiment`` and a lifecycle conflict ``ExperimentConflict`` (both are ``ConfigError``),
as the library does. Liveness and readiness are :meth:`Client.alive` and
:meth:`Client.ready`.
An error response is raised as the library exception it stands for — ``InvalidContext``,
``InvalidOutcome``, ``ConfigError``, ``UnknownArm``, ``UnknownDecision``, ``FeedbackTooLate``,
``StateError``… — so code written against a local Controller works unchanged against the
sidecar. Errors with no library counterpart (a wrong or missing token, an oversized body, a 5xx) raise
:class:`APIError`; network failures raise httpx's own ``httpx.TransportError``.

Examples
--------
In-process, through the ASGI app (against a daemon: ``AsyncClient("http://127.0.0.1:8787")``):

>>> import asyncio, httpx, routewise as rw
>>> from structlog.testing import capture_logs
>>> from routewise.client import AsyncClient
>>> from routewise.server import create_app
>>> ctl = rw.Controller(arms=["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"], seed=0)
>>> async def main() -> tuple[bool, bool]:
...     async with AsyncClient("http://rw", transport=httpx.ASGITransport(create_app(ctl))) as c:
...         d = await c.decide({"task": "extraction"})
...         r = await c.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=800.0, cost_usd=0.0))
...         again = await c.feedback(d.decision_id, {"valid": False, "latency_ms": 1.0, "cost_usd": 0.0})
...         return d.arm.id in {a.id for a in ctl.arms}, again.duplicate and again.reward == r.reward
>>> with capture_logs():  # the app's request log lines
...     asyncio.run(main())
(True, True)
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import httpx

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
from routewise.types import Arm, Decision, FeedbackResult, GuardianEvent, Outcome, RankedArm, Status

__all__ = ["DEFAULT_URL", "APIError", "AsyncClient", "Client"]

DEFAULT_URL = "http://127.0.0.1:8787"
"""Where ``routewise serve`` listens by default."""

ArmLike = Arm | str | Mapping[str, Any]


class APIError(RoutewiseError):
    """An error response with no library counterpart (401, 403, 413, malformed request, 5xx).

    ``status_code`` is the HTTP status, ``error`` the server's error class (``Unauthorized``,
    ``Forbidden``, ``PayloadTooLarge``, ``InvalidRequest``…), ``field`` the request field at fault (or
    ``None``) and ``body`` the decoded error body.
    """

    def __init__(
        self,
        status_code: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        self.status_code = status_code
        self.error = error
        self.field = field
        self.body = dict(body) if body is not None else {}
        super().__init__(f"HTTP {status_code} {error}: {message}")


# ------------------------------------------------------------------ requests
def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _dumps(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False, default=_plain).encode()


def _encode_context(context: Mapping[str, Any] | None) -> None:
    """Raise the controller's InvalidContext for values JSON cannot carry."""
    if context is None:
        return
    if not isinstance(context, Mapping):
        raise InvalidContext(
            "<context>", f"must be a mapping of feature name to value, got {type(context).__name__}"
        )
    for key, value in context.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidContext(str(key), f"must be finite, got {value!r}")
        try:
            json.dumps(value, allow_nan=False, default=_plain)
        except (TypeError, ValueError) as exc:
            raise InvalidContext(str(key), f"cannot be sent as JSON ({exc})") from None


def _arm_ids(arms: Iterable[ArmLike] | None) -> list[str] | None:
    if arms is None:
        return None
    if isinstance(arms, str | Arm):
        raise ConfigError("arms", "expected a list of arms, got a single arm")
    return [a if isinstance(a, str) else Arm.parse(a).id for a in arms]


def _decide_body(
    context: Mapping[str, Any],
    arms: Iterable[ArmLike] | None,
    reward: str | Mapping[str, Any] | None,
    request_id: str | None,
    unit_id: str | None = None,
) -> bytes:
    _encode_context(context)
    payload: dict[str, Any] = {"context": dict(context)}
    ids = _arm_ids(arms)
    if ids is not None:
        payload["arms"] = ids
    if reward is not None:
        if not isinstance(reward, str | Mapping):
            raise ConfigError(
                "reward", "over HTTP the reward must be a preset name or a reward spec mapping"
            )
        payload["reward"] = reward if isinstance(reward, str) else dict(reward)
    if request_id is not None:
        payload["request_id"] = request_id
    if unit_id is not None:
        payload["unit_id"] = unit_id
    try:
        return _dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigError("reward", f"cannot be sent as JSON ({exc})") from None


def _feedback_body(decision_id: str, outcome: Outcome | Mapping[str, Any]) -> bytes:
    if not isinstance(decision_id, str) or not decision_id:
        raise UnknownDecision(str(decision_id))
    if not isinstance(outcome, Outcome):
        if not isinstance(outcome, Mapping):
            raise InvalidOutcome(
                "outcome", f"expected an Outcome or a mapping, got {type(outcome).__name__}"
            )
        outcome = Outcome.from_dict(outcome)  # the controller's own validation, before sending
    return _dumps({"decision_id": decision_id, "outcome": outcome.to_dict()})


def _experiment_path(name: str, action: str | None = None) -> str:
    """``/v1/experiments/<name, URL-encoded>[/<action>]``."""
    if not isinstance(name, str) or not name:
        raise ConfigError("name", f"must be a non-empty string, got {name!r}")
    path = f"/v1/experiments/{quote(name, safe='')}"
    return f"{path}/{action}" if action is not None else path


def _experiment_body(
    name: str,
    variants: Mapping[str, Mapping[str, Any]],
    split: Mapping[str, float] | None,
    options: Mapping[str, Any],
) -> bytes:
    if not isinstance(variants, Mapping):
        raise ConfigError("variants", f"expected a mapping, got {type(variants).__name__}")
    unknown = sorted(set(options) - {"salt", "alpha", "guardrails"})
    if unknown:
        raise ConfigError(unknown[0], "unknown option; expected salt, alpha or guardrails")
    payload: dict[str, Any] = {
        "name": name,
        "variants": {k: dict(v) if isinstance(v, Mapping) else v for k, v in variants.items()},
    }
    if split is not None:
        payload["split"] = dict(split)
    for key in ("salt", "alpha", "guardrails"):
        if options.get(key) is not None:
            value = options[key]
            payload[key] = dict(value) if isinstance(value, Mapping) else value
    try:
        return _dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ConfigError("variants", f"cannot be sent as JSON ({exc})") from None


def _operator_path(arm: ArmLike, action: str) -> str:
    """``/v1/arms/<arm id, URL-encoded>/<action>``."""
    aid = arm if isinstance(arm, str) else Arm.parse(arm).id
    return f"/v1/arms/{quote(aid, safe='')}/{action}"


def _events_params(limit: int | None) -> dict[str, int] | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError("limit", f"must be a non-negative integer or None, got {limit!r}")
    return {"limit": limit}


def _policy_params(
    context: Mapping[str, Any] | None, arms: Iterable[ArmLike] | None
) -> httpx.QueryParams:
    params: list[tuple[str, str | int | float | bool | None]] = []
    if context is not None:
        _encode_context(context)
        params.append(("context", json.dumps(dict(context), allow_nan=False, default=_plain)))
    for a in _arm_ids(arms) or ():
        params.append(("arms", a))
    return httpx.QueryParams(params)


# ----------------------------------------------------------------- responses
# Answers are parsed by the wire types themselves (routewise.types.wire): one schema per type,
# shared with the library and the server.
_decision = Decision.from_dict
_feedback = FeedbackResult.from_dict


def _ranked(rows: Iterable[Mapping[str, Any]]) -> list[RankedArm]:
    return [RankedArm.from_dict(r) for r in rows]


_status = Status.from_dict


def _events(rows: Iterable[Mapping[str, Any]]) -> list[GuardianEvent]:
    return [GuardianEvent.from_dict(r) for r in rows]


def _strip(prefix: str, field: str | None, default: str) -> str:
    if not field or field == prefix:
        return default
    return field.removeprefix(prefix + ".")


def error_from_response(status_code: int, body: Any, text: str = "") -> RoutewiseError:
    """The exception an error response stands for (the inverse of the server's mapping)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("error"), str):
        return APIError(status_code, "HTTPError", text[:500] or f"HTTP {status_code}")
    code: str = body["error"]
    field = body.get("field")
    field = field if isinstance(field, str) else None
    reason = str(body.get("reason", ""))
    message = str(body.get("message", reason))
    try:
        if code == "InvalidContext":
            return InvalidContext(
                str(body.get("key") or _strip("context", field, "<context>")), reason
            )
        if code == "InvalidOutcome":
            return InvalidOutcome(_strip("outcome", field, "outcome"), reason)
        if code == "UnknownExperiment":
            known = body.get("known_experiments")
            return UnknownExperiment(
                str(body.get("experiment", "")), list(known) if isinstance(known, list) else []
            )
        if code == "ExperimentConflict":
            return ExperimentConflict(str(body.get("experiment") or ""), field or "status", reason)
        if code == "ConfigError":
            return ConfigError(field or "request", reason)
        if code == "UnknownArm":
            return UnknownArm(str(body["arm_id"]), list(body.get("known_arms") or []))
        if code == "UnknownDecision":
            return UnknownDecision(str(body["decision_id"]))
        if code == "FeedbackTooLate":
            return FeedbackTooLate(
                str(body["decision_id"]), float(body["age_s"]), float(body["wait_s"])
            )
        if code == "NoEligibleArms":
            return NoEligibleArms(message)
        if code == "PolicyError":
            return PolicyError(message)
        if code == "StateError":
            return StateError(message)
    except (KeyError, TypeError, ValueError):
        pass
    return APIError(status_code, code, message, field=field, body=body)


def _check(response: httpx.Response) -> Any:
    if response.status_code < 400:
        return response.json()
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_response(response.status_code, body, response.text)


def _check_stream_status(response: httpx.Response, content: bytes) -> None:
    if response.status_code >= 400:
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        raise error_from_response(response.status_code, body, content.decode(errors="replace"))


def _headers(token: str | None) -> dict[str, str]:
    h = {"content-type": "application/json", "accept": "application/json"}
    if token is not None and token.strip():  # an empty token (ROUTEWISE_TOKEN=) means none
        h["authorization"] = f"Bearer {token.strip()}"
    return h


def _write_trace(file: str | Path | IO[str], lines: Iterable[str]) -> int:
    n = 0
    if isinstance(file, str | Path):
        tmp = Path(str(file) + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
                n += 1
        tmp.replace(file)
        return n
    for line in lines:
        file.write(line + "\n")
        n += 1
    return n


# ===================================================================== clients
class Client:
    """Synchronous client for the sidecar; the Controller's verbs over HTTP.

    Parameters
    ----------
    base_url
        Where the sidecar listens (default ``http://127.0.0.1:8787``).
    token
        Bearer token, when the sidecar requires one (``ROUTEWISE_TOKEN``).
    timeout
        Seconds per request (httpx timeout).
    transport
        An httpx transport (tests inject ``httpx.MockTransport``/``WSGITransport``).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def decide(
        self,
        context: Mapping[str, Any],
        *,
        arms: Iterable[ArmLike] | None = None,
        reward: str | Mapping[str, Any] | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
    ) -> Decision:
        """Choose an arm for ``context`` (see :meth:`routewise.Controller.decide`)."""
        body = _decide_body(context, arms, reward, request_id, unit_id)
        return _decision(_check(self._http.post("/v1/decide", content=body)))

    def feedback(self, decision_id: str, outcome: Outcome | Mapping[str, Any]) -> FeedbackResult:
        """Report an outcome; idempotent per decision id (see :meth:`routewise.Controller.feedback`)."""
        body = _feedback_body(decision_id, outcome)
        return _feedback(_check(self._http.post("/v1/feedback", content=body)))

    def best_policy(
        self, context: Mapping[str, Any] | None = None, *, arms: Iterable[ArmLike] | None = None
    ) -> list[RankedArm]:
        """Arms ranked by expected reward (see :meth:`routewise.Controller.best_policy`)."""
        data = _check(self._http.get("/v1/policy", params=_policy_params(context, arms)))
        return _ranked(data["arms"])

    def status(self) -> Status:
        """Per-arm statistics (see :meth:`routewise.Controller.status`)."""
        return _status(_check(self._http.get("/v1/arms")))

    def trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Stream the JSON-Lines trace, one dict per decision."""
        for line in self._trace_lines(since):
            yield json.loads(line)

    def export_trace(self, file: str | Path | IO[str], *, since: float | None = None) -> int:
        """Write the trace to ``file``; returns the number of lines."""
        return _write_trace(file, self._trace_lines(since))

    def _trace_lines(self, since: float | None) -> Iterator[str]:
        params = {"since": repr(since)} if since is not None else None
        with self._http.stream("GET", "/v1/trace", params=params) as response:
            if response.status_code >= 400:
                _check_stream_status(response, response.read())
            for line in response.iter_lines():
                if line:
                    yield line

    def health(self) -> dict[str, str]:
        """Each arm's Guardian state (see :meth:`routewise.Controller.health`)."""
        return dict(_check(self._http.get("/v1/health"))["arms"])

    def events(self, limit: int | None = None) -> list[GuardianEvent]:
        """Health transitions, oldest first (see :meth:`routewise.Controller.events`)."""
        return _events(_check(self._http.get("/v1/events", params=_events_params(limit))))

    def pin(self, arm: ArmLike) -> None:
        """Send all traffic to ``arm`` until released (needs the token)."""
        _check(self._http.post(_operator_path(arm, "pin")))

    def quarantine(self, arm: ArmLike) -> None:
        """Exclude ``arm`` from selection until released (needs the token)."""
        _check(self._http.post(_operator_path(arm, "quarantine")))

    def release(self, arm: ArmLike) -> None:
        """Return ``arm`` to healthy (needs the token)."""
        _check(self._http.post(_operator_path(arm, "release")))

    # ------------------------------------------------------------ experiments
    def create_experiment(
        self,
        name: str,
        variants: Mapping[str, Mapping[str, Any]],
        split: Mapping[str, float] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """Create a draft experiment (see :meth:`routewise.Controller.create_experiment`;
        ``options``: ``salt``, ``alpha``, ``guardrails``); returns its spec as a dict.
        Needs the token."""
        body = _experiment_body(name, variants, split, options)
        return dict(_check(self._http.post("/v1/experiments", content=body)))

    def start_experiment(self, name: str) -> dict[str, Any]:
        """Start routing traffic to the variants; returns the spec. Needs the token."""
        return dict(_check(self._http.post(_experiment_path(name, "start"))))

    def stop_experiment(self, name: str) -> dict[str, Any]:
        """Stop assigning traffic; returns the spec. Needs the token."""
        return dict(_check(self._http.post(_experiment_path(name, "stop"))))

    def promote_experiment(self, name: str, variant: str) -> dict[str, Any]:
        """Make ``variant`` the default policy; returns the spec. Needs the token."""
        body = _dumps({"variant": variant})
        return dict(_check(self._http.post(_experiment_path(name, "promote"), content=body)))

    def abort_experiment(self, name: str) -> dict[str, Any]:
        """End the experiment without changing the default policy. Needs the token."""
        return dict(_check(self._http.post(_experiment_path(name, "abort"))))

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment's spec (as dicts), in creation order."""
        return [dict(e) for e in _check(self._http.get("/v1/experiments"))]

    def experiment_status(self, name: str) -> dict[str, Any]:
        """The status report (``ExperimentReport.to_dict()``: variants, comparisons, SRM)."""
        return dict(_check(self._http.get(_experiment_path(name))))

    def alive(self) -> bool:
        """True if the sidecar answers ``/healthz`` (liveness; never needs the token)."""
        return self._http.get("/healthz").status_code == 200

    def ready(self) -> bool:
        """True if the sidecar is ready to serve (``/readyz``)."""
        return self._http.get("/readyz").status_code == 200

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"


class AsyncClient:
    """Asynchronous client for the sidecar; the same verbs as :class:`Client`, awaited.

    ``trace`` is an async iterator. Parameters as for :class:`Client` (``transport`` is an
    ``httpx.AsyncBaseTransport``, e.g. ``httpx.ASGITransport(create_app(ctl))`` in tests).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def decide(
        self,
        context: Mapping[str, Any],
        *,
        arms: Iterable[ArmLike] | None = None,
        reward: str | Mapping[str, Any] | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
    ) -> Decision:
        body = _decide_body(context, arms, reward, request_id, unit_id)
        return _decision(_check(await self._http.post("/v1/decide", content=body)))

    async def feedback(
        self, decision_id: str, outcome: Outcome | Mapping[str, Any]
    ) -> FeedbackResult:
        body = _feedback_body(decision_id, outcome)
        return _feedback(_check(await self._http.post("/v1/feedback", content=body)))

    async def best_policy(
        self, context: Mapping[str, Any] | None = None, *, arms: Iterable[ArmLike] | None = None
    ) -> list[RankedArm]:
        data = _check(await self._http.get("/v1/policy", params=_policy_params(context, arms)))
        return _ranked(data["arms"])

    async def status(self) -> Status:
        return _status(_check(await self._http.get("/v1/arms")))

    async def trace(self, since: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """Stream the JSON-Lines trace, one dict per decision."""
        async for line in self._trace_lines(since):
            yield json.loads(line)

    async def _trace_lines(self, since: float | None) -> AsyncIterator[str]:
        params = {"since": repr(since)} if since is not None else None
        async with self._http.stream("GET", "/v1/trace", params=params) as response:
            if response.status_code >= 400:
                _check_stream_status(response, await response.aread())
            async for line in response.aiter_lines():
                if line:
                    yield line

    async def export_trace(self, file: str | Path | IO[str], *, since: float | None = None) -> int:
        """Write the trace to ``file``; returns the number of lines."""
        if isinstance(file, str | Path):
            tmp = Path(str(file) + ".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                n = await self._write_lines(fh, since)
            tmp.replace(file)
            return n
        return await self._write_lines(file, since)

    async def _write_lines(self, fh: IO[str], since: float | None) -> int:
        n = 0
        async for line in self._trace_lines(since):
            fh.write(line + "\n")
            n += 1
        return n

    async def health(self) -> dict[str, str]:
        return dict(_check(await self._http.get("/v1/health"))["arms"])

    async def events(self, limit: int | None = None) -> list[GuardianEvent]:
        return _events(_check(await self._http.get("/v1/events", params=_events_params(limit))))

    async def pin(self, arm: ArmLike) -> None:
        _check(await self._http.post(_operator_path(arm, "pin")))

    async def quarantine(self, arm: ArmLike) -> None:
        _check(await self._http.post(_operator_path(arm, "quarantine")))

    async def release(self, arm: ArmLike) -> None:
        _check(await self._http.post(_operator_path(arm, "release")))

    # ------------------------------------------------------------ experiments
    async def create_experiment(
        self,
        name: str,
        variants: Mapping[str, Mapping[str, Any]],
        split: Mapping[str, float] | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        body = _experiment_body(name, variants, split, options)
        return dict(_check(await self._http.post("/v1/experiments", content=body)))

    async def start_experiment(self, name: str) -> dict[str, Any]:
        return dict(_check(await self._http.post(_experiment_path(name, "start"))))

    async def stop_experiment(self, name: str) -> dict[str, Any]:
        return dict(_check(await self._http.post(_experiment_path(name, "stop"))))

    async def promote_experiment(self, name: str, variant: str) -> dict[str, Any]:
        body = _dumps({"variant": variant})
        path = _experiment_path(name, "promote")
        return dict(_check(await self._http.post(path, content=body)))

    async def abort_experiment(self, name: str) -> dict[str, Any]:
        return dict(_check(await self._http.post(_experiment_path(name, "abort"))))

    async def experiments(self) -> list[dict[str, Any]]:
        return [dict(e) for e in _check(await self._http.get("/v1/experiments"))]

    async def experiment_status(self, name: str) -> dict[str, Any]:
        return dict(_check(await self._http.get(_experiment_path(name))))

    async def alive(self) -> bool:
        return (await self._http.get("/healthz")).status_code == 200

    async def ready(self) -> bool:
        return (await self._http.get("/readyz")).status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.base_url!r})"
