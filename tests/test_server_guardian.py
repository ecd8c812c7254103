"""The sidecar's Guardian endpoints in-process (httpx.ASGITransport): health, events, the
operator actions pin/quarantine/release, their auth rules, metrics, logs, and a schemathesis
run with the token set (so the operator actions are exercised past the 403)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode
from structlog.testing import capture_logs

import routewise as rw
from routewise.server import create_app
from routewise.types import GuardianEvent

pytestmark = pytest.mark.anyio

ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
ARM_IDS = [a.id for a in ARMS]
A, B = ARM_IDS[0], ARM_IDS[3]  # "openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"
CTX = {"task": "extraction", "schema_depth": 3, "input_tokens": 900}
TOKEN = "tok-guardian-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_TOKEN_REASON = (
    "operator actions need a bearer token and this sidecar has none: set ROUTEWISE_TOKEN=<secret> "
    '(or token = "<secret>" in routewise.toml) and restart `routewise serve`, then send '
    "'Authorization: Bearer <secret>' (`routewise pin|quarantine|release ARM --url URL` sends "
    "$ROUTEWISE_TOKEN)"
)


@pytest.fixture()
def ctl() -> Iterator[rw.Controller]:
    c = rw.Controller(arms=ARMS, seed=0)
    yield c
    c.close()


def client_for(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rw", **kw)


@pytest.fixture()
async def api(ctl: rw.Controller) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(ctl, token=TOKEN), headers=AUTH) as c:
        yield c


def op(arm: str, action: str, *, encoded: bool = False) -> str:
    return f"/v1/arms/{quote(arm, safe='') if encoded else arm}/{action}"


# ------------------------------------------------------------------ read endpoints
async def test_health_and_events_start_empty(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    r = await api.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {"enabled": True, "pinned": None, "arms": dict.fromkeys(ARM_IDS, "healthy")}
    assert r.json()["arms"] == ctl.health()
    r = await api.get("/v1/events")
    assert r.status_code == 200 and r.json() == []
    arms = (await api.get("/v1/arms")).json()["arms"]
    assert {a: s["health"] for a, s in arms.items()} == dict.fromkeys(ARM_IDS, "healthy")


async def test_events_limit_and_bad_limit(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    ctl.quarantine(A)
    ctl.release(A)
    ctl.pin(B)
    events = (await api.get("/v1/events")).json()
    assert events == [e.to_dict() for e in ctl.events()]
    assert [(e["arm"], e["from"], e["to"], e["source"]) for e in events] == [
        (A, "healthy", "quarantined", "operator"),
        (A, "quarantined", "healthy", "operator"),
        (B, "healthy", "pinned", "operator"),
    ]
    assert (await api.get("/v1/events", params={"limit": 1})).json() == events[-1:]
    assert (await api.get("/v1/events", params={"limit": 0})).json() == []
    for bad in ("-1", "x", "1.5"):
        r = await api.get("/v1/events", params={"limit": bad})
        assert r.status_code == 422 and r.json()["field"] == "limit", bad


def test_non_finite_evidence_is_sent_as_null() -> None:
    evidence = {"ratio": math.inf, "n": 3, "x": [math.nan, 0.5], "ok": True}
    ev = GuardianEvent(1.0, A, "healthy", "quarantined", "latency", evidence, "operator")
    assert ev.to_dict()["evidence"] == {"ratio": None, "n": 3, "x": [None, 0.5], "ok": True}


# ------------------------------------------------------------------ operator actions
async def test_pin_decide_release_flow(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    r = await api.post(op(B, "pin"))
    assert r.status_code == 200
    assert r.json() == {"arm": B, "action": "pin", "state": "pinned", "pinned": B}
    assert ctl.health()[B] == "pinned" and ctl.guardian is not None and ctl.guardian.pinned == B
    health = (await api.get("/v1/health")).json()
    assert health["pinned"] == B and health["arms"][B] == "pinned"
    assert (await api.get("/v1/arms")).json()["arms"][B]["health"] == "pinned"
    for _ in range(5):
        d = (await api.post("/v1/decide", json={"context": CTX})).json()
        assert d["arm"]["id"] == B and d["propensity"] == 1.0 and d["probabilities"] == {B: 1.0}
    r = await api.post(op(B, "release"))
    assert r.status_code == 200
    assert r.json() == {"arm": B, "action": "release", "state": "healthy", "pinned": None}
    d = (await api.post("/v1/decide", json={"context": CTX})).json()
    assert set(d["probabilities"]) == set(ARM_IDS) and d["propensity"] < 1.0
    assert [e["to"] for e in (await api.get("/v1/events")).json()] == ["pinned", "healthy"]


async def test_quarantine_excludes_the_arm_and_url_encoded_ids_work(
    api: httpx.AsyncClient, ctl: rw.Controller
) -> None:
    r = await api.post(op(A, "quarantine", encoded=True))  # openai%3Agpt-5.4%2Fdirect_emit
    assert r.status_code == 200 and r.json()["state"] == "quarantined" and r.json()["arm"] == A
    assert ctl.health()[A] == "quarantined"
    for _ in range(10):
        d = (await api.post("/v1/decide", json={"context": CTX})).json()
        assert d["arm"]["id"] != A and A not in d["probabilities"]
    r = await api.post(op(A, "release"))
    assert r.status_code == 200 and ctl.health()[A] == "healthy"


async def test_unknown_arm_is_404_naming_arm_id(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    for arm in ("nope", "openai:gpt-5.4/json_mode", "openai:gpt-5.4", ""):
        r = await api.post(op(arm, "pin", encoded=True))
        assert r.status_code == 404, arm
        body = r.json()
        assert body["error"] == "UnknownArm" and body["field"] == "arm_id" and body["arm_id"] == arm
        assert body["known_arms"] == ARM_IDS
    assert (await api.post("/v1/arms/x/explode")).status_code == 404  # no such action
    assert (await api.get(op(A, "pin"))).status_code == 405
    assert ctl.events() == [] and set(ctl.health().values()) == {"healthy"}


async def test_guardian_disabled_is_a_422_naming_guardian() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, guardian=False)
    async with client_for(create_app(ctl, token=TOKEN), headers=AUTH) as api:
        for action in ("pin", "quarantine", "release"):
            r = await api.post(op(A, action))
            assert r.status_code == 422
            body = r.json()
            assert body["error"] == "ConfigError" and body["field"] == "guardian"
            assert "Guardian is disabled" in body["reason"]
        health = (await api.get("/v1/health")).json()
        assert health == {
            "enabled": False,
            "pinned": None,
            "arms": dict.fromkeys(ARM_IDS, "healthy"),
        }
        assert (await api.get("/v1/events")).json() == []
        assert (await api.post(op("nope", "pin"))).status_code == 404  # unknown arm still first
        metrics = (await api.get("/metrics")).text
        assert "routewise_guardian_transitions" not in metrics
    ctl.close()


# ------------------------------------------------------------------ auth
async def test_without_a_token_operator_actions_are_403(ctl: rw.Controller) -> None:
    async with client_for(create_app(ctl)) as anon:
        for action in ("pin", "quarantine", "release"):
            for arm in (A, "nope"):
                for encoded in (False, True):
                    r = await anon.post(op(arm, action, encoded=encoded))
                    assert r.status_code == 403
                    body = r.json()
                    assert body["error"] == "Forbidden" and body["field"] == "Authorization"
                    assert body["reason"] == NO_TOKEN_REASON
            # a bearer header does not help when the server has no token configured
            r = await anon.post(op(A, action), headers={"Authorization": "Bearer whatever"})
            assert r.status_code == 403
        # the read endpoints stay open, as everything else does without a token
        assert (await anon.get("/v1/health")).status_code == 200
        assert (await anon.get("/v1/events")).status_code == 200
    assert ctl.events() == [] and set(ctl.health().values()) == {"healthy"}


async def test_with_a_token_everything_needs_it(ctl: rw.Controller) -> None:
    app = create_app(ctl, token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with client_for(app, headers=headers) as c:
            for method, path in [
                ("POST", op(A, "pin")),
                ("POST", op(A, "quarantine")),
                ("POST", op(A, "release")),
                ("GET", "/v1/health"),
                ("GET", "/v1/events"),
            ]:
                r = await c.request(method, path)
                assert r.status_code == 401, (headers, path)
                assert r.json()["error"] == "Unauthorized" and r.json()["field"] == "Authorization"
    assert ctl.events() == []
    async with client_for(app, headers=AUTH) as c:
        assert (await c.post(op(A, "pin"))).status_code == 200
        spec = (await c.get("/openapi.json")).json()
    for action in ("pin", "quarantine", "release"):
        operation = spec["paths"][f"/v1/arms/{{arm_id}}/{action}"]["post"]
        assert operation["security"] == [{"bearerAuth": []}]
        assert {"403", "404", "422"} <= set(operation["responses"])
        (param,) = operation["parameters"]
        assert param["name"] == "arm_id" and param["schema"]["enum"] == ARM_IDS
    assert "health" in spec["components"]["schemas"]["ArmStats"]["properties"]


# ------------------------------------------------------------------ durability, metrics, logs
async def test_operator_actions_are_committed_before_the_ack(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ctl = rw.Controller(arms=ARMS, seed=0, store=path, durability="batch")
    async with client_for(create_app(ctl, token=TOKEN), headers=AUTH) as api:
        assert (await api.post(op(A, "quarantine"))).status_code == 200
        with sqlite3.connect(path) as other:
            rows = other.execute("SELECT arm FROM events").fetchall()
        assert rows == [(A,)]
    ctl.close()
    again = rw.Controller(arms=ARMS, seed=0, store=path)
    assert again.health()[A] == "quarantined"
    again.close()


async def test_metrics_show_guardian_state_and_transitions(api: httpx.AsyncClient) -> None:
    await api.post(op(A, "quarantine"))
    await api.post(op(B, "pin"))
    text = (await api.get("/metrics")).text
    assert f'routewise_arm_health{{arm="{A}",state="quarantined"}} 1.0' in text
    assert f'routewise_arm_health{{arm="{A}",state="healthy"}} 0.0' in text
    assert f'routewise_arm_health{{arm="{B}",state="pinned"}} 1.0' in text
    assert f'routewise_arm_health{{arm="{ARM_IDS[1]}",state="healthy"}} 1.0' in text
    assert (
        f'routewise_guardian_transitions_total{{arm="{A}",source="operator",to="quarantined"}} 1.0'
        in text
    )
    assert (
        f'routewise_guardian_transitions_total{{arm="{B}",source="operator",to="pinned"}} 1.0'
        in text
    )
    assert (
        'routewise_http_requests_total{method="POST",route="/v1/arms/{arm_id}/pin",status="200"} 1.0'
        in text
    )


async def test_operator_actions_log_arm_and_action(api: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await api.post(op(A, "pin"))
        await api.post(op("nope", "release"))
    requests = [e for e in logs if e["event"] == "request"]
    assert len(requests) == 2
    ok, bad = requests
    assert (ok["status"], ok["arm"], ok["action"], ok["state"]) == (200, A, "pin", "pinned")
    assert (bad["status"], bad["arm"], bad["action"], bad["error"], bad["field"]) == (
        404,
        "nope",
        "release",
        "UnknownArm",
        "arm_id",
    )
    assert TOKEN not in repr(logs)


# ------------------------------------------------------------------ fuzzing with the token set
fuzz_ctl = rw.Controller(arms=ARMS, seed=0)
fuzz_schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(fuzz_ctl, token=TOKEN), headers=AUTH
)


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_controller() -> Iterator[None]:
    yield None
    fuzz_ctl.close()


@fuzz_schema.include(tag="guardian").parametrize()
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_guardian_api_conforms_to_its_spec_with_a_token(case: schemathesis.Case) -> None:
    # A negative case may deliberately omit the required Authorization header: adding the
    # token to it would turn it into a valid request and fail the negative-data check for
    # the harness's doing, not the server's.
    negative = case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE
    omit_token = negative and "Authorization" not in (case.headers or {})
    case.call_and_validate(
        headers=None if omit_token else AUTH,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
    )
