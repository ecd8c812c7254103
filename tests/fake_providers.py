"""Protocol-faithful fake LLM provider servers for tests.

:class:`FakeProviderServer` runs a real HTTP/1.1 server on ``127.0.0.1`` (a free port, a
background thread) that speaks one provider's wire protocol: the documented route, the
documented authentication (Bedrock requests must carry a valid SigV4 signature, recomputed
with botocore from the received bytes), and the documented success and error bodies. Tests
script what it answers next with :meth:`FakeProviderServer.queue` and read what it received
from :attr:`FakeProviderServer.requests`::

    with FakeProviderServer("openai") as fake:
        fake.queue("success", text='{"a": 1}', input_tokens=12, output_tokens=3)
        fake.queue("rate_limited", retry_after=2)
        cfg = fake.backend_config()            # a BackendConfig pointing at the fake
        ...                                    # make_provider(cfg) / Router(backends={cfg.name: cfg})
        fake.requests[0].json["messages"]

Providers: ``openai``, ``azure_openai``, ``openai_compatible`` (llama.cpp ``llama-server``
flavour), ``google_genai``, ``ollama``, ``bedrock``. For Bedrock, the credentials live in
environment variables the config names: apply :attr:`FakeProviderServer.env` first
(``monkeypatch.setenv``).

Kinds (each rendered in the provider's own format; every kind takes ``delay`` seconds):

=================  ==========================================================================
``success``        ``text``, ``input_tokens``, ``output_tokens``; ``finish`` (the provider's raw
                   finish value); Gemini ``thoughts_tokens``, ``parts`` (split the text);
                   ``usage=False`` omits usage (openai_compatible)
``truncated``      stopped on the token limit (``text`` is the partial output)
``refusal``        the provider's refusal signal; ``mode``: openai ``"field"`` (message.refusal)
                   / ``"content_filter"``; azure ``"filter_400"`` (HTTP 400 content_filter) /
                   ``"finish"``; google_genai ``"finish"`` (SAFETY) / ``"prompt_blocked"``;
                   bedrock ``"guardrail_intervened"`` / ``"content_filtered"``; ollama has no
                   refusal signal: refusal text with ``done_reason: "stop"``
``rate_limited``   HTTP 429; ``retry_after`` (Retry-After seconds), ``retry_after_ms``,
                   ``http_date=True`` (Retry-After as an HTTP-date); google_genai puts
                   ``retry_delay`` (default ``"7s"``) in a RetryInfo detail instead
``server_error``   HTTP ``status`` (default 500)
``auth_error``     the provider's bad-credential answer (Gemini: HTTP 400 API_KEY_INVALID);
                   ``echo_key=True`` echoes the presented credential in the message
``bad_request``    HTTP ``status`` (default 400; ollama 404 model not found), ``message``
``timeout``        sleep ``delay`` (default 2 s) past the client's timeout, then succeed
``malformed``      HTTP 200 with ``body`` ``"non_json"``, ``"truncated"`` (a success body cut
                   in half) or ``"missing_fields"``
``disconnect``     close the connection without answering
``raw``            exactly ``status``, ``headers``, ``body`` (bytes, str, or JSON-able)
=================  ==========================================================================

When the queue is empty the server answers :meth:`FakeProviderServer.set_default`
(``success`` unless changed).
"""

from __future__ import annotations

import contextlib
import email.utils
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from routewise.backends.base import BackendConfig

__all__ = ["KINDS", "PROVIDERS", "FakeProviderServer", "RecordedRequest", "Reply", "unused_port"]

PROVIDERS = ("openai", "azure_openai", "openai_compatible", "google_genai", "ollama", "bedrock")
KINDS = (
    "success",
    "truncated",
    "refusal",
    "rate_limited",
    "server_error",
    "auth_error",
    "bad_request",
    "timeout",
    "malformed",
    "disconnect",
    "raw",
)


def unused_port() -> int:
    """A localhost TCP port with nothing listening (for connection-refused tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (``path`` undecoded, ``headers`` lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass(frozen=True)
class Reply:
    """What the fake sends back."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    disconnect: bool = False


def _json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(payload).encode(),
    )


def _retry_headers(
    retry_after: float | None, retry_after_ms: float | None, http_date: bool
) -> dict[str, str]:
    headers: dict[str, str] = {}
    if retry_after is not None:
        if http_date:
            headers["Retry-After"] = email.utils.formatdate(time.time() + retry_after, usegmt=True)
        else:
            headers["Retry-After"] = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(int(retry_after_ms))
    return headers


def _mask(key: str) -> str:
    return f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 8 else "***"


# ---------------------------------------------------------------------------------- protocols
class _Protocol:
    """One provider's wire format. Kind renderers return a :class:`Reply`."""

    default_model = "model"
    base_path = ""
    default_key: str | None = None

    def __init__(self, fake: FakeProviderServer) -> None:
        self.fake = fake

    # routing / auth (None = fine)
    def check_route(self, rec: RecordedRequest) -> Reply | None:
        raise NotImplementedError

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        return None

    def presented_key(self, rec: RecordedRequest) -> str:
        return ""

    def model_of(self, rec: RecordedRequest) -> str:
        model = rec.json.get("model") if isinstance(rec.json, dict) else None
        return model if isinstance(model, str) else self.default_model

    # kinds
    def success(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    truncated_finish = "length"  # the provider's stop reason for "hit the token limit"

    def truncated(
        self,
        rec: RecordedRequest,
        *,
        text: str = '{"ok": tr',
        input_tokens: int = 10,
        output_tokens: int = 4,
        **kw: Any,
    ) -> Reply:
        return self.success(
            rec,
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            finish=self.truncated_finish,
            **kw,
        )

    def refusal(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    def rate_limited(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    def server_error(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    def auth_error(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    def bad_request(self, rec: RecordedRequest, **kw: Any) -> Reply:
        raise NotImplementedError

    def missing_fields(self, rec: RecordedRequest) -> Reply:
        raise NotImplementedError


class _OpenAIProtocol(_Protocol):
    default_model = "gpt-4o-mini"
    base_path = "/v1"
    default_key = "sk-fake-openai-key"

    def check_route(self, rec: RecordedRequest) -> Reply | None:
        if rec.method != "POST" or rec.path != "/v1/chat/completions":
            return self.error(
                404, f"Invalid URL ({rec.method} {rec.path})", "invalid_request_error", None
            )
        if not isinstance(rec.json, dict):
            return self.error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        return None

    def presented_key(self, rec: RecordedRequest) -> str:
        return rec.headers.get("authorization", "").removeprefix("Bearer ").strip()

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        key = self.presented_key(rec)
        if not key:
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
            )
        if key != self.fake.api_key:
            return self.auth_error(rec)
        return None

    def error(self, status: int, message: str, etype: str | None, code: Any, **extra: Any) -> Reply:
        headers = extra.pop("headers", None)
        return _json_reply(
            status,
            {
                "error": {
                    "message": message,
                    "type": etype,
                    "param": extra.pop("param", None),
                    "code": code,
                }
            },
            headers,
        )

    def completion(
        self,
        rec: RecordedRequest,
        *,
        content: str | None,
        finish: str,
        input_tokens: int,
        output_tokens: int,
        refusal: str | None = None,
        usage: bool = True,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.response_model(rec),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "system_fingerprint": "fp_fake0001",
        }
        if usage:
            body["usage"] = {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            }
        return body

    def response_model(self, rec: RecordedRequest) -> str:
        model = self.model_of(rec)
        return f"{model}-2024-07-18" if model == "gpt-4o-mini" else model

    def success(
        self,
        rec: RecordedRequest,
        *,
        text: str = '{"ok": true}',
        input_tokens: int = 10,
        output_tokens: int = 5,
        finish: str = "stop",
        usage: bool = True,
        **_: Any,
    ) -> Reply:
        return _json_reply(
            200,
            self.completion(
                rec,
                content=text,
                finish=finish,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                usage=usage,
            ),
        )

    def refusal(
        self,
        rec: RecordedRequest,
        *,
        text: str = "I'm sorry, but I can't help with that request.",
        mode: str = "field",
        input_tokens: int = 10,
        output_tokens: int = 11,
        **_: Any,
    ) -> Reply:
        if mode == "content_filter":
            body = self.completion(
                rec,
                content=None,
                finish="content_filter",
                input_tokens=input_tokens,
                output_tokens=0,
            )
        else:
            body = self.completion(
                rec,
                content=None,
                refusal=text,
                finish="stop",
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            )
        return _json_reply(200, body)

    def rate_limited(
        self,
        rec: RecordedRequest,
        *,
        retry_after: float | None = 2,
        retry_after_ms: float | None = None,
        http_date: bool = False,
        **_: Any,
    ) -> Reply:
        model = self.model_of(rec)
        headers = {
            **_retry_headers(retry_after, retry_after_ms, http_date),
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "20s",
        }
        return self.error(
            429,
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 20s.",
            "requests",
            "rate_limit_exceeded",
            headers=headers,
        )

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        return self.error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        key = self.presented_key(rec)
        shown = key if echo_key else _mask(key)
        return self.error(
            401,
            f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def bad_request(
        self,
        rec: RecordedRequest,
        *,
        status: int = 400,
        message: str = "Invalid schema for response_format 'Ticket': In context=(), 'additionalProperties' is required to be supplied and to be false.",
        **_: Any,
    ) -> Reply:
        return self.error(status, message, "invalid_request_error", None, param="response_format")

    def missing_fields(self, rec: RecordedRequest) -> Reply:
        return _json_reply(
            200, {"id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time())}
        )


class _AzureProtocol(_OpenAIProtocol):
    default_key = "fake-azure-key-0123456789abcdef"
    base_path = ""
    _route = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")

    def check_route(self, rec: RecordedRequest) -> Reply | None:
        if (
            rec.method != "POST"
            or not self._route.match(rec.path)
            or "api-version" not in rec.query
        ):
            return _json_reply(404, {"error": {"code": "404", "message": "Resource not found"}})
        if not isinstance(rec.json, dict):
            return self.error(
                400, "Could not parse the JSON body of your request.", "invalid_request_error", None
            )
        return None

    def model_of(self, rec: RecordedRequest) -> str:
        m = self._route.match(rec.path)
        return unquote(m.group(1)) if m else self.default_model

    def response_model(self, rec: RecordedRequest) -> str:
        return "gpt-4o-mini-2024-07-18"

    def presented_key(self, rec: RecordedRequest) -> str:
        return rec.headers.get("api-key", "")

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        if self.presented_key(rec) != self.fake.api_key:
            return self.auth_error(rec)
        return None

    def completion(self, rec: RecordedRequest, **kw: Any) -> dict[str, Any]:
        body = super().completion(rec, **kw)
        safe = {
            k: {"filtered": False, "severity": "safe"}
            for k in ("hate", "self_harm", "sexual", "violence")
        }
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": safe}]
        body["choices"][0]["content_filter_results"] = safe
        return body

    def refusal(
        self, rec: RecordedRequest, *, mode: str = "filter_400", input_tokens: int = 10, **kw: Any
    ) -> Reply:
        if mode == "finish":
            body = self.completion(
                rec,
                content=None,
                finish="content_filter",
                input_tokens=input_tokens,
                output_tokens=0,
            )
            body["choices"][0]["content_filter_results"]["violence"] = {
                "filtered": True,
                "severity": "high",
            }
            return _json_reply(200, body)
        filtered = {"filtered": True, "severity": "high"}
        return _json_reply(
            400,
            {
                "error": {
                    "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                    "management policy. Please modify your prompt and retry. To learn more about our content "
                    "filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                    "type": None,
                    "param": "prompt",
                    "code": "content_filter",
                    "status": 400,
                    "innererror": {
                        "code": "ResponsibleAIPolicyViolation",
                        "content_filter_result": {
                            "hate": {"filtered": False, "severity": "safe"},
                            "violence": filtered,
                        },
                    },
                }
            },
        )

    def rate_limited(
        self,
        rec: RecordedRequest,
        *,
        retry_after: float | None = 2,
        retry_after_ms: float | None = None,
        http_date: bool = False,
        **_: Any,
    ) -> Reply:
        version = rec.query.get("api-version", "")
        seconds = int(retry_after) if retry_after is not None else 1
        return _json_reply(
            429,
            {
                "error": {
                    "code": "429",
                    "message": f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                    f"{version} have exceeded token rate limit of your current OpenAI S0 pricing tier. "
                    f"Please retry after {seconds} seconds.",
                }
            },
            _retry_headers(retry_after, retry_after_ms, http_date),
        )

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        return _json_reply(
            status,
            {
                "error": {
                    "code": "InternalServerError",
                    "message": "The service is temporarily unable to process your request. Please try again later.",
                }
            },
        )

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        suffix = f" (key: {self.presented_key(rec)})" if echo_key else ""
        return _json_reply(
            401,
            {
                "error": {
                    "code": "401",
                    "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                    "provide a valid key for an active subscription and use a correct regional API endpoint for "
                    f"your resource.{suffix}",
                }
            },
        )


class _LlamaCppProtocol(_OpenAIProtocol):
    """llama.cpp ``llama-server``'s OpenAI-compatible endpoint (keys optional)."""

    default_model = "qwen2.5-7b-instruct"
    default_key = None

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        if self.fake.api_key is None:
            return None
        if self.presented_key(rec) != self.fake.api_key:
            return self.auth_error(rec)
        return None

    def error(self, status: int, message: str, etype: str | None, code: Any, **extra: Any) -> Reply:
        headers = extra.pop("headers", None)
        return _json_reply(
            status, {"error": {"code": status, "message": message, "type": etype}}, headers
        )

    def completion(self, rec: RecordedRequest, **kw: Any) -> dict[str, Any]:
        body = super().completion(rec, **kw)
        body["choices"][0]["message"].pop("annotations")
        body["choices"][0]["message"].pop("refusal")
        if kw.get("refusal"):
            body["choices"][0]["message"]["refusal"] = kw["refusal"]
        if "usage" in body:
            body["usage"] = {
                k: body["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            }
        body["timings"] = {
            "prompt_n": kw["input_tokens"],
            "predicted_n": kw["output_tokens"],
            "predicted_ms": 12.5,
        }
        return body

    def response_model(self, rec: RecordedRequest) -> str:
        return self.model_of(rec)

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        if status == 503:
            return self.error(503, "Loading model", "unavailable_error", None)
        return self.error(status, "Failed to parse grammar", "server_error", None)

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        suffix = f": {self.presented_key(rec)}" if echo_key else ""
        return self.error(401, f"Invalid API Key{suffix}", "authentication_error", None)

    def bad_request(
        self,
        rec: RecordedRequest,
        *,
        status: int = 400,
        message: str = "'messages' is required",
        **_: Any,
    ) -> Reply:
        return self.error(status, message, "invalid_request_error", None)


class _GeminiProtocol(_Protocol):
    truncated_finish = "MAX_TOKENS"
    default_model = "gemini-2.5-flash"
    base_path = "/v1beta"
    default_key = "AIzaFakeGeminiKey0123456789abcdefghij"
    _route = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")

    @staticmethod
    def error(
        status: int,
        gstatus: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        err: dict[str, Any] = {"code": status, "message": message, "status": gstatus}
        if details:
            err["details"] = details
        return _json_reply(status, {"error": err}, headers)

    def check_route(self, rec: RecordedRequest) -> Reply | None:
        if rec.method != "POST" or not self._route.match(rec.path):
            return self.error(
                404, "NOT_FOUND", f"models/… is not found for API version v1beta ({rec.path})"
            )
        if not isinstance(rec.json, dict):
            return self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        for key in rec.json:
            if key not in (
                "contents",
                "systemInstruction",
                "generationConfig",
                "safetySettings",
                "tools",
                "toolConfig",
            ):
                return self.error(
                    400,
                    "INVALID_ARGUMENT",
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.',
                )
        return None

    def presented_key(self, rec: RecordedRequest) -> str:
        return rec.headers.get("x-goog-api-key", "") or rec.query.get("key", "")

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        key = self.presented_key(rec)
        if not key:
            return self.error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key != self.fake.api_key:
            return self.auth_error(rec)
        return None

    def model_of(self, rec: RecordedRequest) -> str:
        m = self._route.match(rec.path)
        return m.group(1) if m else self.default_model

    def response(
        self,
        rec: RecordedRequest,
        *,
        candidates: list[dict[str, Any]] | None,
        input_tokens: int,
        output_tokens: int,
        thoughts_tokens: int = 0,
        prompt_feedback: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "promptTokenCount": input_tokens,
            "totalTokenCount": input_tokens + output_tokens + thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input_tokens}],
        }
        if output_tokens:
            usage["candidatesTokenCount"] = output_tokens
        if thoughts_tokens:
            usage["thoughtsTokenCount"] = thoughts_tokens
        body: dict[str, Any] = {}
        if candidates is not None:
            body["candidates"] = candidates
        if prompt_feedback is not None:
            body["promptFeedback"] = prompt_feedback
        body["usageMetadata"] = usage
        body["modelVersion"] = self.model_of(rec)
        body["responseId"] = uuid.uuid4().hex[:22]
        return body

    def success(
        self,
        rec: RecordedRequest,
        *,
        text: str = '{"ok": true}',
        input_tokens: int = 10,
        output_tokens: int = 5,
        thoughts_tokens: int = 0,
        finish: str = "STOP",
        parts: int = 1,
        thought: str | None = None,
        **_: Any,
    ) -> Reply:
        step = max(1, -(-len(text) // parts))
        chunks = [text[i : i + step] for i in range(0, len(text), step)] or [""]
        part_list: list[dict[str, Any]] = [{"text": c} for c in chunks]
        if thought is not None:
            part_list.insert(0, {"text": thought, "thought": True})
        candidate = {
            "content": {"parts": part_list, "role": "model"},
            "finishReason": finish,
            "index": 0,
        }
        return _json_reply(
            200,
            self.response(
                rec,
                candidates=[candidate],
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                thoughts_tokens=thoughts_tokens,
            ),
        )

    def refusal(
        self, rec: RecordedRequest, *, mode: str = "finish", input_tokens: int = 10, **_: Any
    ) -> Reply:
        ratings = [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ]
        if mode == "prompt_blocked":
            body = self.response(
                rec,
                candidates=None,
                input_tokens=input_tokens,
                output_tokens=0,
                prompt_feedback={"blockReason": "SAFETY", "safetyRatings": ratings},
            )
        else:
            body = self.response(
                rec,
                candidates=[{"finishReason": "SAFETY", "index": 0, "safetyRatings": ratings}],
                input_tokens=input_tokens,
                output_tokens=0,
            )
        return _json_reply(200, body)

    def rate_limited(
        self,
        rec: RecordedRequest,
        *,
        retry_delay: str | None = "7s",
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        http_date: bool = False,
        **_: Any,
    ) -> Reply:
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": self.model_of(rec)},
                        "quotaValue": "10",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            },
        ]
        if retry_delay is not None:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
            )
        return self.error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. For more information "
            "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            details,
            _retry_headers(retry_after, retry_after_ms, http_date),
        )

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        if status == 503:
            return self.error(
                503, "UNAVAILABLE", "The model is overloaded. Please try again later."
            )
        return self.error(
            status,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        )

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        suffix = f" (received {self.presented_key(rec)})" if echo_key else ""
        return self.error(
            400,
            "INVALID_ARGUMENT",
            f"API key not valid. Please pass a valid API key.{suffix}",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {
                    "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                    "locale": "en-US",
                    "message": "API key not valid. Please pass a valid API key.",
                },
            ],
        )

    def bad_request(
        self,
        rec: RecordedRequest,
        *,
        status: int = 400,
        message: str = '* GenerateContentRequest.generation_config.response_schema.properties["tags"].items: missing field.',
        **_: Any,
    ) -> Reply:
        return self.error(status, "INVALID_ARGUMENT", message)

    def missing_fields(self, rec: RecordedRequest) -> Reply:
        return _json_reply(200, {"modelVersion": self.model_of(rec), "responseId": "x"})


class _OllamaProtocol(_Protocol):
    default_model = "llama3.1:8b"
    default_key = None

    def check_route(self, rec: RecordedRequest) -> Reply | None:
        if rec.path != "/api/chat":
            return Reply(404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found")
        if rec.method != "POST":
            return Reply(
                405, {"Content-Type": "text/plain; charset=utf-8"}, b"405 method not allowed"
            )
        if not isinstance(rec.json, dict):
            return _json_reply(
                400, {"error": "invalid character 'x' looking for beginning of value"}
            )
        if "model" not in rec.json:
            return _json_reply(400, {"error": "model is required"})
        return None

    def presented_key(self, rec: RecordedRequest) -> str:
        return rec.headers.get("authorization", "").removeprefix("Bearer ").strip()

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        if self.fake.api_key is not None and self.presented_key(rec) != self.fake.api_key:
            return self.auth_error(rec)
        return None

    def chat(
        self, rec: RecordedRequest, *, text: str, reason: str, input_tokens: int, output_tokens: int
    ) -> dict[str, Any]:
        return {
            "model": self.model_of(rec),
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "message": {"role": "assistant", "content": text},
            "done_reason": reason,
            "done": True,
            "total_duration": 512_000_000,
            "load_duration": 21_000_000,
            "prompt_eval_count": input_tokens,
            "prompt_eval_duration": 80_000_000,
            "eval_count": output_tokens,
            "eval_duration": 400_000_000,
        }

    def success(
        self,
        rec: RecordedRequest,
        *,
        text: str = '{"ok": true}',
        input_tokens: int = 10,
        output_tokens: int = 5,
        finish: str = "stop",
        **_: Any,
    ) -> Reply:
        return _json_reply(
            200,
            self.chat(
                rec,
                text=text,
                reason=finish,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
            ),
        )

    def refusal(
        self,
        rec: RecordedRequest,
        *,
        text: str = "I can't help with that.",
        input_tokens: int = 10,
        output_tokens: int = 7,
        **_: Any,
    ) -> Reply:
        return self.success(rec, text=text, input_tokens=input_tokens, output_tokens=output_tokens)

    def rate_limited(
        self,
        rec: RecordedRequest,
        *,
        retry_after: float | None = 2,
        retry_after_ms: float | None = None,
        http_date: bool = False,
        **_: Any,
    ) -> Reply:
        return _json_reply(
            429,
            {"error": "too many requests, please try again later"},
            _retry_headers(retry_after, retry_after_ms, http_date),
        )

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        if status == 503:
            return _json_reply(
                503, {"error": "server busy, please try again.  maximum pending requests exceeded"}
            )
        return _json_reply(status, {"error": "llama runner process has terminated: exit status 2"})

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        suffix = f" ({self.presented_key(rec)})" if echo_key else ""
        return _json_reply(401, {"error": f"unauthorized{suffix}"})

    def bad_request(
        self, rec: RecordedRequest, *, status: int = 404, message: str | None = None, **_: Any
    ) -> Reply:
        text = message or f'model "{self.model_of(rec)}" not found, try pulling it first'
        return _json_reply(status, {"error": text})

    def missing_fields(self, rec: RecordedRequest) -> Reply:
        return _json_reply(200, {"model": self.model_of(rec), "done": True})


class _BedrockProtocol(_Protocol):
    truncated_finish = "max_tokens"
    default_model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    _route = re.compile(r"^/model/([^/]+)/converse$")
    _auth = re.compile(
        r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
        r"\s*SignedHeaders=(?P<signed>[a-z0-9;-]+),\s*Signature=(?P<sig>[0-9a-f]{64})$"
    )

    def error(
        self, status: int, etype: str, message: str, headers: dict[str, str] | None = None
    ) -> Reply:
        return _json_reply(
            status,
            {"message": message},
            {
                "x-amzn-ErrorType": f"{etype}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "x-amzn-RequestId": str(uuid.uuid4()),
                **(headers or {}),
            },
        )

    def check_route(self, rec: RecordedRequest) -> Reply | None:
        if rec.method != "POST" or not self._route.match(rec.path):
            return self.error(404, "UnknownOperationException", "")
        if not isinstance(rec.json, dict):
            return self.error(400, "SerializationException", "Unexpected JSON content")
        return None

    def model_of(self, rec: RecordedRequest) -> str:
        m = self._route.match(rec.path)
        return unquote(m.group(1)) if m else self.default_model

    def presented_key(self, rec: RecordedRequest) -> str:
        return rec.headers.get("authorization", "")

    def check_auth(self, rec: RecordedRequest) -> Reply | None:
        """Verify the SigV4 signature the way AWS does, from the bytes received."""
        from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
        from botocore.credentials import Credentials  # type: ignore[import-untyped]

        fake = self.fake
        auth = rec.headers.get("authorization")
        if not auth:
            return self.error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        m = self._auth.match(auth)
        if not m:
            return self.error(
                403,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
            )
        if m["akid"] != fake.aws_access_key_id:
            return self.error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if m["service"] != "bedrock":
            return self.error(
                403,
                "InvalidSignatureException",
                "Credential should be scoped to correct service: 'bedrock'.",
            )
        amz_date = rec.headers.get("x-amz-date", "")
        signed = m["signed"].split(";")
        if not amz_date.startswith(m["date"]) or "host" not in signed or "x-amz-date" not in signed:
            return self.error(
                403, "IncompleteSignatureException", "Signature must cover host and x-amz-date."
            )
        try:
            when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return self.error(
                403, "IncompleteSignatureException", f"Invalid X-Amz-Date {amz_date!r}"
            )
        if abs((datetime.now(UTC) - when).total_seconds()) > 300:
            return self.error(
                403,
                "InvalidSignatureException",
                "Signature expired: the request time is too skewed.",
            )
        if fake.aws_session_token is not None and (
            rec.headers.get("x-amz-security-token") != fake.aws_session_token
            or "x-amz-security-token" not in signed
        ):
            return self.error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        query = "&".join(f"{k}={v}" for k, v in rec.query.items())
        url = f"http://{rec.headers.get('host', '')}{rec.path}" + (f"?{query}" if query else "")
        request = AWSRequest(
            method=rec.method,
            url=url,
            data=rec.body,
            headers={h: rec.headers.get(h, "") for h in signed},
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(m["akid"], fake.aws_secret_access_key, fake.aws_session_token),
            "bedrock",
            m["region"],
        )
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, m["sig"]):
            return self.error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS "
                "Secret Access Key and signing method. Consult the service documentation for details.",
            )
        return None

    def converse(
        self, *, text: str, stop: str, input_tokens: int, output_tokens: int
    ) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": stop,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": 321},
        }

    def _ok(self, body: dict[str, Any]) -> Reply:
        return _json_reply(200, body, {"x-amzn-RequestId": str(uuid.uuid4())})

    def success(
        self,
        rec: RecordedRequest,
        *,
        text: str = '{"ok": true}',
        input_tokens: int = 10,
        output_tokens: int = 5,
        finish: str = "end_turn",
        **_: Any,
    ) -> Reply:
        return self._ok(
            self.converse(
                text=text, stop=finish, input_tokens=input_tokens, output_tokens=output_tokens
            )
        )

    def refusal(
        self,
        rec: RecordedRequest,
        *,
        mode: str = "guardrail_intervened",
        text: str = "Sorry, the model cannot answer this question.",
        input_tokens: int = 10,
        output_tokens: int = 0,
        **_: Any,
    ) -> Reply:
        body = self.converse(
            text=text, stop=mode, input_tokens=input_tokens, output_tokens=output_tokens
        )
        if mode == "guardrail_intervened":
            body["trace"] = {"guardrail": {"actionReason": "Guardrail blocked."}}
        return self._ok(body)

    def rate_limited(
        self,
        rec: RecordedRequest,
        *,
        retry_after: float | None = None,
        retry_after_ms: float | None = None,
        http_date: bool = False,
        **_: Any,
    ) -> Reply:
        return self.error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
            _retry_headers(retry_after, retry_after_ms, http_date),
        )

    def server_error(self, rec: RecordedRequest, *, status: int = 500, **_: Any) -> Reply:
        if status == 503:
            return self.error(
                503, "ServiceUnavailableException", "Bedrock is unable to process your request."
            )
        return self.error(
            status,
            "InternalServerException",
            "The system encountered an unexpected error during processing. Try your request again.",
        )

    def auth_error(self, rec: RecordedRequest, *, echo_key: bool = False, **_: Any) -> Reply:
        suffix = f" ({self.presented_key(rec)})" if echo_key else ""
        return self.error(
            403,
            "AccessDeniedException",
            f"You don't have access to the model with the specified model ID.{suffix}",
        )

    def bad_request(
        self,
        rec: RecordedRequest,
        *,
        status: int = 400,
        message: str = "The provided model identifier is invalid.",
        **_: Any,
    ) -> Reply:
        return self.error(status, "ValidationException", message)

    def missing_fields(self, rec: RecordedRequest) -> Reply:
        return self._ok({"metrics": {"latencyMs": 1}})


_PROTOCOLS: dict[str, type[_Protocol]] = {
    "openai": _OpenAIProtocol,
    "azure_openai": _AzureProtocol,
    "openai_compatible": _LlamaCppProtocol,
    "google_genai": _GeminiProtocol,
    "ollama": _OllamaProtocol,
    "bedrock": _BedrockProtocol,
}


# ---------------------------------------------------------------------------------- server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _dispatch(self) -> None:
        self.server.fake._handle(self)

    do_POST = do_GET = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeProviderServer) -> None:
        self.fake = fake
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.conn_lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import traceback

        self.fake.errors.append(traceback.format_exc())


class FakeProviderServer:
    """A real HTTP server speaking one provider's protocol (see the module docstring).

    ``api_key`` is the key the fake accepts (a per-provider default for the keyed cloud
    APIs; ``None`` for ``openai_compatible`` / ``ollama`` means no auth is checked). Bedrock
    accepts requests signed with ``aws_access_key_id`` / ``aws_secret_access_key`` (and
    ``aws_session_token`` when given) for service ``bedrock``.
    """

    AWS_ACCESS_KEY_ID = "AKIAFAKEROUTEWISE001"
    AWS_SECRET_ACCESS_KEY = "fAkE/SeCrEt+KeY/For/Routewise/Tests/000001"
    REGION = "us-east-1"
    #: Environment variable names :meth:`backend_config` points Bedrock configs at.
    AWS_ENV = (
        "ROUTEWISE_FAKE_AWS_ACCESS_KEY_ID",
        "ROUTEWISE_FAKE_AWS_SECRET_ACCESS_KEY",
        "ROUTEWISE_FAKE_AWS_SESSION_TOKEN",
    )

    def __init__(
        self,
        provider: str,
        *,
        api_key: str | None = None,
        aws_access_key_id: str = AWS_ACCESS_KEY_ID,
        aws_secret_access_key: str = AWS_SECRET_ACCESS_KEY,
        aws_session_token: str | None = None,
    ) -> None:
        if provider not in _PROTOCOLS:
            raise ValueError(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
        self.provider = provider
        self.protocol = _PROTOCOLS[provider](self)
        self.api_key = api_key if api_key is not None else self.protocol.default_key
        self.aws_access_key_id = aws_access_key_id
        self.aws_secret_access_key = aws_secret_access_key
        self.aws_session_token = aws_session_token
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._default: tuple[str, dict[str, Any]] = ("success", {})
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeProviderServer:
        """Bind a free port on 127.0.0.1 and serve in a background thread."""
        if self._server is None:
            self._stopping.clear()
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, drop open connections and free the port."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        with server.conn_lock:
            conns = list(server.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeProviderServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses and configs
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake server is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a backend's ``base_url`` should be (``…/v1`` for OpenAI-style, ``…/v1beta``
        for Gemini, the root otherwise)."""
        return self.root_url + self.protocol.base_path

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a config from :meth:`backend_config` reads (Bedrock
        credentials; empty for the others)."""
        if self.provider != "bedrock":
            return {}
        env = {self.AWS_ENV[0]: self.aws_access_key_id, self.AWS_ENV[1]: self.aws_secret_access_key}
        if self.aws_session_token is not None:
            env[self.AWS_ENV[2]] = self.aws_session_token
        return env

    def backend_config(self, model: str | None = None, **settings: Any) -> BackendConfig:
        """A :class:`BackendConfig` for ``provider:model`` aimed at this fake, with the key
        it accepts (``settings`` override anything)."""
        base: dict[str, Any] = {"base_url": self.base_url}
        if self.api_key is not None:
            base["api_key"] = self.api_key
        if self.provider == "bedrock":
            base.update(
                region=self.REGION,
                aws_access_key_id_env=self.AWS_ENV[0],
                aws_secret_access_key_env=self.AWS_ENV[1],
                aws_session_token_env=self.AWS_ENV[2],
            )
        if self.provider == "azure_openai":
            base["deployment"] = "test-deployment"
        base.update(settings)
        return BackendConfig.for_name(
            f"{self.provider}:{model or self.protocol.default_model}", **base
        )

    # ------------------------------------------------------------------ scripting
    def queue(self, kind: str, **kw: Any) -> None:
        """Answer the next unanswered request with ``kind`` (see the module docstring)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        with self._lock:
            self._queue.append((kind, kw))

    def set_default(self, kind: str, **kw: Any) -> None:
        """What to answer when the queue is empty."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
        with self._lock:
            self._default = (kind, kw)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._queue)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            return self.requests[-1]

    # ------------------------------------------------------------------ serving
    def _render(self, rec: RecordedRequest, kind: str, kw: dict[str, Any]) -> Reply:
        kw = dict(kw)
        delay = float(kw.pop("delay", 2.0 if kind == "timeout" else 0.0))
        p = self.protocol
        if kind == "disconnect":
            return Reply(disconnect=True, delay_s=delay)
        if kind == "raw":
            body = kw.get("body", b"")
            headers = dict(kw.get("headers", {}))
            if not isinstance(body, bytes | str):
                body = json.dumps(body)
                headers.setdefault("Content-Type", "application/json")
            data = body.encode() if isinstance(body, str) else body
            return Reply(int(kw.get("status", 200)), headers, data, delay)
        if kind == "malformed":
            which = kw.get("body", "truncated")
            if which == "non_json":
                reply = Reply(
                    200,
                    {"Content-Type": "text/html"},
                    b"<html><body>upstream connect error</body></html>",
                )
            elif which == "missing_fields":
                reply = p.missing_fields(rec)
            elif which == "truncated":
                ok = p.success(rec)
                reply = Reply(200, ok.headers, ok.body[: len(ok.body) // 2])
            else:
                raise ValueError(f"malformed body {which!r}: non_json, truncated or missing_fields")
            return Reply(reply.status, reply.headers, reply.body, delay)
        renderers: dict[str, Callable[..., Reply]] = {
            "success": p.success,
            "timeout": p.success,
            "truncated": p.truncated,
            "refusal": p.refusal,
            "rate_limited": p.rate_limited,
            "server_error": p.server_error,
            "auth_error": p.auth_error,
            "bad_request": p.bad_request,
        }
        reply = renderers[kind](rec, **kw)
        return Reply(reply.status, reply.headers, reply.body, delay)

    def _handle(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        rec = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=dict(parse_qsl(split.query)),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
            json=parsed,
        )
        with self._lock:
            self.requests.append(rec)
        reply = self.protocol.check_route(rec) or self.protocol.check_auth(rec)
        if reply is None:
            with self._lock:
                kind, kw = self._queue.popleft() if self._queue else self._default
            reply = self._render(rec, kind, kw)
        if reply.delay_s and self._stopping.wait(reply.delay_s):
            handler.close_connection = True
            return
        if reply.disconnect:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True
