"""routewise.Client / AsyncClient: the Controller's verbs over HTTP, the same exceptions."""

from __future__ import annotations

import io
import json
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import routewise as rw
from routewise.client import APIError, AsyncClient, Client, error_from_response
from routewise.server import create_app

ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
CTX = {
    "task": "extraction",
    "schema_depth": 3,
    "n_fields": 12,
    "input_tokens": 900,
    "language": "zh",
}
OK = rw.Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004)


@pytest.fixture()
def ctl() -> Iterator[rw.Controller]:
    c = rw.Controller(arms=ARMS, seed=0)
    yield c
    c.close()


@pytest.fixture()
async def aclient(ctl: rw.Controller) -> AsyncIterator[AsyncClient]:
    async with AsyncClient("http://rw", transport=httpx.ASGITransport(create_app(ctl))) as c:
        yield c


@pytest.fixture()
def live_url(ctl: rw.Controller) -> Iterator[str]:
    """The app served by uvicorn in a thread, on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ctl, token="t0ken"), log_level="warning", lifespan="off", ws="none"
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ------------------------------------------------------------------ async, in-process
@pytest.mark.anyio
async def test_async_verbs_mirror_the_controller(aclient: AsyncClient, ctl: rw.Controller) -> None:
    d = await aclient.decide(CTX, request_id="r-1")
    assert isinstance(d, rw.Decision) and d.arm in ARMS
    assert d.propensity == d.probabilities[d.arm.id]
    r = await aclient.feedback(d.decision_id, OK)
    assert isinstance(r, rw.FeedbackResult)
    assert (r.decision_id, r.arm, r.reward, r.duplicate) == (
        d.decision_id,
        d.arm,
        ctl.reward(OK),
        False,
    )
    again = await aclient.feedback(
        d.decision_id, {"valid": False, "latency_ms": 1.0, "cost_usd": 0.0}
    )
    assert again.duplicate and again.reward == r.reward
    d2 = await aclient.decide(CTX, arms=[ARMS[0], ARMS[1].id], reward="low_latency")
    assert d2.arm in ARMS[:2] and d2.reward == "low_latency"
    ranked = await aclient.best_policy(CTX)
    assert [x.to_dict() for x in ranked] == [x.to_dict() for x in ctl.best_policy(CTX)]
    assert [x.to_dict() for x in await aclient.best_policy()] == [
        x.to_dict() for x in ctl.best_policy()
    ]
    sub = await aclient.best_policy(arms=ARMS[:2])
    assert {x.arm for x in sub} == set(ARMS[:2])
    st = await aclient.status()
    assert isinstance(st, rw.Status) and st.to_dict() == ctl.status().to_dict()
    lines = [line async for line in aclient.trace()]
    assert [x["decision_id"] for x in lines] == [d.decision_id, d2.decision_id]
    assert lines[0]["request_id"] == "r-1" and lines[0]["reward"] == r.reward
    assert [x["decision_id"] async for x in aclient.trace(since=lines[1]["ts"])] == [d2.decision_id]
    buf = io.StringIO()
    assert await aclient.export_trace(buf) == 2
    assert [json.loads(x) for x in buf.getvalue().splitlines()] == lines
    assert await aclient.alive() and await aclient.ready()


async def _raises_like_local(
    aclient: AsyncClient, ctl: rw.Controller, call: str, *args: Any, **kw: Any
) -> None:
    """The client raises the exception the local controller raises, with the same context."""
    with pytest.raises(rw.RoutewiseError) as local:
        getattr(ctl, call)(*args, **kw)
    with pytest.raises(rw.RoutewiseError) as remote:
        await getattr(aclient, call)(*args, **kw)
    assert type(remote.value) is type(local.value)
    for attr in ("key", "field", "arm_id", "decision_id"):
        assert getattr(remote.value, attr, None) == getattr(local.value, attr, None), attr


@pytest.mark.anyio
async def test_async_errors_are_the_library_exceptions(
    aclient: AsyncClient, ctl: rw.Controller
) -> None:
    ctl.decide({"schema_depth": 1})
    await _raises_like_local(aclient, ctl, "decide", {"schema_depth": "deep"})
    await _raises_like_local(aclient, ctl, "decide", {"nested": {"a": 1}})
    await _raises_like_local(aclient, ctl, "decide", {"bad": math.nan})
    await _raises_like_local(aclient, ctl, "decide", CTX, arms=["nope:x/direct_emit"])
    await _raises_like_local(aclient, ctl, "decide", CTX, arms=[])
    await _raises_like_local(aclient, ctl, "decide", CTX, reward="fastest")
    await _raises_like_local(aclient, ctl, "feedback", "0" * 32, OK)
    await _raises_like_local(
        aclient, ctl, "feedback", "x", {"valid": True, "latency_ms": -1.0, "cost_usd": 0.0}
    )
    await _raises_like_local(aclient, ctl, "feedback", "x", {"valid": True})
    await _raises_like_local(aclient, ctl, "best_policy", {"nested": [1]})
    await _raises_like_local(aclient, ctl, "best_policy", arms=["nope:x/direct_emit"])
    with pytest.raises(rw.UnknownArm) as e:
        await aclient.decide(CTX, arms=["nope:x/direct_emit"])
    assert e.value.known == [a.id for a in ARMS]


@pytest.mark.anyio
async def test_async_feedback_too_late() -> None:
    now = [0.0]
    ctl = rw.Controller(arms=ARMS, seed=0, reward_wait_s=5, clock=lambda: now[0])
    async with AsyncClient("http://rw", transport=httpx.ASGITransport(create_app(ctl))) as c:
        d = await c.decide(CTX)
        now[0] = 9.0
        with pytest.raises(rw.FeedbackTooLate) as e:
            await c.feedback(d.decision_id, OK)
    assert (e.value.decision_id, e.value.age_s, e.value.wait_s) == (d.decision_id, 9.0, 5.0)
    ctl.close()


@pytest.mark.anyio
async def test_async_wrong_token_is_an_api_error(ctl: rw.Controller) -> None:
    app = create_app(ctl, token="right")
    async with AsyncClient("http://rw", token="wrong", transport=httpx.ASGITransport(app)) as c:
        with pytest.raises(APIError) as e:
            await c.status()
        with pytest.raises(APIError):
            [x async for x in c.trace()]
        assert await c.alive()
    assert (
        e.value.status_code == 401
        and e.value.error == "Unauthorized"
        and e.value.field == "Authorization"
    )
    assert isinstance(e.value, rw.RoutewiseError)
    async with AsyncClient("http://rw", token="right", transport=httpx.ASGITransport(app)) as c:
        assert (await c.status()).decisions == 0


# ------------------------------------------------------------------ the Guardian's verbs
GUARDIAN_TOKEN = "guard-t0ken"


@pytest.mark.anyio
async def test_async_guardian_verbs_mirror_the_controller(ctl: rw.Controller) -> None:
    app = create_app(ctl, token=GUARDIAN_TOKEN)
    a, b = ARMS[0], ARMS[3]
    async with AsyncClient(
        "http://rw", token=GUARDIAN_TOKEN, transport=httpx.ASGITransport(app)
    ) as c:
        assert await c.health() == ctl.health() == dict.fromkeys([x.id for x in ARMS], "healthy")
        assert await c.events() == []
        await c.pin(b)  # an Arm works as well as an id
        assert (await c.health())[b.id] == "pinned"
        d = await c.decide(CTX)
        assert d.arm == b and d.propensity == 1.0
        await c.release(b.id)
        await c.quarantine({"backend": a.backend, "mode": a.mode})
        assert await c.health() == ctl.health() and ctl.health()[a.id] == "quarantined"
        assert (await c.decide(CTX)).arm != a
        await c.release(a.id)
        events = await c.events()
        assert events == ctl.events()
        assert [(e.arm, e.to_state, e.source) for e in events] == [
            (b.id, "pinned", "operator"),
            (b.id, "healthy", "operator"),
            (a.id, "quarantined", "operator"),
            (a.id, "healthy", "operator"),
        ]
        assert await c.events(limit=2) == ctl.events(2) == events[-2:]
        await _raises_like_local(c, ctl, "pin", "nope:x/direct_emit")
        await _raises_like_local(c, ctl, "release", "openai:gpt-5.4/json_mode")
        with pytest.raises(rw.UnknownArm) as e:
            await c.quarantine("nope:x/direct_emit")
        assert e.value.arm_id == "nope:x/direct_emit" and e.value.known == [x.id for x in ARMS]
        with pytest.raises(rw.ConfigError) as e2:
            await c.events(limit=-1)
        assert e2.value.field == "limit"
    async with AsyncClient("http://rw", token="wrong", transport=httpx.ASGITransport(app)) as c:
        for call in (c.health(), c.events(), c.pin(a), c.quarantine(a), c.release(a)):
            with pytest.raises(APIError) as e3:
                await call
            assert e3.value.status_code == 401 and e3.value.error == "Unauthorized"


@pytest.mark.anyio
async def test_async_operator_actions_without_a_server_token_are_forbidden(
    aclient: AsyncClient, ctl: rw.Controller
) -> None:
    for action in ("pin", "quarantine", "release"):
        with pytest.raises(APIError) as e:
            await getattr(aclient, action)(ARMS[0])
        assert e.value.status_code == 403 and e.value.error == "Forbidden"
        assert e.value.field == "Authorization" and "set ROUTEWISE_TOKEN" in str(e.value)
    assert await aclient.health() == ctl.health()  # reading stays open without a token
    assert await aclient.events() == []


@pytest.mark.anyio
async def test_async_guardian_disabled_is_the_controllers_config_error() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, guardian=False)
    app = create_app(ctl, token=GUARDIAN_TOKEN)
    async with AsyncClient(
        "http://rw", token=GUARDIAN_TOKEN, transport=httpx.ASGITransport(app)
    ) as c:
        for action in ("pin", "quarantine", "release"):
            await _raises_like_local(c, ctl, action, ARMS[0].id)
            with pytest.raises(rw.ConfigError) as e:
                await getattr(c, action)(ARMS[0].id)
            assert e.value.field == "guardian"
        assert await c.health() == ctl.health()
    ctl.close()


# ------------------------------------------------------------------ sync, over a real socket
def test_sync_client_against_a_live_server(
    live_url: str, ctl: rw.Controller, tmp_path: Path
) -> None:
    with Client(live_url, token="t0ken") as c:
        assert "127.0.0.1" in repr(c)
        decisions = [c.decide({**CTX, "n_fields": i}) for i in range(20)]
        results = [c.feedback(d.decision_id, OK) for d in decisions[:15]]
        assert all(not r.duplicate for r in results)
        assert c.feedback(decisions[0].decision_id, OK).duplicate
        assert [x.to_dict() for x in c.best_policy(CTX)] == [
            x.to_dict() for x in ctl.best_policy(CTX)
        ]
        assert c.status().to_dict() == ctl.status().to_dict()
        trace = list(c.trace())
        assert [t["decision_id"] for t in trace] == [d.decision_id for d in decisions]
        out = tmp_path / "trace.jsonl"
        assert c.export_trace(out) == 20
        assert [json.loads(x) for x in out.read_text().splitlines()] == trace
        assert c.export_trace(io.StringIO(), since=trace[-1]["ts"]) == 1
        with pytest.raises(rw.UnknownDecision):
            c.feedback("nope", OK)
        with pytest.raises(rw.InvalidContext) as e:
            c.decide({"n_fields": "many"})
        assert e.value.key == "n_fields"
        with pytest.raises(rw.InvalidOutcome) as e2:
            c.feedback(
                decisions[-1].decision_id, {"valid": "yes", "latency_ms": 1.0, "cost_usd": 0.0}
            )
        assert e2.value.field == "valid"
        assert c.alive() and c.ready()
        arm = ARMS[4].id
        c.pin(arm)
        assert c.health()[arm] == "pinned" and ctl.health()[arm] == "pinned"
        assert c.decide(CTX).arm.id == arm
        c.release(arm)
        c.quarantine(arm)
        assert c.health() == ctl.health() and ctl.health()[arm] == "quarantined"
        c.release(arm)
        assert [e.to_state for e in c.events()] == ["pinned", "healthy", "quarantined", "healthy"]
        assert c.events(limit=1) == ctl.events(1)
        with pytest.raises(rw.UnknownArm):
            c.pin("nope:x/direct_emit")
    with Client(live_url) as anon:
        with pytest.raises(APIError) as e3:
            anon.status()
        assert e3.value.status_code == 401
        with pytest.raises(APIError):
            list(anon.trace())
        with pytest.raises(APIError) as e4:
            anon.pin(ARMS[0])
        assert e4.value.status_code == 401
        assert anon.alive()
    with Client(live_url, token="") as empty:  # ROUTEWISE_TOKEN= : sent as no token at all
        with pytest.raises(APIError) as e5:
            empty.health()
        assert e5.value.status_code == 401


def test_sync_client_maps_odd_responses() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/arms":
            return httpx.Response(502, text="<html>bad gateway</html>")
        if request.url.path == "/v1/policy":
            return httpx.Response(
                418,
                json={
                    "error": "Teapot",
                    "field": None,
                    "reason": "short and stout",
                    "message": "teapot",
                },
            )
        return httpx.Response(
            503,
            json={
                "error": "StateError",
                "field": None,
                "reason": "disk full",
                "message": "disk full",
            },
        )

    with Client("http://rw", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(APIError) as e:
            c.status()
        assert e.value.status_code == 502 and "bad gateway" in str(e.value)
        with pytest.raises(APIError) as e2:
            c.best_policy()
        assert e2.value.error == "Teapot" and e2.value.body["reason"] == "short and stout"
        with pytest.raises(rw.StateError):
            c.decide(CTX)


def test_client_side_validation_matches_the_controller() -> None:
    c = Client("http://unused", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(rw.InvalidContext) as e:
        c.decide({"x": math.inf})
    assert e.value.key == "x"
    with pytest.raises(rw.InvalidContext):
        c.decide({"x": object()})
    with pytest.raises(rw.ConfigError):
        c.decide(CTX, arms="openai:gpt-5.4/direct_emit")
    with pytest.raises(rw.InvalidOutcome) as e2:
        c.feedback("d", {"valid": True, "latency_ms": math.nan, "cost_usd": 0.0})
    assert e2.value.field == "latency_ms"
    with pytest.raises(rw.UnknownDecision):
        c.feedback("", OK)
    c.close()


@pytest.mark.parametrize(
    ("status", "body", "kind", "attrs"),
    [
        (
            422,
            {"error": "InvalidContext", "field": "context.lang", "reason": "r", "key": "lang"},
            rw.InvalidContext,
            {"key": "lang"},
        ),
        (
            422,
            {"error": "InvalidContext", "field": "context", "reason": "r"},
            rw.InvalidContext,
            {"key": "<context>"},
        ),
        (
            422,
            {"error": "InvalidOutcome", "field": "outcome.cost_usd", "reason": "r"},
            rw.InvalidOutcome,
            {"field": "cost_usd"},
        ),
        (
            422,
            {"error": "ConfigError", "field": "reward.preset", "reason": "r"},
            rw.ConfigError,
            {"field": "reward.preset"},
        ),
        (
            422,
            {
                "error": "UnknownArm",
                "field": "arms",
                "reason": "r",
                "arm_id": "a/direct_emit",
                "known_arms": ["b/direct_emit"],
            },
            rw.UnknownArm,
            {"arm_id": "a/direct_emit", "known": ["b/direct_emit"]},
        ),
        (
            404,
            {
                "error": "UnknownDecision",
                "field": "decision_id",
                "reason": "r",
                "decision_id": "d1",
            },
            rw.UnknownDecision,
            {"decision_id": "d1"},
        ),
        (
            409,
            {
                "error": "FeedbackTooLate",
                "field": "decision_id",
                "reason": "r",
                "decision_id": "d1",
                "age_s": 9,
                "wait_s": 5,
            },
            rw.FeedbackTooLate,
            {"age_s": 9.0},
        ),
        (
            422,
            {"error": "NoEligibleArms", "field": "arms", "reason": "r", "message": "none"},
            rw.NoEligibleArms,
            {},
        ),
        (422, {"error": "PolicyError", "field": None, "reason": "r"}, rw.PolicyError, {}),
        (503, {"error": "StateError", "field": None, "reason": "r"}, rw.StateError, {}),
        (
            404,
            {"error": "UnknownDecision", "field": "decision_id"},
            APIError,
            {"status_code": 404},
        ),  # malformed
        (
            413,
            {"error": "PayloadTooLarge", "field": "body", "reason": "r"},
            APIError,
            {"field": "body"},
        ),
        (
            403,
            {"error": "Forbidden", "field": "Authorization", "reason": "r"},
            APIError,
            {"status_code": 403, "error": "Forbidden"},
        ),
        (
            404,
            {"error": "UnknownArm", "field": "arm_id", "reason": "r", "arm_id": "a/x"},
            rw.UnknownArm,
            {"arm_id": "a/x"},
        ),
        (500, ["not", "an", "object"], APIError, {"error": "HTTPError"}),
    ],
)
def test_error_from_response(
    status: int, body: Any, kind: type[Exception], attrs: dict[str, Any]
) -> None:
    err = error_from_response(status, body)
    assert type(err) is kind
    for k, v in attrs.items():
        assert getattr(err, k) == v
