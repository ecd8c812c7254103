"""Hostile and careless clients at the sidecar's edge (issue 13, D5-D7).

- D5: a body nested 10,000 deep, or not UTF-8, is ``400 MalformedJSON`` with the reason
  (it was FastAPI's ``BadRequest`` "There was an error parsing the body").
- D6: the OpenAPI contract — ``OPTIONS`` and ``405`` name every method of the path, an empty
  ``context`` is no context, experiment conflicts are ``409 ExperimentConflict``, the reward
  spec is described exactly, every gated operation documents its 401.
- D7: a body that never completes is ``408 RequestTimeout`` after ``body_timeout_s``, SIGTERM
  does not wait for it longer, and the status logged is the status the client got
  (a real ``routewise serve`` and a raw socket).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema_rs
import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from test_server_subprocess import Daemon

import routewise as rw
from routewise.errors import ConfigError
from routewise.reward import reward_argument
from routewise.server import create_app
from routewise.server.metrics import Metrics
from routewise.server.middleware import Edge

pytestmark = pytest.mark.anyio

ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
TOKEN = "hardening-token-77aa"
SPEC = {"name": "e1", "variants": {"a": {}, "b": {"policy": "uniform"}}}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}


@pytest.fixture()
def ctl() -> Iterator[rw.Controller]:
    c = rw.Controller(arms=ARMS, seed=0)
    yield c
    c.close()


@pytest.fixture()
async def api(ctl: rw.Controller) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(create_app(ctl, token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://rw", headers=AUTH) as c:
        yield c


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------------------ D5: malformed JSON
@pytest.mark.parametrize("path", ["/v1/decide", "/v1/feedback", "/v1/experiments"])
async def test_a_body_nested_10000_deep_is_malformed_json(
    api: httpx.AsyncClient, ctl: rw.Controller, path: str
) -> None:
    body = '{"context": {"a": ' + nested(10_000) + "}}"
    r = await api.post(path, content=body, headers=JSON)
    assert r.status_code == 400, r.text
    answer = r.json()
    assert answer["error"] == "MalformedJSON" and answer["field"] == "body"
    assert answer["reason"] == "nesting deeper than 64 levels (10002)"
    assert ctl.status().decisions == 0


async def test_the_nesting_limit_is_64_and_strings_do_not_count(api: httpx.AsyncClient) -> None:
    deep = await api.post("/v1/decide", content='{"context": ' + nested(64) + "}", headers=JSON)
    assert deep.status_code == 400 and deep.json()["reason"].endswith("(65)")
    ok = await api.post("/v1/decide", content='{"context": ' + nested(63) + "}", headers=JSON)
    assert ok.status_code == 422 and ok.json()["error"] == "InvalidContext"  # parsed: a list
    text = '[[{"\\"[[[' + "[" * 100 + '"'  # brackets in a string (and an escaped quote)
    r = await api.post("/v1/decide", json={"context": {"note": text}})
    assert r.status_code == 200, r.text

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the depth spans chunks
        body = ('{"context": {"a": ' + nested(100) + "}}").encode()
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    r = await api.post("/v1/decide", content=chunks(), headers=JSON)
    assert r.status_code == 400 and r.json()["reason"] == "nesting deeper than 64 levels (102)"


async def test_invalid_utf8_is_malformed_json_naming_the_byte(api: httpx.AsyncClient) -> None:
    body = b'{"context": {"a": "caf\xe9"}}'
    r = await api.post("/v1/decide", content=body, headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json() == {
        "error": "MalformedJSON",
        "field": "body",
        "reason": "invalid UTF-8 at byte 22",
        "message": "body: invalid UTF-8 at byte 22",
    }
    r = await api.post("/v1/feedback", content=b"\xff" * 10, headers=JSON)
    assert r.status_code == 400 and r.json()["reason"] == "invalid UTF-8 at byte 0"


# ------------------------------------------------------------------------- D6: the OpenAPI contract
async def test_options_and_405_name_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    r = await api.options("/v1/experiments")
    assert r.status_code == 204 and r.headers["allow"] == "GET, OPTIONS, POST"
    r = await api.delete("/v1/experiments")
    assert r.status_code == 405 and r.headers["allow"] == "GET, OPTIONS, POST"
    assert r.json()["error"] == "MethodNotAllowed"
    r = await api.options(f"/v1/arms/{ARMS[0].id}/pin")
    assert r.status_code == 204 and r.headers["allow"] == "OPTIONS, POST"
    assert (await api.options("/v1/nothing")).status_code == 404
    anonymous = await api.options("/v1/experiments", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and "allow" not in anonymous.headers


async def test_an_empty_context_is_no_context(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    ctl.decide({"task": "extraction"})
    omitted = await api.get("/v1/policy")
    for query in ("?context=", "?context=%20"):
        r = await api.get("/v1/policy" + query)
        assert r.status_code == 200, r.text
        assert r.json() == omitted.json()


async def test_experiment_conflicts_are_409(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    assert (await api.post("/v1/experiments", json=SPEC)).status_code == 201
    again = await api.post("/v1/experiments", json=SPEC)
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "ExperimentConflict" and again.json()["field"] == "name"
    assert again.json()["reason"] == "experiment 'e1' already exists"
    r = await api.post("/v1/experiments/e1/promote", json={"variant": "c"})
    assert r.status_code == 409 and r.json()["field"] == "variant"
    assert r.json()["reason"] == "'c' is not a variant of 'e1' (['a', 'b'])"
    assert (await api.post("/v1/experiments/e1/abort")).status_code == 200
    final = await api.post("/v1/experiments/e1/abort")
    assert final.status_code == 409 and "'aborted' is final" in final.json()["reason"]
    assert [e.status for e in ctl.experiments()] == ["aborted"]


def test_every_gated_operation_documents_401(ctl: rw.Controller) -> None:
    spec = create_app(ctl, token=TOKEN).openapi()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            gated = path not in ("/healthz", "/readyz")
            assert ("401" in op["responses"]) == gated, (method, path)
            assert ("security" in op) == gated, (method, path)


REWARDS: list[Any] = [
    {"preset": "low_latency"},
    {"preset": "balanced", "weights": {"latency": 0}, "name": "mine", "gate": False},
    {
        "weights": {"correctness": 1, "latency": 0, "cost": 0},
        "latency_budget_ms": 900,
        "cost_budget_usd": 0.01,
    },
    {
        "w_correctness": 3,
        "weights": {"latency": 1, "cost": 1},
        "latency_budget_ms": 1,
        "cost_budget_usd": 1,
        "type": "scalarizer",
    },
    {},  # a weight and both budgets missing
    {"preset": "balanced", "w_cost": 1, "weights": {"cost": 1}},  # given twice
    {"preset": "balanced", "weights": {"correctness": 0, "latency": 0, "cost": 0}},  # all 0
    {"weights": {"correctness": 1, "latency": 1}, "latency_budget_ms": 1, "cost_budget_usd": 1},
    {"preset": "fastest"},
    {"preset": "balanced", "speed": 1},
    {"preset": "balanced", "latency_budget_ms": 0},
    {"preset": "balanced", "weights": {"cost": -1}},
    {"preset": "balanced", "name": ""},
    {"preset": "balanced", "type": "linear"},
]


def test_the_reward_spec_schema_is_what_the_library_accepts(ctl: rw.Controller) -> None:
    spec = create_app(ctl).openapi()
    schemas = spec["components"]["schemas"]
    decide_reward = schemas["DecideIn"]["properties"]["reward"]["anyOf"]
    assert {"$ref": "#/components/schemas/RewardSpec"} in decide_reward
    assert {"$ref": "#/components/schemas/RewardSpec"} in (
        schemas["VariantIn"]["properties"]["reward"]["anyOf"]
    )
    validator = jsonschema_rs.validator_for(schemas["RewardSpec"])
    for reward in REWARDS:
        try:
            reward_argument(reward)
            accepted = True
        except ConfigError:
            accepted = False
        assert validator.is_valid(reward) == accepted, reward


async def test_a_reward_number_beyond_2_63_is_a_422_not_a_500(api: httpx.AsyncClient) -> None:
    reward = {"preset": "balanced", "weights": {"cost": 10**400}}
    r = await api.post("/v1/decide", json={"context": {}, "reward": reward})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "ConfigError" and r.json()["field"] == "reward.weights.cost"
    spec = {**SPEC, "variants": {"a": {}, "b": {"reward": {"preset": "balanced", "w_cost": 1e19}}}}
    r = await api.post("/v1/experiments", json=spec)
    assert r.status_code == 422 and r.json()["field"] == "variants.b.reward.w_cost"


# --------------------------------------------------------------------------- D7: slow bodies
def _slow_request(url: str) -> socket.socket:
    """A decide whose headers announce 100 bytes of body, of which 10 are sent."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = b"POST /v1/decide HTTP/1.1\r\nHost: rw\r\nContent-Type: application/json\r\n"
    sock.sendall(head + b"Content-Length: 100\r\n\r\n" + b'{"context"')
    return sock


def _answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body, read until the server closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    is_json = headers.get("content-type") == "application/json"
    return int(lines[0].split()[1]), headers, json.loads(body) if is_json else {"text": body}


def _logged(daemon: Daemon) -> list[int]:
    return [e["status"] for e in daemon.events() if e.get("path") == "/v1/decide"]


def test_a_body_that_never_completes_is_408_after_body_timeout_s(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path, "--db", str(tmp_path / "rw.db"), env={"ROUTEWISE_BODY_TIMEOUT_S": "1"}
    )
    try:
        _slow_request(daemon.url).close()  # a client that goes away: logged 499, sent nothing
        time.sleep(0.5)
        t0 = time.monotonic()
        with _slow_request(daemon.url) as sock:
            status, headers, body = _answer(sock, timeout=8)
        waited = time.monotonic() - t0
        assert status == 408 and headers["connection"] == "close"
        assert body["error"] == "RequestTimeout" and body["field"] == "body"
        assert body["reason"] == "the request body did not arrive within 1 s (10 bytes received)"
        assert 0.9 < waited < 5
        with httpx.Client(base_url=daemon.url) as client:  # the server still answers
            assert client.post("/v1/decide", json={"context": {}}).status_code == 200
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    assert _logged(daemon) == [499, 408, 200]


def test_sigterm_waits_for_a_slow_body_no_longer_than_its_timeout(tmp_path: Path) -> None:
    daemon = Daemon(
        tmp_path, "--db", str(tmp_path / "rw.db"), env={"ROUTEWISE_BODY_TIMEOUT_S": "2"}
    )
    try:
        with _slow_request(daemon.url) as sock:
            time.sleep(0.3)
            t0 = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            status, _, body = _answer(sock, timeout=15)
            assert daemon.proc.wait(timeout=15) == 0
        stopped = time.monotonic() - t0
    finally:
        daemon.stop(signal.SIGKILL)
    assert status == 408 and body["error"] == "RequestTimeout"
    assert stopped < 5  # the body timeout (2 s, not the 10 s drain timeout) and the snapshot
    assert _logged(daemon) == [408]


async def _cut_short(app: Any, receive: Any, started: asyncio.Event) -> list[dict[str, Any]]:
    """Run one POST /v1/decide through ``app``, cancel it once ``started`` is set (what uvicorn
    does when its drain timeout passes), and return what was sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/decide",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1",
    }
    task = asyncio.create_task(app(scope, receive, send))
    await started.wait()
    task.cancel()
    await task  # answered: the request ends without an exception
    return sent


async def test_a_request_cut_short_by_the_drain_timeout_is_answered_as_logged(
    ctl: rw.Controller,
) -> None:
    """uvicorn cancels what still runs when its drain timeout passes: the edge answers 408 (the
    body still missing) or 503, and logs that status (it logged 499 next to uvicorn's 500)."""
    started = asyncio.Event()

    async def never_completes() -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)  # a client that never sends the rest of its body
        raise AssertionError("unreachable")

    with capture_logs() as logs:
        sent = await _cut_short(create_app(ctl), never_completes, started)
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["reason"] == (
        "the request body did not arrive before the server shut down"
    )
    assert [e["status"] for e in logs if e["event"] == "request"] == [408]

    started = asyncio.Event()

    async def stalled(scope: Any, receive: Any, send: Any) -> None:  # a handler that hangs
        await receive()
        started.set()
        await asyncio.sleep(3600)

    async def body() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"context": {}}', "more_body": False}

    metrics = Metrics(ctl, CollectorRegistry())
    edge = Edge(stalled, token=None, max_body=1000, metrics=metrics, logger=_logger(), routes=[])
    with capture_logs() as logs:
        sent = await _cut_short(edge, body, started)
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"] == "ShuttingDown"
    assert [e["status"] for e in logs if e["event"] == "request"] == [503]


def _logger() -> Any:
    return structlog.get_logger("routewise.server")


def test_create_app_keeps_max_lag_s(ctl: rw.Controller) -> None:
    """It was passed positionally into ``Sidecar.ready`` (and ``/readyz`` used the default)."""
    state = create_app(ctl, max_lag_s=0.5, body_timeout_s=3).state.sidecar
    assert state.max_lag_s == 0.5 and state.ready is True
    with pytest.raises(ConfigError, match="body_timeout_s"):
        create_app(ctl, body_timeout_s=0)
