"""The sidecar app in-process (httpx.ASGITransport): every endpoint and every error."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

import routewise as rw
from routewise.errors import ConfigError, StateError
from routewise.server import DEFAULT_MAX_BODY_BYTES, create_app
from routewise.state.memory import MemoryStore
from routewise.state.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

ARMS = rw.make_arms(["openai:gpt-5.4", "ollama:llama3"])
ARM_IDS = [a.id for a in ARMS]
CTX = {
    "task": "extraction",
    "schema_depth": 3,
    "n_fields": 12,
    "input_tokens": 900,
    "language": "zh",
}
OUTCOME = {"valid": True, "latency_ms": 840.0, "cost_usd": 0.0004}
TOKEN = "tok-3f9a1c-very-secret"


@pytest.fixture()
def ctl() -> Iterator[rw.Controller]:
    c = rw.Controller(arms=ARMS, seed=0)
    yield c
    c.close()


def client_for(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rw", **kw)


@pytest.fixture()
async def api(ctl: rw.Controller) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(ctl)) as c:
        yield c


def strict_json(text: str) -> Any:
    """json.loads that rejects NaN/Infinity (what non-Python clients do)."""

    def bad(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=bad)


async def decide(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await api.post("/v1/decide", json={"context": CTX, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = strict_json(r.text)
    return out


# ------------------------------------------------------------------ decide / feedback
async def test_decide_returns_a_logged_decision_with_exact_propensity(
    api: httpx.AsyncClient, ctl: rw.Controller
) -> None:
    d = await decide(api)
    assert d["arm"]["id"] in ARM_IDS
    assert d["arm"]["id"] == f"{d['arm']['backend']}/{d['arm']['mode']}"
    assert set(d["probabilities"]) == set(ARM_IDS) == set(d["scores"])
    assert math.isclose(sum(d["probabilities"].values()), 1.0)
    assert d["propensity"] == d["probabilities"][d["arm"]["id"]]
    assert d["policy"] == ctl.policy.name and d["reward"] == "balanced"
    rec = ctl.store.get_decision(d["decision_id"])
    assert rec is not None and rec.arm == d["arm"]["id"] and rec.propensity == d["propensity"]
    assert rec.context == CTX


async def test_decide_among_eligible_arms_with_reward_override_and_request_id(
    api: httpx.AsyncClient, ctl: rw.Controller
) -> None:
    eligible = ARM_IDS[:2]
    d = await decide(api, arms=eligible, reward="low_latency", request_id="req-7")
    assert d["arm"]["id"] in eligible and set(d["probabilities"]) == set(eligible)
    assert d["reward"] == "low_latency"
    d2 = await decide(api, reward={"preset": "balanced", "latency_budget_ms": 500})
    r = await api.post("/v1/feedback", json={"decision_id": d2["decision_id"], "outcome": OUTCOME})
    assert r.status_code == 200
    lines = [strict_json(x) for x in (await api.get("/v1/trace")).text.splitlines()]
    by_id = {x["decision_id"]: x for x in lines}
    assert by_id[d["decision_id"]]["request_id"] == "req-7"
    assert by_id[d2["decision_id"]]["reward_spec"]["latency_budget_ms"] == 500


async def test_feedback_learns_once_and_is_idempotent(
    api: httpx.AsyncClient, ctl: rw.Controller
) -> None:
    d = await decide(api)
    r1 = await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
    assert r1.status_code == 200, r1.text
    body = strict_json(r1.text)
    assert body == {
        "decision_id": d["decision_id"],
        "arm": d["arm"],
        "reward": ctl.reward(rw.Outcome(**OUTCOME)),
        "duplicate": False,
        "defaulted": False,
    }
    other = {"valid": False, "latency_ms": 1.0, "cost_usd": 0.0, "error": "timeout"}
    r2 = await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": other})
    assert r2.status_code == 200
    assert strict_json(r2.text) == {**body, "duplicate": True}
    assert ctl.status().feedbacks == 1
    fb = ctl.store.get_feedback(d["decision_id"])
    assert fb is not None and fb.reward == body["reward"]


async def test_feedback_with_score_and_error(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    d = await decide(api)
    outcome = {"valid": True, "latency_ms": 10.0, "cost_usd": 0.0, "score": 0.5, "error": None}
    r = await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": outcome})
    assert r.status_code == 200
    assert strict_json(r.text)["reward"] == ctl.reward(rw.Outcome(**outcome))


async def test_feedback_too_late_is_409() -> None:
    now = [1000.0]
    ctl = rw.Controller(arms=ARMS, seed=0, reward_wait_s=60, clock=lambda: now[0])
    async with client_for(create_app(ctl)) as api:
        d = await decide(api)
        now[0] += 61.0
        r = await api.post(
            "/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME}
        )
    assert r.status_code == 409
    body = strict_json(r.text)
    assert body["error"] == "FeedbackTooLate" and body["field"] == "decision_id"
    assert body["decision_id"] == d["decision_id"] and body["wait_s"] == 60 and body["age_s"] >= 61
    ctl.close()


async def test_infinite_scores_are_sent_as_null(ctl: rw.Controller) -> None:
    ucb = rw.Controller(arms=ARMS, policy="ucb1", seed=0)
    async with client_for(create_app(ucb)) as api:
        r = await api.post("/v1/decide", json={"context": CTX})
        assert r.status_code == 200
        d = strict_json(r.text)  # no Infinity in the JSON
        assert None in d["scores"].values()
        p = await api.get("/v1/policy")
        assert p.status_code == 200
        strict_json(p.text)
    ucb.close()


# ------------------------------------------------------------------ inspection
async def test_policy_matches_best_policy(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    for i in range(30):
        d = await decide(api)
        ok = d["arm"]["backend"] == "ollama:llama3"
        await api.post(
            "/v1/feedback",
            json={
                "decision_id": d["decision_id"],
                "outcome": {**OUTCOME, "valid": ok, "latency_ms": 100.0 + i},
            },
        )
    r = await api.get("/v1/policy")
    assert r.status_code == 200
    body = strict_json(r.text)
    assert body["policy"] == ctl.policy.name
    assert body["arms"] == [row.to_dict() for row in ctl.best_policy()]
    r = await api.get("/v1/policy", params={"context": json.dumps(CTX), "arms": ARM_IDS[3:]})
    assert strict_json(r.text)["arms"] == [
        row.to_dict() for row in ctl.best_policy(CTX, arms=ARM_IDS[3:])
    ]


async def test_arms_is_the_status(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    d = await decide(api)
    await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
    await decide(api)
    r = await api.get("/v1/arms")
    assert r.status_code == 200
    body = strict_json(r.text)
    assert body == ctl.status().to_dict()
    assert (body["decisions"], body["feedbacks"], body["pending"]) == (2, 1, 1)
    assert body["arms"][d["arm"]["id"]]["feedbacks"] == 1


async def test_trace_streams_the_jsonl_trace(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    ids = []
    for i in range(600):  # more than one streamed chunk
        d = ctl.decide({**CTX, "n_fields": i})
        ids.append(d.decision_id)
        if i % 2:
            ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=float(i), cost_usd=0.0))
    r = await api.get("/v1/trace")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [strict_json(x) for x in r.text.splitlines()]
    assert [x["decision_id"] for x in lines] == ids
    assert sum("reward" in x for x in lines) == 300
    import io

    buf = io.StringIO()
    ctl.export_trace(buf)
    assert lines == [json.loads(x) for x in buf.getvalue().splitlines()]
    cut = lines[400]["ts"]
    r = await api.get("/v1/trace", params={"since": cut})
    assert [strict_json(x)["decision_id"] for x in r.text.splitlines()] == [
        x["decision_id"] for x in lines if x["ts"] >= cut
    ]


async def test_health_ready_docs_openapi(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    docs = await api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = (await api.get("/openapi.json")).json()
    assert {
        "/v1/decide",
        "/v1/feedback",
        "/v1/policy",
        "/v1/arms",
        "/v1/trace",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(spec["paths"])
    arms_schema = spec["components"]["schemas"]["DecideIn"]["properties"]["arms"]["anyOf"][0]
    assert arms_schema["items"]["enum"] == ARM_IDS
    assert "securitySchemes" not in spec.get("components", {})


async def test_metrics(api: httpx.AsyncClient, ctl: rw.Controller) -> None:
    d = await decide(api)
    await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
    await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
    await api.post("/v1/feedback", json={"decision_id": "nope", "outcome": OUTCOME})
    r = await api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    arm = d["arm"]["id"]
    explored = "true" if d["explored"] else "false"
    assert f'routewise_decisions_total{{arm="{arm}",explored="{explored}"}} 1.0' in text
    assert f'routewise_feedback_total{{arm="{arm}",valid="true"}} 1.0' in text
    assert "routewise_feedback_duplicates_total 1.0" in text
    assert f'routewise_reward_count{{arm="{arm}"}} 1.0' in text
    assert f'routewise_outcome_latency_seconds_count{{arm="{arm}"}} 1.0' in text
    assert 'routewise_api_errors_total{error="UnknownDecision"} 1.0' in text
    assert (
        'routewise_http_requests_total{method="POST",route="/v1/feedback",status="200"} 2.0' in text
    )
    assert "routewise_pending_decisions 0.0" in text
    assert f'routewise_arm_mean_reward{{arm="{arm}"}}' in text


async def test_each_app_has_its_own_registry(ctl: rw.Controller) -> None:
    app1, app2 = create_app(ctl), create_app(ctl)
    async with client_for(app1) as a1, client_for(app2) as a2:
        await decide(a1)
        m2 = (await a2.get("/metrics")).text
    assert "routewise_decisions_total{" not in m2
    reg = CollectorRegistry()
    create_app(ctl, registry=reg)
    assert reg.get_sample_value("routewise_feedback_duplicates_total") == 0.0


# ------------------------------------------------------------------ bad input
BAD_REQUESTS: list[tuple[str, str, Any, int, str, str | None]] = [
    # (method, path, json body or raw bytes, status, error, field)
    ("POST", "/v1/decide", b"{bad json", 400, "MalformedJSON", "body"),
    ("POST", "/v1/decide", b"", 422, "InvalidRequest", "body"),
    ("POST", "/v1/decide", [1, 2], 422, "InvalidRequest", "body"),
    ("POST", "/v1/decide", {}, 422, "InvalidContext", "context"),
    ("POST", "/v1/decide", {"context": [1]}, 422, "InvalidContext", "context"),
    ("POST", "/v1/decide", {"context": {"a": {"b": 1}}}, 422, "InvalidContext", "context.a"),
    ("POST", "/v1/decide", {"context": {"a": [1, 2]}}, 422, "InvalidContext", "context.a"),
    ("POST", "/v1/decide", b'{"context": {"a": NaN}}', 422, "InvalidContext", "context.a"),
    ("POST", "/v1/decide", b'{"context": {"a": Infinity}}', 422, "InvalidContext", "context.a"),
    (
        "POST",
        "/v1/decide",
        b'{"context": {"a": 1' + b"0" * 400 + b"}}",
        422,
        "InvalidContext",
        "context.a",
    ),
    ("POST", "/v1/decide", {"context": {"": 1}}, 422, "InvalidContext", "context."),
    (
        "POST",
        "/v1/decide",
        {"context": {"schema_depth": "deep"}},
        422,
        "InvalidContext",
        "context.schema_depth",
    ),
    ("POST", "/v1/decide", {"context": CTX, "arms": []}, 422, "ConfigError", "arms"),
    (
        "POST",
        "/v1/decide",
        {"context": CTX, "arms": "openai:gpt-5.4/direct_emit"},
        422,
        "ConfigError",
        "arms",
    ),
    ("POST", "/v1/decide", {"context": CTX, "arms": [3]}, 422, "ConfigError", "arms[0]"),
    (
        "POST",
        "/v1/decide",
        {"context": CTX, "arms": ["nope:x/direct_emit"]},
        422,
        "UnknownArm",
        "arms",
    ),
    ("POST", "/v1/decide", {"context": CTX, "reward": "fastest"}, 422, "ConfigError", "reward"),
    (
        "POST",
        "/v1/decide",
        {"context": CTX, "reward": {"weights": {"speed": 1}}},
        422,
        "ConfigError",
        "reward.weights.speed",
    ),
    ("POST", "/v1/decide", {"context": CTX, "reward": 3}, 422, "InvalidRequest", None),
    ("POST", "/v1/decide", {"context": CTX, "request_id": 7}, 422, "InvalidRequest", "request_id"),
    ("POST", "/v1/decide", {"context": CTX, "colour": "red"}, 422, "InvalidRequest", "colour"),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "0" * 32, "outcome": OUTCOME},
        404,
        "UnknownDecision",
        "decision_id",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "", "outcome": OUTCOME},
        422,
        "InvalidRequest",
        "decision_id",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": 5, "outcome": OUTCOME},
        422,
        "InvalidRequest",
        "decision_id",
    ),
    ("POST", "/v1/feedback", {"decision_id": "x"}, 422, "InvalidOutcome", "outcome"),
    ("POST", "/v1/feedback", {"decision_id": "x", "outcome": 1}, 422, "InvalidOutcome", "outcome"),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {**OUTCOME, "latency_ms": -1}},
        422,
        "InvalidOutcome",
        "outcome.latency_ms",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {**OUTCOME, "cost_usd": "1"}},
        422,
        "InvalidOutcome",
        "outcome.cost_usd",
    ),
    (
        "POST",
        "/v1/feedback",
        b'{"decision_id": "x", "outcome": {"valid": true, "latency_ms": NaN, "cost_usd": 0}}',
        422,
        "InvalidOutcome",
        "outcome.latency_ms",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {**OUTCOME, "valid": "yes"}},
        422,
        "InvalidOutcome",
        "outcome.valid",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {**OUTCOME, "score": 1.5}},
        422,
        "InvalidOutcome",
        "outcome.score",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {**OUTCOME, "colour": 1}},
        422,
        "InvalidOutcome",
        "outcome.colour",
    ),
    (
        "POST",
        "/v1/feedback",
        {"decision_id": "x", "outcome": {"valid": True}},
        422,
        "InvalidOutcome",
        "outcome.latency_ms",
    ),
    ("GET", "/v1/policy?context=%7Bbad", None, 422, "InvalidContext", "context"),
    ("GET", "/v1/policy?context=%5B1%5D", None, 422, "InvalidContext", "context"),
    ("GET", "/v1/policy?context=%7B%22a%22%3A%7B%7D%7D", None, 422, "InvalidContext", "context.a"),
    ("GET", "/v1/policy?arms=nope%2Fdirect_emit", None, 422, "UnknownArm", "arms"),
    ("GET", "/v1/trace?since=yesterday", None, 422, "InvalidRequest", "since"),
    ("GET", "/v1/trace?since=nan", None, 422, "InvalidRequest", "since"),
    ("GET", "/v1/nothing", None, 404, "NotFound", None),
    ("GET", "/v1/decide", None, 405, "MethodNotAllowed", None),
    ("DELETE", "/v1/arms", None, 405, "MethodNotAllowed", None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "error", "field"), BAD_REQUESTS)
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient,
    ctl: rw.Controller,
    method: str,
    path: str,
    body: Any,
    status: int,
    error: str,
    field: str | None,
) -> None:
    ctl.decide({"schema_depth": 1})  # so that schema_depth is numeric
    before = (
        ctl.status().to_dict(),
        ctl.store.max_seq(),
        ctl.featurizer.to_state(),
        ctl.policy.to_state(),
    )
    kw: dict[str, Any] = {}
    if isinstance(body, bytes):
        kw = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kw = {"json": body}
    r = await api.request(method, path, **kw)
    assert r.status_code == status, r.text
    err = strict_json(r.text)
    assert err["error"] == error
    if field is not None:
        assert err["field"] == field
    assert err["reason"] and err["message"]
    after = (
        ctl.status().to_dict(),
        ctl.store.max_seq(),
        ctl.featurizer.to_state(),
        ctl.policy.to_state(),
    )
    assert after == before


async def test_oversized_bodies_are_413(ctl: rw.Controller) -> None:
    app = create_app(ctl, max_body_bytes=1000)
    big = json.dumps({"context": {"note": "x" * 2000}}).encode()
    async with client_for(app) as api:
        r = await api.post("/v1/decide", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for i in range(0, len(big), 100):
                yield big[i : i + 100]

        r = await api.post(
            "/v1/decide", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
        r = await api.post(
            "/v1/decide",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": "x"},
        )
        assert r.status_code == 400
        ok = await api.post("/v1/decide", json={"context": CTX})
        assert ok.status_code == 200
    assert ctl.status().decisions == 1
    assert DEFAULT_MAX_BODY_BYTES == 1 << 20


def test_create_app_rejects_bad_arguments(ctl: rw.Controller) -> None:
    with pytest.raises(ConfigError) as e:
        create_app(ctl, token="  ")
    assert e.value.field == "token"
    with pytest.raises(ConfigError):
        create_app(ctl, max_body_bytes=0)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    outcome=st.dictionaries(
        st.sampled_from(["valid", "latency_ms", "cost_usd", "error", "score", "extra"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=5)
        | st.lists(st.integers(), max_size=2),
    ),
    context=st.dictionaries(
        st.sampled_from(["task", "schema_depth", "n_fields", "strict", "x"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        max_size=4,
    ),
)
def test_arbitrary_json_never_5xx_and_valid_feedback_is_learned_once(
    ctl: rw.Controller, outcome: dict[str, Any], context: dict[str, Any]
) -> None:
    app = create_app(ctl)

    async def run() -> None:
        async with client_for(app) as api:
            r = await api.post(
                "/v1/decide",
                content=json.dumps({"context": context}),
                headers={"content-type": "application/json"},
            )
            assert r.status_code in (200, 422), r.text
            if r.status_code != 200:
                assert r.json()["error"] == "InvalidContext"
                d = ctl.decide({})
                did = d.decision_id
            else:
                did = r.json()["decision_id"]
            before = ctl.status().feedbacks
            body = json.dumps({"decision_id": did, "outcome": outcome})
            f = await api.post(
                "/v1/feedback", content=body, headers={"content-type": "application/json"}
            )
            try:
                expected: float | None = ctl.reward(rw.Outcome.from_dict(outcome))
            except rw.InvalidOutcome:
                expected = None
            except rw.RoutewiseError:
                expected = None
            if expected is None:
                assert f.status_code == 422, f.text
                assert f.json()["error"] == "InvalidOutcome"
                assert ctl.status().feedbacks == before
            else:
                assert f.status_code == 200, f.text
                assert f.json()["reward"] == expected
                assert ctl.status().feedbacks == before + 1

    asyncio.run(run())


# ------------------------------------------------------------------ security
async def test_token_is_required_except_for_health(ctl: rw.Controller) -> None:
    app = create_app(ctl, token=TOKEN)
    with capture_logs() as logs:
        async with client_for(app) as anon:
            for method, path in [
                ("POST", "/v1/decide"),
                ("GET", "/v1/policy"),
                ("GET", "/v1/arms"),
                ("GET", "/v1/trace"),
                ("GET", "/metrics"),
                ("GET", "/openapi.json"),
                ("GET", "/docs"),
            ]:
                r = await anon.request(
                    method, path, json={"context": CTX} if method == "POST" else None
                )
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["error"] == "Unauthorized" and r.json()["field"] == "Authorization"
            assert (await anon.get("/healthz")).status_code == 200
            assert (await anon.get("/readyz")).status_code == 200
            bad = await anon.get("/v1/arms", headers={"Authorization": "Bearer " + TOKEN[:-1]})
            assert bad.status_code == 401
            basic = await anon.get("/v1/arms", headers={"Authorization": "Basic " + TOKEN})
            assert basic.status_code == 401
        async with client_for(app, headers={"Authorization": f"Bearer {TOKEN}"}) as authed:
            d = await decide(authed)
            r = await authed.post(
                "/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME}
            )
            assert r.status_code == 200
            spec = (await authed.get("/openapi.json")).json()
            assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
            assert spec["paths"]["/v1/decide"]["post"]["security"] == [{"bearerAuth": []}]
            assert "security" not in spec["paths"]["/healthz"]["get"]
    assert ctl.status().decisions == 1
    assert logs and TOKEN not in repr(logs) and TOKEN[:-1] not in repr(logs)


async def test_every_token_refusal_says_what_to_do_next(ctl: rw.Controller) -> None:
    """An operator action on a sidecar without a token (403) says how to enable it: set
    ROUTEWISE_TOKEN (or ``token`` in routewise.toml), restart, send the bearer header; a
    missing or wrong token (401) says which token to send."""
    async with client_for(create_app(ctl)) as api:
        for path in ("/v1/arms/ollama:llama3/direct_emit/pin", "/v1/experiments/x/start"):
            r = await api.post(path)
            assert r.status_code == 403, path
            body = r.json()
            assert body["error"] == "Forbidden" and body["field"] == "Authorization"
            reason = body["reason"]
            for step in (
                "set ROUTEWISE_TOKEN=<secret>",
                'token = "<secret>" in routewise.toml',
                "restart `routewise serve`",
                "'Authorization: Bearer <secret>'",
                "--url",
            ):
                assert step in reason, (step, reason)
    assert ctl.health()["ollama:llama3/direct_emit"] == "healthy"
    async with client_for(create_app(ctl, token=TOKEN)) as api:
        missing = (await api.get("/v1/arms")).json()["reason"]
        wrong = (await api.get("/v1/arms", headers={"Authorization": "Bearer nope"})).json()
        for reason in (missing, wrong["reason"]):
            assert "the token this sidecar was started with" in reason
            assert "ROUTEWISE_TOKEN" in reason and "routewise.toml" in reason


async def test_secretstr_token(ctl: rw.Controller) -> None:
    from pydantic import SecretStr

    app = create_app(ctl, token=SecretStr(TOKEN))
    async with client_for(app, headers={"Authorization": f"bearer {TOKEN}"}) as api:
        assert (await api.get("/v1/arms")).status_code == 200


# ------------------------------------------------------------------ logs
async def test_one_canonical_log_line_per_request(api: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        d = await decide(api, request_id="r1")
        await api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
        await api.post(
            "/v1/feedback", json={"decision_id": "x", "outcome": {**OUTCOME, "latency_ms": -5}}
        )
        await api.get("/v1/arms")
    requests = [e for e in logs if e["event"] == "request"]
    assert len(requests) == 4
    dec, fb, bad, arms = requests
    assert dec["decision_id"] == d["decision_id"] and dec["arm"] == d["arm"]["id"]
    assert dec["propensity"] == round(d["propensity"], 6) and dec["request_id"] == "r1"
    assert dec["status"] == 200 and dec["path"] == "/v1/decide" and dec["duration_ms"] >= 0
    assert (
        fb["decision_id"] == d["decision_id"]
        and isinstance(fb["reward"], float)
        and fb["duplicate"] is False
    )
    assert (
        bad["status"] == 422
        and bad["error"] == "InvalidOutcome"
        and bad["field"] == "outcome.latency_ms"
    )
    assert arms["status"] == 200 and arms["path"] == "/v1/arms"
    assert all("context" not in e for e in requests)  # request contexts are never logged


# ------------------------------------------------------------------ durability
async def test_acknowledged_decisions_and_feedback_are_committed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ctl = rw.Controller(arms=ARMS, seed=0, store=path, durability="batch")
    async with client_for(create_app(ctl)) as api:
        decisions = await asyncio.gather(*(decide(api) for _ in range(40)))
        # a separate reader sees every acknowledged decision: it is durable (in the acklog
        # until the rows reach the tables; a reader serves both)
        other = SQLiteStore(path, read_only=True)
        assert all(other.get_decision(d["decision_id"]) is not None for d in decisions)
        other.close()
        results = await asyncio.gather(
            *(
                api.post("/v1/feedback", json={"decision_id": d["decision_id"], "outcome": OUTCOME})
                for d in decisions
            )
        )
        assert all(r.status_code == 200 for r in results)
        other = SQLiteStore(path, read_only=True)
        for r in results:
            fb = other.get_feedback(r.json()["decision_id"])
            assert fb is not None and fb.reward == r.json()["reward"]
        other.close()
    ctl.close()


class _FailingStore(MemoryStore):
    """A store that buffers and then fails to commit (a full disk, say)."""

    durability = "batch"

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def sync(self) -> None:
        if self.fail:
            raise StateError("disk full")


async def test_a_failed_commit_is_a_503_not_an_acknowledgement() -> None:
    store = _FailingStore()
    ctl = rw.Controller(arms=ARMS, seed=0, store=store)
    async with client_for(create_app(ctl)) as api:
        await decide(api)
        store.fail = True
        r = await api.post("/v1/decide", json={"context": CTX})
        assert r.status_code == 503
        assert r.json()["error"] == "StateError" and "disk full" in r.json()["reason"]
        assert (await api.get("/healthz")).status_code == 200
    store.fail = False
    ctl.close()


async def test_a_closed_controller_is_a_503(ctl: rw.Controller) -> None:
    async with client_for(create_app(ctl)) as api:
        ctl.close()
        r = await api.post("/v1/decide", json={"context": CTX})
    assert r.status_code == 503 and r.json()["error"] == "StateError"
