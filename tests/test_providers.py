"""Provider clients against real fake HTTP servers on 127.0.0.1 (``fake_providers``).

Every provider × every outcome category: the exact request it sends (path, auth, body,
constraint shape, sampler), usage and cost, and each error category, rendered by the fake in
the provider's documented format. Plus Gemini schema conversion, the OpenAI-compatible
constraint shapes, Bedrock SigV4 verified by the fake, and no secret in any error or log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any, Literal

import httpx
import pytest
from fake_providers import PROVIDERS, FakeProviderServer, unused_port
from pydantic import BaseModel, Field
from structlog.testing import capture_logs

from routewise.backends.base import (
    BackendConfig,
    Completion,
    Constraint,
    ErrorCategory,
    GenerationRequest,
    ProviderError,
    Usage,
)
from routewise.backends.pricing import DEFAULT_PRICES, cost_usd, prices_for
from routewise.backends.providers import (
    AzureOpenAIProvider,
    BedrockProvider,
    GeminiProvider,
    OllamaProvider,
    OpenAICompatibleProvider,
    OpenAIProvider,
    Provider,
    make_provider,
)
from routewise.backends.providers.base import parse_retry_after
from routewise.backends.providers.gemini import SchemaConversionError, to_gemini_schema
from routewise.errors import ConfigError

MESSAGES = [
    {"role": "system", "content": "Answer with one JSON object."},
    {"role": "user", "content": "Refund my order 42, please."},
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"intent": {"type": "string"}, "priority": {"type": "integer"}},
    "required": ["intent", "priority"],
    "additionalProperties": False,
}
SAMPLER = {"temperature": 0.2, "top_p": 0.9, "seed": 7}


def schema_request(**kw: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=MESSAGES,
        constraint=Constraint("Ticket", json_schema=SCHEMA),
        constrain="json_schema",
        max_tokens=256,
        **kw,
    )


def plain_request(**kw: Any) -> GenerationRequest:
    return GenerationRequest(messages=MESSAGES, max_tokens=256, **kw)


async def run(cfg: BackendConfig, request: GenerationRequest | None = None) -> Completion:
    async with make_provider(cfg) as provider:
        return await provider.generate(request or plain_request())


async def fail(cfg: BackendConfig, request: GenerationRequest | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await run(cfg, request)
    return info.value


@pytest.fixture(params=PROVIDERS)
def fake(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeProviderServer]:
    """One fake server per provider (Bedrock credentials in the environment)."""
    with FakeProviderServer(request.param) as server:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture()
def fake_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeProviderServer]]:
    """Start a fake for a named provider (closed at teardown)."""
    with ExitStack() as stack:

        def start(provider: str, **kw: Any) -> FakeProviderServer:
            server = stack.enter_context(FakeProviderServer(provider, **kw))
            for name, value in server.env.items():
                monkeypatch.setenv(name, value)
            return server

        yield start


# ----------------------------------------------------------------------------- request shapes
@pytest.mark.anyio
async def test_openai_request_and_response(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("openai")
    fake.queue(
        "success", text='{"intent": "refund", "priority": 2}', input_tokens=1200, output_tokens=300
    )
    cfg = fake.backend_config(sampler=SAMPLER)
    completion = await run(cfg, schema_request())

    req = fake.last_request
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {fake.api_key}"
    assert req.headers["content-type"] == "application/json"
    assert req.json == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Ticket", "strict": True, "schema": SCHEMA},
        },
    }
    assert completion == Completion(
        text='{"intent": "refund", "priority": 2}',
        usage=Usage(1200, 300),
        finish_reason="stop",
        model="gpt-4o-mini-2024-07-18",
    )
    assert cost_usd(completion.usage, cfg) == pytest.approx(1200 * 0.15e-6 + 300 * 0.60e-6)


@pytest.mark.anyio
async def test_openai_request_sampler_overrides_config_and_plain_request_has_no_format(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("openai")
    await run(fake.backend_config(sampler=SAMPLER), plain_request(sampler={"temperature": 1.0}))
    body = fake.last_request.json
    assert body["temperature"] == 1.0 and body["seed"] == 7
    assert "response_format" not in body


@pytest.mark.anyio
async def test_azure_request_and_response(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("azure_openai")
    fake.queue("success", text="{}", input_tokens=50, output_tokens=2)
    cfg = fake.backend_config("gpt-4o", sampler={"temperature": 0.0})
    completion = await run(cfg, schema_request())

    req = fake.last_request
    assert req.path == "/openai/deployments/test-deployment/chat/completions"
    assert req.query == {"api-version": "2024-10-21"}
    assert req.headers["api-key"] == fake.api_key
    assert "authorization" not in req.headers
    assert "model" not in req.json
    assert req.json["max_completion_tokens"] == 256
    assert req.json["response_format"]["json_schema"]["schema"] == SCHEMA
    assert completion.usage == Usage(50, 2)
    assert cost_usd(completion.usage, cfg) == pytest.approx(50 * 2.5e-6 + 2 * 10e-6)


@pytest.mark.anyio
async def test_azure_deployment_defaults_to_model_and_api_version_is_configurable(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("azure_openai")
    await run(
        fake.backend_config("gpt-4.1-mini", deployment=None, api_version="2025-04-01-preview")
    )
    assert fake.last_request.path == "/openai/deployments/gpt-4.1-mini/chat/completions"
    assert fake.last_request.query["api-version"] == "2025-04-01-preview"


@pytest.mark.anyio
async def test_openai_compatible_constraint_shapes(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("openai_compatible")
    sampler = {"temperature": 0.0, "repeat_penalty": 1.1, "top_k": 40, "min_p": 0.05}

    await run(fake.backend_config(sampler=sampler), schema_request())
    body = fake.last_request.json
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Ticket", "strict": True, "schema": SCHEMA},
    }
    assert body["max_tokens"] == 256 and "max_completion_tokens" not in body
    assert {k: body[k] for k in sampler} == sampler
    assert "authorization" not in fake.last_request.headers

    await run(fake.backend_config(schema_format="json_object"), schema_request())
    assert fake.last_request.json["response_format"] == {"type": "json_object", "schema": SCHEMA}

    grammar = 'root ::= "{" ws "\\"intent\\":" ws string "}"'
    request = GenerationRequest(
        messages=MESSAGES, constraint=Constraint("Ticket", grammar=grammar), constrain="grammar"
    )
    await run(fake.backend_config(), request)
    body = fake.last_request.json
    assert body["grammar"] == grammar
    assert "response_format" not in body


@pytest.mark.anyio
async def test_openai_compatible_key_is_optional_and_usage_may_be_missing(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("openai_compatible", api_key="local-secret")
    fake.queue("success", usage=False)
    completion = await run(fake.backend_config())
    assert fake.last_request.headers["authorization"] == "Bearer local-secret"
    assert completion.usage == Usage(0, 0)
    cfg = fake.backend_config()
    assert prices_for(cfg) == (0.0, 0.0)


@pytest.mark.anyio
async def test_gemini_request_and_response(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("google_genai")
    fake.queue(
        "success",
        text='{"intent": "refund", "priority": 2}',
        parts=3,
        thought="Let me think about the schema.",
        input_tokens=1000,
        output_tokens=20,
        thoughts_tokens=80,
    )
    sampler = {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop": "\n\n"}
    cfg = fake.backend_config(sampler=sampler)
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": "{"},
        {"role": "user", "content": "go on"},
    ]
    request = GenerationRequest(
        messages=messages,
        constraint=Constraint("Ticket", json_schema=SCHEMA),
        constrain="json_schema",
        max_tokens=256,
    )
    completion = await run(cfg, request)

    req = fake.last_request
    assert req.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert req.headers["x-goog-api-key"] == fake.api_key
    assert "authorization" not in req.headers and "key" not in req.query
    assert req.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "Refund my order 42, please."}]},
            {"role": "model", "parts": [{"text": "{"}]},
            {"role": "user", "parts": [{"text": "go on"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Answer with one JSON object."}]},
        "generationConfig": {
            "maxOutputTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "topK": 40,
            "stopSequences": ["\n\n"],
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "OBJECT",
                "properties": {"intent": {"type": "STRING"}, "priority": {"type": "INTEGER"}},
                "propertyOrdering": ["intent", "priority"],
                "required": ["intent", "priority"],
            },
        },
    }
    assert completion.text == '{"intent": "refund", "priority": 2}'
    assert completion.usage == Usage(1000, 100)  # thinking tokens are billed as output
    assert completion.model == "gemini-2.5-flash"
    assert cost_usd(completion.usage, cfg) == pytest.approx(1000 * 0.30e-6 + 100 * 2.50e-6)


@pytest.mark.anyio
async def test_ollama_request_and_response(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("ollama")
    fake.queue(
        "success", text='{"intent": "refund", "priority": 2}', input_tokens=33, output_tokens=12
    )
    cfg = fake.backend_config(sampler={"temperature": 0.0, "top_k": 20, "repeat_penalty": 1.05})
    completion = await run(cfg, schema_request())

    req = fake.last_request
    assert req.path == "/api/chat"
    assert "authorization" not in req.headers
    assert req.json == {
        "model": "llama3.1:8b",
        "messages": MESSAGES,
        "stream": False,
        "options": {"temperature": 0.0, "top_k": 20, "repeat_penalty": 1.05, "num_predict": 256},
        "format": SCHEMA,
    }
    assert completion == Completion(
        '{"intent": "refund", "priority": 2}', Usage(33, 12), "stop", "llama3.1:8b"
    )
    assert cost_usd(completion.usage, cfg) == 0.0


@pytest.mark.anyio
async def test_ollama_missing_prompt_eval_count_counts_zero_and_sends_key_when_set(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("ollama", api_key="proxy-key")
    body = {
        "model": "llama3.1:8b",
        "message": {"role": "assistant", "content": "hi"},
        "done": True,
        "done_reason": "stop",
        "eval_count": 3,
    }
    fake.queue("raw", status=200, body=body)
    completion = await run(fake.backend_config())
    assert completion.usage == Usage(0, 3)
    assert fake.last_request.headers["authorization"] == "Bearer proxy-key"


@pytest.mark.anyio
async def test_bedrock_request_signed_and_verified(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("bedrock")
    fake.queue("success", text="ok", input_tokens=1000, output_tokens=100)
    cfg = fake.backend_config(
        sampler={"temperature": 0.2, "top_p": 0.9, "stop": ["END"], "top_k": 50}
    )
    messages = [*MESSAGES, {"role": "user", "content": "Order 42."}]
    completion = await run(cfg, GenerationRequest(messages=messages, max_tokens=256))

    req = fake.last_request
    assert req.path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    auth = req.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={fake.aws_access_key_id}/")
    assert "/us-east-1/bedrock/aws4_request, SignedHeaders=" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "content-type"} <= set(signed)
    assert req.headers["x-amz-date"].startswith(auth.split("/")[1])  # the scope's date
    assert req.json == {
        "messages": [
            {
                "role": "user",
                "content": [{"text": "Refund my order 42, please."}, {"text": "Order 42."}],
            }
        ],
        "system": [{"text": "Answer with one JSON object."}],
        "inferenceConfig": {
            "maxTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        "additionalModelRequestFields": {"top_k": 50},
    }
    assert completion == Completion(
        "ok", Usage(1000, 100), "stop", "anthropic.claude-3-5-haiku-20241022-v1:0"
    )
    assert cost_usd(completion.usage, cfg) == pytest.approx(1000 * 0.8e-6 + 100 * 4e-6)


@pytest.mark.anyio
async def test_bedrock_structured_output_for_documented_models(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("bedrock")
    cfg = fake.backend_config("us.anthropic.claude-haiku-4-5-20251001-v1:0")
    provider = make_provider(cfg)
    assert provider.supports_json_schema
    assert not make_provider(fake.backend_config("amazon.nova-lite-v1:0")).supports_json_schema
    async with provider:
        await provider.generate(schema_request())
    assert fake.last_request.path == "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse"
    fmt = fake.last_request.json["outputConfig"]["textFormat"]
    assert fmt["type"] == "json_schema"
    assert fmt["structure"]["jsonSchema"]["name"] == "Ticket"
    assert json.loads(fmt["structure"]["jsonSchema"]["schema"]) == SCHEMA


# ----------------------------------------------------------------------------- outcome matrix
EXPECTED_AUTH_STATUS = {
    "openai": 401,
    "azure_openai": 401,
    "openai_compatible": 401,
    "google_genai": 400,  # Gemini answers an invalid key with 400 INVALID_ARGUMENT / API_KEY_INVALID
    "ollama": 401,
    "bedrock": 403,
}
EXPECTED_RETRY = {"google_genai": 7.0, "bedrock": None}  # others: the 2 s Retry-After


@pytest.mark.anyio
async def test_usage_tokens_and_cost(fake: FakeProviderServer) -> None:
    fake.queue("success", text="{}", input_tokens=2000, output_tokens=500)
    cfg = fake.backend_config(price_input_per_mtok=1.0, price_output_per_mtok=4.0)
    completion = await run(cfg)
    assert completion.usage == Usage(2000, 500)
    assert completion.finish_reason == "stop"
    assert cost_usd(completion.usage, cfg) == pytest.approx(0.004)


@pytest.mark.anyio
async def test_timeout(fake: FakeProviderServer) -> None:
    fake.queue("timeout", delay=1.5)
    t0 = time.perf_counter()
    error = await fail(fake.backend_config(timeout_s=0.25))
    assert error.category is ErrorCategory.timeout
    assert time.perf_counter() - t0 < 1.2


@pytest.mark.anyio
async def test_rate_limited(fake: FakeProviderServer) -> None:
    fake.queue("rate_limited")
    error = await fail(fake.backend_config())
    assert (error.category, error.status) == (ErrorCategory.rate_limited, 429)
    assert error.retry_after_s == EXPECTED_RETRY.get(fake.provider, 2.0)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 503])
async def test_server_error(fake: FakeProviderServer, status: int) -> None:
    fake.queue("server_error", status=status)
    error = await fail(fake.backend_config())
    assert (error.category, error.status) == (ErrorCategory.server_error, status)


@pytest.mark.anyio
async def test_auth_error(fake: FakeProviderServer) -> None:
    fake.queue("auth_error")
    error = await fail(fake.backend_config())
    assert (error.category, error.status) == (
        ErrorCategory.auth_error,
        EXPECTED_AUTH_STATUS[fake.provider],
    )


@pytest.mark.anyio
async def test_bad_request(fake: FakeProviderServer) -> None:
    fake.queue("bad_request")
    error = await fail(fake.backend_config())
    assert error.category is ErrorCategory.bad_request
    assert error.status == (404 if fake.provider == "ollama" else 400)


@pytest.mark.anyio
@pytest.mark.parametrize("body", ["non_json", "truncated", "missing_fields"])
async def test_malformed_body_is_bad_response(fake: FakeProviderServer, body: str) -> None:
    fake.queue("malformed", body=body)
    error = await fail(fake.backend_config())
    assert (error.category, error.status) == (ErrorCategory.bad_response, 200)


@pytest.mark.anyio
async def test_connection_refused(fake: FakeProviderServer) -> None:
    dead = f"http://127.0.0.1:{unused_port()}{fake.protocol.base_path}"
    error = await fail(fake.backend_config(base_url=dead))
    assert error.category is ErrorCategory.connection_error
    assert "ConnectError" in error.message


@pytest.mark.anyio
async def test_disconnect_without_response(fake: FakeProviderServer) -> None:
    fake.queue("disconnect")
    error = await fail(fake.backend_config())
    assert error.category is ErrorCategory.connection_error


@pytest.mark.anyio
async def test_truncated_is_a_length_completion(fake: FakeProviderServer) -> None:
    fake.queue("truncated", text='{"intent": "ref', input_tokens=40, output_tokens=16)
    completion = await run(fake.backend_config())
    assert (completion.text, completion.finish_reason) == ('{"intent": "ref', "length")
    assert completion.usage == Usage(40, 16)


@pytest.mark.anyio
async def test_refusal(fake: FakeProviderServer) -> None:
    fake.queue("refusal")
    cfg = fake.backend_config()
    if fake.provider == "azure_openai":  # a filtered prompt: HTTP 400 content_filter
        error = await fail(cfg)
        assert (error.category, error.status) == (ErrorCategory.refusal, 400)
        assert "content management policy" in error.message
        return
    completion = await run(cfg)
    if fake.provider == "ollama":  # no refusal signal: plain text for the mode to reject
        assert (completion.finish_reason, completion.text) == ("stop", "I can't help with that.")
        return
    assert completion.finish_reason == "refusal"
    assert completion.usage.input_tokens == 10


@pytest.mark.anyio
async def test_wrong_credentials_are_rejected_by_the_fake(fake: FakeProviderServer) -> None:
    if fake.provider == "bedrock":
        cfg = fake.backend_config(aws_secret_access_key_env="ROUTEWISE_FAKE_WRONG_SECRET")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ROUTEWISE_FAKE_WRONG_SECRET", "not/the/right/secret/key/at/all/00000000")
            error = await fail(cfg)
        assert "InvalidSignatureException" in error.message
    else:
        fake.api_key = "the-key-the-fake-accepts"
        error = await fail(fake.backend_config(api_key="some-other-key-0000"))
    assert error.category is ErrorCategory.auth_error


@pytest.mark.anyio
async def test_grammar_only_on_openai_compatible(fake: FakeProviderServer) -> None:
    request = GenerationRequest(
        messages=MESSAGES, constraint=Constraint("g", grammar='root ::= "a"'), constrain="grammar"
    )
    provider = make_provider(fake.backend_config())
    assert provider.supports_grammar is (fake.provider == "openai_compatible")
    if fake.provider == "openai_compatible":
        await run(fake.backend_config(), request)
        return
    error = await fail(fake.backend_config(), request)
    assert error.category is ErrorCategory.bad_request
    assert fake.requests == []


@pytest.mark.anyio
async def test_json_schema_constraint_without_schema_is_bad_request(
    fake: FakeProviderServer,
) -> None:
    request = GenerationRequest(
        messages=MESSAGES, constraint=Constraint("x"), constrain="json_schema"
    )
    error = await fail(fake.backend_config(), request)
    assert error.category is ErrorCategory.bad_request
    assert fake.requests == []


@pytest.mark.anyio
async def test_unserializable_sampler_is_bad_request(fake: FakeProviderServer) -> None:
    for sampler in ({"temperature": float("nan")}, {"logit_bias": object()}):
        error = await fail(fake.backend_config(), plain_request(sampler=sampler))
        assert error.category is ErrorCategory.bad_request
        assert "JSON-serializable" in error.message
    assert fake.requests == []


# ----------------------------------------------------------------------------- provider details
@pytest.mark.anyio
async def test_openai_refusal_field_and_content_filter(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("openai")
    fake.queue("refusal", text="I can't assist with that.")
    fake.queue("refusal", mode="content_filter")
    first = await run(fake.backend_config())
    second = await run(fake.backend_config())
    assert (first.text, first.finish_reason) == ("I can't assist with that.", "refusal")
    assert (second.text, second.finish_reason) == ("", "refusal")


@pytest.mark.anyio
async def test_azure_output_content_filter_is_a_refusal_completion(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("azure_openai")
    fake.queue("refusal", mode="finish", input_tokens=25)
    completion = await run(fake.backend_config())
    assert (completion.finish_reason, completion.usage) == ("refusal", Usage(25, 0))


@pytest.mark.anyio
async def test_openai_missing_usage_is_bad_response(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("openai")
    fake.queue("success", usage=False)
    assert (await fail(fake.backend_config())).category is ErrorCategory.bad_response


@pytest.mark.anyio
async def test_retry_after_variants(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("openai")
    fake.queue("rate_limited", retry_after=2, retry_after_ms=1500)
    fake.queue("rate_limited", retry_after=30, http_date=True)
    fake.queue("rate_limited", retry_after=None)
    cfg = fake.backend_config()
    assert (await fail(cfg)).retry_after_s == 1.5  # retry-after-ms is the more precise
    assert 27.0 <= ((await fail(cfg)).retry_after_s or 0) <= 30.0
    assert (await fail(cfg)).retry_after_s is None


@pytest.mark.anyio
async def test_gemini_retry_after_header_wins_over_retry_info(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("google_genai")
    fake.queue("rate_limited", retry_after=3, retry_delay="7s")
    fake.queue("rate_limited", retry_delay="0.5s")
    cfg = fake.backend_config()
    assert (await fail(cfg)).retry_after_s == 3.0
    assert (await fail(cfg)).retry_after_s == 0.5


@pytest.mark.anyio
async def test_gemini_blocked_prompt_is_a_refusal_with_usage(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("google_genai")
    fake.queue("refusal", mode="prompt_blocked", input_tokens=17)
    completion = await run(fake.backend_config())
    assert completion == Completion("", Usage(17, 0), "refusal", "gemini-2.5-flash")


@pytest.mark.anyio
async def test_gemini_status_overrides(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("google_genai")
    deadline = {
        "error": {
            "code": 504,
            "message": "Deadline expired before operation could complete.",
            "status": "DEADLINE_EXCEEDED",
        }
    }
    denied = {
        "error": {"code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}
    }
    fake.queue("raw", status=504, body=deadline)
    fake.queue("raw", status=403, body=denied)
    fake.queue("success", finish="RECITATION")
    fake.queue("success", finish="OTHER")
    cfg = fake.backend_config()
    assert (await fail(cfg)).category is ErrorCategory.timeout
    assert (await fail(cfg)).category is ErrorCategory.auth_error
    assert (await run(cfg)).finish_reason == "refusal"
    assert (await run(cfg)).finish_reason == "other"


@pytest.mark.anyio
async def test_gemini_unconvertible_schema_fails_before_sending(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("google_genai")
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    request = GenerationRequest(
        messages=MESSAGES,
        constraint=Constraint("Node", json_schema=recursive),
        constrain="json_schema",
    )
    error = await fail(fake.backend_config(), request)
    assert error.category is ErrorCategory.bad_request
    assert "recursive" in error.message
    assert fake.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error_type", "status", "category"),
    [
        ("ThrottlingException", 429, ErrorCategory.rate_limited),
        ("ModelNotReadyException", 429, ErrorCategory.rate_limited),
        ("ModelTimeoutException", 408, ErrorCategory.timeout),
        ("ModelErrorException", 424, ErrorCategory.server_error),
        ("ServiceUnavailableException", 503, ErrorCategory.server_error),
        ("ValidationException", 400, ErrorCategory.bad_request),
        ("ResourceNotFoundException", 404, ErrorCategory.bad_request),
        ("AccessDeniedException", 403, ErrorCategory.auth_error),
        ("ExpiredTokenException", 400, ErrorCategory.auth_error),
    ],
)
async def test_bedrock_error_types(
    fake_for: Callable[..., FakeProviderServer],
    error_type: str,
    status: int,
    category: ErrorCategory,
) -> None:
    fake = fake_for("bedrock")
    headers = {
        "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    }
    fake.queue("raw", status=status, headers=headers, body={"message": "something went wrong"})
    error = await fail(fake.backend_config())
    assert (error.category, error.status) == (category, status)
    assert error.message == f"HTTP {status}: {error_type}: something went wrong"


@pytest.mark.anyio
async def test_bedrock_session_token_is_signed(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("bedrock", aws_session_token="FwoGZXIvYXdzEFAKEsessiontoken==")
    await run(fake.backend_config())
    assert fake.last_request.headers["x-amz-security-token"] == "FwoGZXIvYXdzEFAKEsessiontoken=="
    assert "x-amz-security-token" in fake.last_request.headers["authorization"]

    error = await fail(fake.backend_config(aws_session_token_env="ROUTEWISE_FAKE_UNSET_TOKEN"))
    assert error.category is ErrorCategory.auth_error
    assert "UnrecognizedClientException" in error.message


@pytest.mark.anyio
async def test_bedrock_fake_rejects_a_body_changed_after_signing(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("bedrock")
    provider = make_provider(fake.backend_config())
    assert isinstance(provider, BedrockProvider)
    url = provider._url()
    headers = provider._signed_headers(url, b'{"messages": []}')
    async with httpx.AsyncClient() as client:
        tampered = await client.post(url, content=b'{"messages": [1]}', headers=headers)
        genuine = await client.post(url, content=b'{"messages": []}', headers=headers)
    assert tampered.status_code == 403
    assert tampered.headers["x-amzn-errortype"].startswith("InvalidSignatureException")
    assert genuine.status_code == 200


@pytest.mark.anyio
async def test_bedrock_missing_credentials_and_region(
    fake_for: Callable[..., FakeProviderServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_for("bedrock")
    monkeypatch.delenv(FakeProviderServer.AWS_ENV[1])
    error = await fail(fake.backend_config())
    assert error.category is ErrorCategory.auth_error
    assert FakeProviderServer.AWS_ENV[1] in error.message
    assert fake.requests == []

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigError) as info:
        make_provider(fake.backend_config(region=None))
    assert info.value.field == "backends['bedrock:anthropic.claude-3-5-haiku-20241022-v1:0'].region"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    provider = make_provider(fake.backend_config(region=None, base_url=None))
    assert isinstance(provider, BedrockProvider)
    assert provider._url().startswith("https://bedrock-runtime.eu-west-1.amazonaws.com/model/")


@pytest.mark.anyio
async def test_missing_api_key_is_auth_error_without_a_call(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    for provider in ("openai", "azure_openai", "google_genai"):
        fake = fake_for(provider)
        cfg = fake.backend_config(api_key=None, api_key_env="ROUTEWISE_TEST_UNSET_KEY")
        error = await fail(cfg)
        assert error.category is ErrorCategory.auth_error
        assert "ROUTEWISE_TEST_UNSET_KEY" in error.message
        assert fake.requests == []


# ----------------------------------------------------------------------------- construction
def test_make_provider_dispatch_and_capabilities() -> None:
    cases: list[tuple[BackendConfig, type[Provider], bool, bool]] = [
        (BackendConfig.for_name("openai:gpt-4o"), OpenAIProvider, True, False),
        (
            BackendConfig.for_name("azure_openai:gpt-4o", base_url="https://r.openai.azure.com"),
            AzureOpenAIProvider,
            True,
            False,
        ),
        (
            BackendConfig.for_name("openai_compatible:m", base_url="http://127.0.0.1:1/v1"),
            OpenAICompatibleProvider,
            True,
            True,
        ),
        (BackendConfig.for_name("google_genai:gemini-2.5-pro"), GeminiProvider, True, False),
        (BackendConfig.for_name("ollama:qwen2.5:7b"), OllamaProvider, True, False),
        (
            BackendConfig.for_name("bedrock:amazon.nova-pro-v1:0", region="us-west-2"),
            BedrockProvider,
            False,
            False,
        ),
    ]
    for cfg, cls, json_schema, grammar in cases:
        provider = make_provider(cfg)
        assert type(provider) is cls
        assert provider.config is cfg
        assert (provider.supports_json_schema, provider.supports_grammar) == (json_schema, grammar)
        assert provider._client is None  # built lazily


@pytest.mark.parametrize("name", ["openai_compatible:m", "azure_openai:gpt-4o"])
def test_base_url_required(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_provider(BackendConfig.for_name(name))
    assert info.value.field == f"backends[{name!r}].base_url"


@pytest.mark.anyio
async def test_client_is_lazy_and_reopens_after_aclose(
    fake_for: Callable[..., FakeProviderServer],
) -> None:
    fake = fake_for("ollama")
    provider = make_provider(fake.backend_config(timeout_s=3.5))
    assert provider._client is None
    await provider.generate(plain_request())
    client = provider._client
    assert client is not None and client.timeout.read == 3.5
    await provider.generate(plain_request())
    assert provider._client is client  # one client, reused
    await provider.aclose()
    await provider.aclose()
    assert provider._client is None
    await provider.generate(plain_request())
    await provider.aclose()
    assert len(fake.requests) == 3


@pytest.mark.anyio
async def test_transport_is_injectable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"model": "m", "message": {"content": "x"}, "done_reason": "stop"}
        )

    provider = make_provider(
        BackendConfig.for_name("ollama:m"), transport=httpx.MockTransport(handler)
    )
    async with provider:
        assert (await provider.generate(plain_request())).text == "x"


# ----------------------------------------------------------------------------- secrets
SECRET = "sk-SECRET-never-leak-7f3a9c1e5b"


@pytest.mark.anyio
async def test_secrets_never_leak(
    fake: FakeProviderServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = [SECRET]
    if fake.provider == "bedrock":
        fake.aws_secret_access_key = SECRET
        fake.aws_session_token = "SESSION-SECRET-token-91ab"
        secrets.append(fake.aws_session_token)
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        cfg = fake.backend_config(timeout_s=0.25)
    else:
        fake.api_key = SECRET
        cfg = fake.backend_config(api_key=SECRET, timeout_s=0.25)

    scripted: list[tuple[str, dict[str, Any]]] = [
        ("timeout", {"delay": 1.0}),
        ("rate_limited", {}),
        ("server_error", {}),
        ("auth_error", {"echo_key": True}),
        ("bad_request", {"message": f"bad key {SECRET} in request"}),
        ("malformed", {"body": "non_json"}),
        ("malformed", {"body": "truncated"}),
        ("malformed", {"body": "missing_fields"}),
        ("disconnect", {}),
        ("raw", {"status": 502, "body": f"<html>proxy error for {SECRET}</html>"}),
        ("raw", {"status": 200, "body": {"error": f"key {SECRET} rejected"}}),
    ]
    if fake.provider == "azure_openai":
        scripted.append(("refusal", {}))
    errors: list[ProviderError] = []
    with capture_logs() as logs:
        async with make_provider(cfg) as provider:
            for kind, kw in scripted:
                fake.queue(kind, **kw)
                with pytest.raises(ProviderError) as info:
                    await provider.generate(plain_request())
                errors.append(info.value)
            dead = cfg.model_copy(
                update={"base_url": f"http://127.0.0.1:{unused_port()}{fake.protocol.base_path}"}
            )
            async with make_provider(dead) as dead_provider:
                with pytest.raises(ProviderError) as info:
                    await dead_provider.generate(plain_request())
            errors.append(info.value)
            assert repr(provider) == f"{type(provider).__name__}(name={cfg.name!r})"
    categories = {e.category for e in errors}
    assert categories >= {
        ErrorCategory.timeout,
        ErrorCategory.rate_limited,
        ErrorCategory.server_error,
        ErrorCategory.auth_error,
        ErrorCategory.bad_request,
        ErrorCategory.bad_response,
        ErrorCategory.connection_error,
    }
    assert len(logs) == len(errors)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [e.message for e in errors]
    texts += [repr(entry) for entry in logs] + [repr(cfg), str(cfg)]
    for secret in secrets:
        leaks = [t for t in texts if secret in t]
        assert leaks == []
    assert all(len(e.message) < 400 for e in errors)


# ----------------------------------------------------------------------------- Gemini schemas
class Item(BaseModel):
    sku: str = Field(description="Stock keeping unit")
    qty: int = Field(ge=1)


class Order(BaseModel):
    id: str
    status: Literal["open", "closed"]
    items: list[Item] = Field(max_length=10)
    note: str | None = None
    placed_at: datetime
    pair: tuple[int, str]
    level: Literal[1, 2, 3]
    tags: dict[str, int]


def test_gemini_schema_from_pydantic() -> None:
    converted = to_gemini_schema(Order.model_json_schema())
    assert converted == {
        "type": "OBJECT",
        "properties": {
            "id": {"type": "STRING"},
            "status": {"type": "STRING", "enum": ["open", "closed"]},
            "items": {
                "type": "ARRAY",
                "items": {
                    "type": "OBJECT",
                    "properties": {
                        "sku": {"type": "STRING", "description": "Stock keeping unit"},
                        "qty": {"type": "INTEGER", "minimum": 1},
                    },
                    "propertyOrdering": ["sku", "qty"],
                    "required": ["sku", "qty"],
                },
                "maxItems": 10,
            },
            "note": {"type": "STRING", "nullable": True},
            "placed_at": {"type": "STRING", "format": "date-time"},
            "pair": {
                "type": "ARRAY",
                "items": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
                "maxItems": 2,
                "minItems": 2,
            },
            "level": {"type": "INTEGER"},  # Gemini enums are strings: dropped
            "tags": {"type": "OBJECT"},  # additionalProperties dropped
        },
        "propertyOrdering": ["id", "status", "items", "note", "placed_at", "pair", "level", "tags"],
        "required": ["id", "status", "items", "placed_at", "pair", "level", "tags"],
    }
    assert "$defs" not in json.dumps(converted) and "title" not in json.dumps(converted)


def test_gemini_schema_edge_cases() -> None:
    assert to_gemini_schema({"type": ["string", "null"], "format": "uuid"}) == {
        "type": "STRING",
        "nullable": True,
    }
    assert to_gemini_schema({"type": ["string", "integer"]}) == {
        "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]
    }
    assert to_gemini_schema({"const": "fixed"}) == {"type": "STRING", "enum": ["fixed"]}
    assert to_gemini_schema({"enum": ["a", None]}) == {
        "type": "STRING",
        "enum": ["a"],
        "nullable": True,
    }
    assert to_gemini_schema(
        {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}], "description": "d"}
    ) == {
        "description": "d",
        "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}],
        "nullable": True,
    }
    legacy = {  # pydantic v1 style: a described $ref wrapped in allOf
        "type": "object",
        "properties": {"item": {"allOf": [{"$ref": "#/definitions/I"}], "description": "the item"}},
        "definitions": {
            "I": {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0}}}
        },
    }
    assert to_gemini_schema(legacy)["properties"]["item"] == {
        "type": "OBJECT",
        "properties": {"n": {"type": "NUMBER"}},
        "propertyOrdering": ["n"],
        "description": "the item",
    }
    assert to_gemini_schema({"type": "array"}) == {"type": "ARRAY", "items": {"type": "STRING"}}
    with pytest.raises(SchemaConversionError):
        to_gemini_schema({"$ref": "#/$defs/Missing"})


# ----------------------------------------------------------------------------- pricing
def test_prices_lookup_order() -> None:
    assert prices_for(BackendConfig.for_name("openai:gpt-4o")) == DEFAULT_PRICES["gpt-4o"]
    assert prices_for(BackendConfig.for_name("openai:gpt-4o-mini-2024-07-18")) == (0.15, 0.60)
    assert prices_for(BackendConfig.for_name("openai:gpt-4.1-nano-2025-04-14")) == (0.10, 0.40)
    assert prices_for(BackendConfig.for_name("azure_openai:gpt-4.1-mini")) == (0.40, 1.60)
    assert prices_for(BackendConfig.for_name("google_genai:gemini-2.5-flash-lite")) == (0.10, 0.40)
    assert prices_for(BackendConfig.for_name("google_genai:gemini-2.5-pro-preview-06-05")) == (
        1.25,
        10.00,
    )
    haiku = "bedrock:us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert prices_for(BackendConfig.for_name(haiku)) == (0.80, 4.00)
    assert prices_for(BackendConfig.for_name("bedrock:meta.llama3-1-70b-instruct-v1:0")) == (
        0.72,
        0.72,
    )
    assert prices_for(BackendConfig.for_name("bedrock:amazon.nova-micro-v1:0")) == (0.035, 0.14)
    assert (
        prices_for(BackendConfig.for_name("ollama:gpt-4o")) == DEFAULT_PRICES["gpt-4o"]
    )  # a name is a name
    assert prices_for(BackendConfig.for_name("ollama:qwen2.5:7b")) == (0.0, 0.0)
    assert prices_for(BackendConfig.for_name("openai_compatible:local", base_url="http://x")) == (
        0.0,
        0.0,
    )
    both = BackendConfig.for_name(
        "openai:gpt-4o", price_input_per_mtok=1.0, price_output_per_mtok=2.0
    )
    assert prices_for(both) == (1.0, 2.0)
    one = BackendConfig.for_name("openai:gpt-4o", price_output_per_mtok=0.5)
    assert prices_for(one) == (2.50, 0.5)
    assert all(i >= 0 and o >= 0 for i, o in DEFAULT_PRICES.values())


def test_unknown_cloud_model_warns_once() -> None:
    unknown = BackendConfig.for_name("openai:gpt-99-turbo-test")
    with capture_logs() as logs:
        assert prices_for(unknown) == (0.0, 0.0)
        assert prices_for(unknown) == (0.0, 0.0)
        assert prices_for(BackendConfig.for_name("ollama:never-heard-of-it")) == (0.0, 0.0)
    assert [(e["event"], e["model"]) for e in logs] == [
        ("unknown_model_price", "gpt-99-turbo-test")
    ]
    assert logs[0]["log_level"] == "warning"


def test_cost_usd() -> None:
    cfg = BackendConfig.for_name("google_genai:gemini-2.5-flash")
    assert cost_usd(Usage(1_000_000, 1_000_000), cfg) == pytest.approx(2.80)
    assert cost_usd(Usage(), cfg) == 0.0


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "0"}) == 0.0
    assert parse_retry_after({"retry-after": "-3"}) is None
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "4"}) == 4.0
    assert parse_retry_after({}) is None


# ----------------------------------------------------------------------------- the fake itself
def test_fake_server_api(fake_for: Callable[..., FakeProviderServer]) -> None:
    fake = fake_for("openai")
    with pytest.raises(ValueError, match="unknown kind"):
        fake.queue("explode")
    with pytest.raises(ValueError, match="unknown provider"):
        FakeProviderServer("anthropic")
    fake.queue("success")
    fake.queue("raw", status=418, body="teapot")
    assert fake.pending == 2
    fake.set_default("server_error", status=502)
    with httpx.Client(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.api_key}"}
    ) as client:
        assert (
            client.post("/chat/completions", json={"model": "m", "messages": []}).status_code == 200
        )
        assert client.post("/chat/completions", json={}).text == "teapot"
        assert client.post("/chat/completions", json={}).status_code == 502
        assert client.post("/nope", json={}).status_code == 404
        assert (
            client.post(
                "/chat/completions", json={}, headers={"Authorization": "Bearer x"}
            ).status_code
            == 401
        )
    assert fake.pending == 0
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 3 + [
        "/v1/nope",
        "/v1/chat/completions",
    ]
    assert fake.requests[0].json == {"model": "m", "messages": []}
    assert fake.errors == []
