"""The routed call end to end against protocol-faithful fake provider servers on 127.0.0.1.

Every provider: decide → request in the provider's shape → the output codec decodes the
model's text → validation → Outcome (error categories, tokens, cost) → feedback to the
controller; nothing a provider does escapes ``Router.complete``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
import structlog
from fake_providers import FakeProviderServer
from pydantic import BaseModel, Field

import routewise as rw
from routewise.backends.base import ErrorCategory
from routewise.backends.modes import get_codec
from routewise.backends.pricing import prices_for
from routewise.errors import ConfigError


class Priority(StrEnum):
    low = "low"
    high = "high"


class Customer(BaseModel):
    name: str
    email: str | None = None


class Ticket(BaseModel):
    intent: str = Field(description="what the customer wants")
    priority: Priority
    tags: list[str]
    customer: Customer


TICKET = Ticket(
    intent="refund",
    priority=Priority.high,
    tags=["billing", "urgent"],
    customer=Customer(name="Ada"),
)
MSGS = [{"role": "user", "content": "I was charged twice, refund me now. — Ada"}]
ALL_PROVIDERS = ["openai", "azure_openai", "openai_compatible", "google_genai", "ollama", "bedrock"]


@pytest.fixture
def fake(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeProviderServer]:
    with FakeProviderServer(request.param) as server:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        yield server


def _router(fake: FakeProviderServer, modes: list[str] | None = None, **settings: Any) -> rw.Router:
    cfg = fake.backend_config(**settings)
    return rw.Router(backends={cfg.name: cfg}, modes=modes, seed=0)


@pytest.mark.parametrize("fake", ALL_PROVIDERS, indirect=True)
@pytest.mark.parametrize("mode", ["direct_emit", "transport_compressed", "local_reconstructed"])
def test_every_provider_and_mode_round_trips_a_valid_value(
    fake: FakeProviderServer, mode: str
) -> None:
    text = get_codec(mode, Ticket).encode(TICKET)  # what a perfect model would emit
    fake.queue("success", text=text, input_tokens=120, output_tokens=30)
    router = _router(fake, [mode], price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    try:
        result = router.complete_sync(Ticket, MSGS, context={"tenant": "acme"})
    finally:
        router.close()
    assert result.ok and result.value == TICKET
    r = result.receipt
    assert r.arm.mode.value == mode and r.parse_ok and r.schema_valid
    assert r.outcome.valid and r.outcome.error is None
    assert (r.input_tokens, r.output_tokens) == (120, 30)
    assert r.outcome.cost_usd == pytest.approx((120 * 2.0 + 30 * 8.0) / 1e6)
    assert r.outcome.latency_ms >= r.provider_ms > 0 and r.local_ms >= 0
    assert 0.0 <= r.reward <= 1.0 and r.propensity == 1.0
    # the request carried the codec's instructions as the system prompt
    body = json.dumps(fake.requests[-1].json)
    assert get_codec(mode, Ticket).instructions()[:40].replace('"', '\\"') in body


@pytest.mark.parametrize("fake", ["openai"], indirect=True)
def test_feedback_reaches_the_controller_and_is_stored(
    fake: FakeProviderServer, tmp_path: Path
) -> None:
    fake.set_default("success", text=get_codec("direct_emit", Ticket).encode(TICKET))
    cfg = fake.backend_config()
    db = tmp_path / "rw.db"
    with rw.Router(
        backends={cfg.name: cfg}, modes=["direct_emit", "local_reconstructed"], store=db, seed=1
    ) as router:
        ids = [router.complete_sync(Ticket, MSGS).receipt.decision_id for _ in range(5)]
        st = router.controller.status()
        assert st.decisions == 5 and st.feedbacks == 5
    trace = tmp_path / "t.jsonl"
    with rw.Controller(store=db) as ctl:
        ctl.export_trace(trace)
    rows = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["decision_id"] for r in rows] == ids
    # auto context: schema size/depth and prompt length join the caller's context
    assert rows[0]["context"]["schema"] == "Ticket"
    assert rows[0]["context"]["n_fields"] == 5 and rows[0]["context"]["schema_depth"] == 2
    assert all("reward" in r and "outcome" in r for r in rows)


ERROR_CASES = [
    ("rate_limited", {"retry_after": 3}, ErrorCategory.rate_limited),
    ("server_error", {"status": 503}, ErrorCategory.server_error),
    ("auth_error", {}, ErrorCategory.auth_error),
    ("bad_request", {}, ErrorCategory.bad_request),
    ("malformed", {"body": "non_json"}, ErrorCategory.bad_response),
    ("malformed", {"body": "truncated"}, ErrorCategory.bad_response),
    ("disconnect", {}, ErrorCategory.connection_error),
    ("truncated", {}, ErrorCategory.truncated),
]


@pytest.mark.parametrize("fake", ALL_PROVIDERS, indirect=True)
@pytest.mark.parametrize(
    ("kind", "kw", "category"), ERROR_CASES, ids=[f"{c[0]}-{c[2].value}" for c in ERROR_CASES]
)
def test_provider_failures_become_outcomes_never_exceptions(
    fake: FakeProviderServer, kind: str, kw: dict[str, Any], category: ErrorCategory
) -> None:
    fake.queue(kind, **kw)
    router = _router(fake, ["direct_emit"])
    try:
        result = router.complete_sync(Ticket, MSGS)
        st = router.controller.status()
    finally:
        router.close()
    assert result.value is None and not result.ok
    r = result.receipt
    assert r.outcome.error == category.value, (r.outcome, r.message)
    assert not r.outcome.valid
    assert st.feedbacks == 1  # the failure was learned from
    if kind == "rate_limited" and fake.provider != "google_genai":
        assert r.retry_after_s == pytest.approx(3.0)


@pytest.mark.parametrize("fake", ["openai", "google_genai", "bedrock"], indirect=True)
def test_refusal_and_timeout_categories(fake: FakeProviderServer) -> None:
    fake.queue("refusal")
    fake.queue("timeout", delay=1.5)
    router = _router(fake, ["direct_emit"], timeout_s=0.5)
    try:
        refused = router.complete_sync(Ticket, MSGS)
        timed_out = router.complete_sync(Ticket, MSGS)
    finally:
        router.close()
    assert refused.receipt.outcome.error == "refusal" and refused.value is None
    assert timed_out.receipt.outcome.error == "timeout" and timed_out.value is None


@pytest.mark.parametrize("fake", ["openai_compatible"], indirect=True)
def test_model_output_failures(fake: FakeProviderServer) -> None:
    # unparseable in its mode -> malformed_output; parseable but schema-invalid -> invalid, no error
    fake.queue("success", text="Sure! Here is your ticket: intent refund")
    fake.queue(
        "success",
        text='{"intent": "refund", "priority": "medium", "tags": [], "customer": {"name": "A"}}',
    )
    router = _router(fake, ["direct_emit"])
    try:
        garbage = router.complete_sync(Ticket, MSGS)
        invalid = router.complete_sync(Ticket, MSGS)
    finally:
        router.close()
    g = garbage.receipt
    assert g.outcome.error == "malformed_output" and not g.parse_ok and garbage.value is None
    v = invalid.receipt
    assert v.parse_ok and not v.schema_valid and v.outcome.error is None and not v.outcome.valid
    assert v.failed_fields == ("priority",)
    assert v.output_tokens > 0 and v.text is not None


@pytest.mark.parametrize("fake", ["openai_compatible"], indirect=True)
def test_constrained_decoding_per_backend_setting(fake: FakeProviderServer) -> None:
    fake.set_default("success", text="x")
    shapes = {}
    for constrain in ("grammar", "json_schema", "none", "auto"):
        router = _router(fake, None, constrain=constrain)
        try:
            for arm in router.arms:
                router.complete_sync(Ticket, MSGS, arms=[arm])
                body = fake.requests[-1].json
                shapes[(constrain, arm.mode.value)] = (
                    "grammar"
                    if "grammar" in body
                    else body.get("response_format", {}).get("type", "none")
                )
        finally:
            router.close()
    # a grammar serves every mode: the JSON forms go as their schema (llama.cpp compiles
    # it to a grammar), the line form as its GBNF grammar
    assert shapes[("grammar", "local_reconstructed")] == "grammar"
    assert shapes[("grammar", "direct_emit")] == "json_schema"
    assert shapes[("json_schema", "local_reconstructed")] == "none"  # not a JSON form
    assert shapes[("json_schema", "transport_compressed")] == "json_schema"
    assert all(
        shapes[("none", m)] == "none"
        for m in ("direct_emit", "transport_compressed", "local_reconstructed")
    )
    assert shapes[("auto", "direct_emit")] == "json_schema"
    assert shapes[("auto", "local_reconstructed")] == "grammar"


@pytest.mark.parametrize("fake", ["openai_compatible"], indirect=True)
def test_llama_cpp_python_schema_shape(fake: FakeProviderServer) -> None:
    fake.queue("success", text=get_codec("direct_emit", Ticket).encode(TICKET))
    router = _router(fake, ["direct_emit"], schema_format="json_object", constrain="json_schema")
    try:
        assert router.complete_sync(Ticket, MSGS).ok
    finally:
        router.close()
    rf = fake.requests[-1].json["response_format"]
    assert rf["type"] == "json_object" and rf["schema"]["type"] == "object"


def test_fallback_tries_the_next_arm_and_logs_each_attempt() -> None:
    with FakeProviderServer("openai") as bad, FakeProviderServer("ollama") as good:
        bad.set_default("server_error", status=502)
        good.set_default("success", text=get_codec("direct_emit", Ticket).encode(TICKET))
        cb, cg = bad.backend_config(), good.backend_config()
        with rw.Router(
            backends={cb.name: cb, cg.name: cg},
            modes=["direct_emit"],
            policy="uniform",  # keeps drawing the failing arm first now and then
            guardian=False,
            seed=0,
        ) as router:
            # without fallback a failing arm returns its failure
            first = router.complete_sync(Ticket, MSGS, arms=[f"{cb.name}/direct_emit"])
            assert first.value is None and len(first.attempts) == 1
            attempts = 1
            fell_back = 0
            for _ in range(8):
                res = router.complete_sync(Ticket, MSGS, fallback=True)
                assert res.ok and res.value == TICKET
                assert res.receipt.arm.backend == cg.name
                attempts += len(res.attempts)
                if len(res.attempts) == 2:
                    fell_back += 1
                    a, b = res.attempts
                    assert a.arm.backend == cb.name and a.outcome.error == "server_error"
                    assert a.decision_id != b.decision_id
            st = router.controller.status()
            assert st.decisions == st.feedbacks == attempts  # each attempt is its own decision
            assert fell_back >= 1


@pytest.mark.parametrize("fake", ["openai"], indirect=True)
def test_score_callable_grades_correctness(fake: FakeProviderServer) -> None:
    fake.set_default("success", text=get_codec("direct_emit", Ticket).encode(TICKET))
    with _router(fake, ["direct_emit"]) as router:
        right = router.complete_sync(Ticket, MSGS, score=lambda t: float(t.intent == "refund"))
        wrong = router.complete_sync(Ticket, MSGS, score=lambda t: float(t.intent == "shipping"))
    assert right.receipt.outcome.score == 1.0 and wrong.receipt.outcome.score == 0.0
    assert right.receipt.reward > wrong.receipt.reward


@pytest.mark.anyio
async def test_async_complete_concurrently() -> None:
    import anyio

    with FakeProviderServer("openai") as fake:
        fake.set_default(
            "success", text=get_codec("transport_compressed", Ticket).encode(TICKET), delay=0.05
        )
        cfg = fake.backend_config()
        results: list[Any] = []
        async with rw.Router(
            backends={cfg.name: cfg}, modes=["transport_compressed"], seed=0
        ) as router:

            async def one() -> None:
                results.append(await router.complete(Ticket, MSGS))

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(one)
            assert router.controller.status().feedbacks == 8
        assert all(r.value == TICKET for r in results)


@pytest.mark.parametrize("fake", ALL_PROVIDERS, indirect=True)
def test_api_keys_never_appear_in_receipts_or_logs(fake: FakeProviderServer) -> None:
    secret = fake.api_key or fake.aws_secret_access_key
    fake.queue("auth_error", echo_key=True)
    fake.queue("success", text=get_codec("direct_emit", Ticket).encode(TICKET))
    with structlog.testing.capture_logs() as logs:
        router = _router(fake, ["direct_emit"])
        router.controller.log_decisions = True
        try:
            results = [router.complete_sync(Ticket, MSGS) for _ in range(2)]
        finally:
            router.close()
    blob = (
        json.dumps([r.receipt.to_dict() for r in results])
        + repr(results)
        + json.dumps(logs, default=str)
    )
    assert secret and secret not in blob
    assert results[0].receipt.outcome.error == "auth_error"


def test_bad_caller_input_raises_config_errors_naming_the_field() -> None:
    with rw.Router(backends={"ollama:llama3": {}}, seed=0) as router:
        with pytest.raises(ConfigError, match=r"messages\[0\]\.role"):
            router.complete_sync(Ticket, [{"role": "robot", "content": "hi"}])
        with pytest.raises(ConfigError, match="messages"):
            router.complete_sync(Ticket, [])
        with pytest.raises(ConfigError, match="schema"):
            router.complete_sync(dict, MSGS)  # type: ignore[arg-type]
        assert router.controller.status().decisions == 0  # nothing was decided
    with pytest.raises(ConfigError, match="provider"):
        rw.Router(backends={"nosuch:model": {}})
    with pytest.raises(ConfigError, match=r"timeout_s"):
        rw.Router(backends={"openai:gpt-4o-mini": {"timeout_s": -1}})
    with pytest.raises(ConfigError, match=r"backends\['openai:gpt-4o-mini'\]\.colour"):
        rw.Router(backends={"openai:gpt-4o-mini": {"colour": "blue"}})


def test_from_config_reads_backend_tables(tmp_path: Path) -> None:
    with FakeProviderServer("ollama") as fake:
        fake.set_default("success", text=get_codec("local_reconstructed", Ticket).encode(TICKET))
        cfg = tmp_path / "routewise.toml"
        cfg.write_text(
            f"""
modes = ["local_reconstructed"]
seed = 4
reward = "low_latency"
[backends."ollama:llama3.2"]
base_url = "{fake.base_url}"
timeout_s = 5
price_input_per_mtok = 0.0
price_output_per_mtok = 0.0
[backends."ollama:llama3.2".sampler]
temperature = 0.0
seed = 7
"""
        )
        with rw.Router.from_config(cfg) as router:
            assert [a.id for a in router.arms] == ["ollama:llama3.2/local_reconstructed"]
            res = router.complete_sync(Ticket, MSGS)
            assert res.value == TICKET
        assert fake.requests[-1].json["options"]["seed"] == 7


def test_default_prices_are_used_and_overridable() -> None:
    from routewise.backends.base import BackendConfig

    shipped = prices_for(BackendConfig.for_name("openai:gpt-4o-mini"))
    assert shipped[0] > 0 and shipped[1] > shipped[0]
    assert prices_for(
        BackendConfig.for_name(
            "openai:gpt-4o-mini", price_input_per_mtok=1.0, price_output_per_mtok=2.0
        )
    ) == (1.0, 2.0)
    assert prices_for(BackendConfig.for_name("ollama:llama3")) == (0.0, 0.0)
