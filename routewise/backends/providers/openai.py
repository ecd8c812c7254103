"""OpenAI Chat Completions and the servers that speak it: OpenAI, Azure OpenAI, and
OpenAI-compatible runtimes (vLLM, llama.cpp ``llama-server``, LM Studio).

Request: ``POST …/chat/completions`` with ``model`` (not for Azure, whose deployment is in
the URL), ``messages``, the token limit (``max_completion_tokens`` for OpenAI and Azure,
``max_tokens`` for compatible servers) and the backend's sampler parameters merged verbatim.
A JSON-schema constraint goes as ``response_format``::

    {"type": "json_schema", "json_schema": {"name": …, "strict": true, "schema": …}}

except on ``openai_compatible`` backends with ``schema_format="json_object"``, which send
llama-cpp-python's ``{"type": "json_object", "schema": …}``; a grammar constraint goes as
llama.cpp's top-level ``"grammar"`` field (``openai_compatible`` only).

Response: ``choices[0].message.content``; a non-null ``message.refusal`` becomes
``finish_reason="refusal"`` with the refusal text; ``finish_reason`` ``"length"`` →
``"length"``, ``"content_filter"`` → ``"refusal"``; usage from ``usage.prompt_tokens`` /
``usage.completion_tokens`` (required from OpenAI and Azure; counted as 0 when a compatible
server omits it).

Errors: ``{"error": {"message", "type", "code"}}`` with the HTTP status, mapped by
:func:`~routewise.backends.providers.base.error_from_status`; ``error.code ==
"content_filter"`` (Azure's HTTP 400 when the prompt is filtered) is a ``refusal``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from routewise.backends.base import (
    BackendConfig,
    Completion,
    ErrorCategory,
    GenerationRequest,
    ProviderError,
    Usage,
)
from routewise.backends.providers.base import Provider, non_negative_int
from routewise.errors import ConfigError

__all__ = ["AzureOpenAIProvider", "OpenAICompatibleProvider", "OpenAIProvider"]

_FINISH = {"stop": "stop", "length": "length", "content_filter": "refusal"}


def _schema_name(name: str) -> str:
    """OpenAI wants ``^[a-zA-Z0-9_-]{1,64}$``."""
    clean = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]
    return clean or "output"


class OpenAIProvider(Provider):
    """OpenAI's Chat Completions API (``https://api.openai.com/v1`` unless ``base_url``).

    Sends ``Authorization: Bearer <key>`` (``OPENAI_API_KEY`` by default); a missing key is
    an ``auth_error`` at call time.

    Examples
    --------
    >>> import asyncio, json, httpx
    >>> from routewise.backends.base import BackendConfig, Constraint, GenerationRequest
    >>> seen = []
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     seen.append(json.loads(request.content))
    ...     return httpx.Response(200, json={
    ...         "choices": [{"message": {"role": "assistant", "content": '{"a": 1}', "refusal": None},
    ...                      "finish_reason": "stop"}],
    ...         "usage": {"prompt_tokens": 20, "completion_tokens": 5}})
    >>> p = OpenAIProvider(BackendConfig.for_name("openai:gpt-4o-mini", api_key="sk-test"),
    ...                    transport=httpx.MockTransport(fake))
    >>> req = GenerationRequest(messages=[{"role": "user", "content": "one"}],
    ...                         constraint=Constraint("A", json_schema={"type": "object"}),
    ...                         constrain="json_schema", max_tokens=64)
    >>> c = asyncio.run(p.generate(req))
    >>> c.text, c.usage.output_tokens, c.finish_reason
    ('{"a": 1}', 5, 'stop')
    >>> seen[0]["response_format"]["type"], seen[0]["max_completion_tokens"], seen[0]["temperature"]
    ('json_schema', 64, 0.0)
    >>> asyncio.run(p.aclose())
    """

    provider_name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    #: The token-limit field of the request body.
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    #: Whether the response must carry ``usage`` (else it counts as 0).
    usage_required: ClassVar[bool] = True
    #: Whether the body names the model (Azure puts the deployment in the URL instead).
    send_model: ClassVar[bool] = True
    #: What ``base_url`` must be, for a provider that requires one (else the default is used).
    base_url_required: ClassVar[str | None] = None

    def __init__(
        self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if self.base_url_required is not None and not config.base_url:
            raise ConfigError(
                f"backends[{config.name!r}].base_url",
                f"required for {self.provider_name} ({self.base_url_required})",
            )
        super().__init__(config, transport)

    # ---------------------------------------------------------------- request
    def _url(self) -> str:
        return f"{(self.config.base_url or self.default_base_url).rstrip('/')}/chat/completions"

    def _params(self) -> dict[str, str] | None:
        return None

    def _auth_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._need_key(self.config.api_key_env or 'OPENAI_API_KEY')}"
        }

    def _response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
        return {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(name), "strict": True, "schema": schema},
        }

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.send_model:
            body["model"] = self.config.model
        body["messages"] = [dict(m) for m in request.messages]
        body[self.max_tokens_field] = self._max_tokens(request)
        body.update(self._sampler(request))
        if request.constrain == "json_schema":
            schema = self._json_schema(request)
            assert request.constraint is not None  # checked by _json_schema
            body["response_format"] = self._response_format(schema, request.constraint.name)
        elif request.constrain == "grammar":
            body.update(self._grammar_fields(request))
        return body

    def _grammar_fields(self, request: GenerationRequest) -> dict[str, Any]:
        raise self._unsupported_grammar()

    async def _generate(self, request: GenerationRequest) -> Completion:
        body = self._encode(self._body(request))
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **self._auth_headers(),
        }
        data = await self._post(self._url(), body, headers, params=self._params())
        return self._parse(data)

    # ---------------------------------------------------------------- response
    def _parse(self, data: dict[str, Any]) -> Completion:
        raw_usage = data.get("usage")
        if isinstance(raw_usage, dict):
            usage = Usage(
                input_tokens=non_negative_int(raw_usage.get("prompt_tokens")),
                output_tokens=non_negative_int(raw_usage.get("completion_tokens")),
            )
        elif self.usage_required:
            raise self._bad_response("no 'usage' in the chat completion")
        else:
            usage = Usage()
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self._bad_response("no 'choices' in the chat completion", usage=usage)
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise self._bad_response("no 'choices[0].message' in the chat completion", usage=usage)
        content = message.get("content")
        refusal = message.get("refusal")
        if content is not None and not isinstance(content, str):
            raise self._bad_response("'message.content' is not a string", usage=usage)
        raw_finish = choice.get("finish_reason")
        finish = _FINISH.get(raw_finish, raw_finish) if isinstance(raw_finish, str) else "stop"
        text = content or ""
        if isinstance(refusal, str) and refusal:
            text, finish = refusal, "refusal"
        model = data.get("model")
        return Completion(
            text=text,
            usage=usage,
            finish_reason=finish,
            model=model if isinstance(model, str) else self.config.model,
        )

    def _describe_error(
        self, status: int, headers: httpx.Headers, body: Any
    ) -> tuple[str, ErrorCategory | None, float | None]:
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return super()._describe_error(status, headers, body)
        message = err.get("message")
        text = message if isinstance(message, str) else ""
        code = err.get("code")
        etype = err.get("type")
        tags = [
            f"{k}={v}"
            for k, v in (("type", etype), ("code", code))
            if isinstance(v, str | int) and v != ""
        ]
        if tags and str(code) not in text:
            text = f"{text} ({', '.join(tags)})"
        inner = err.get("innererror")
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        category = None
        if code == "content_filter" or inner_code == "ResponsibleAIPolicyViolation":
            category = ErrorCategory.refusal
        return text, category, None


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: ``{base_url}/openai/deployments/{deployment}/chat/completions
    ?api-version={api_version}``, authenticated with an ``api-key`` header
    (``AZURE_OPENAI_API_KEY`` by default).

    ``base_url`` is the resource endpoint (``https://<resource>.openai.azure.com``) and is
    required; ``deployment`` defaults to the model part of the backend name and
    ``api_version`` to :attr:`DEFAULT_API_VERSION` (the current GA inference version). The
    body is OpenAI's without ``model``. A prompt stopped by the content filter (HTTP 400,
    ``error.code == "content_filter"``) raises ``ProviderError(refusal)``; a completion
    stopped by it (``finish_reason == "content_filter"``) returns ``finish_reason="refusal"``.

    Examples
    --------
    >>> import asyncio, httpx
    >>> from routewise.backends.base import BackendConfig, GenerationRequest
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     assert request.headers["api-key"] == "az-test"
    ...     print(request.url.path, request.url.params["api-version"])
    ...     return httpx.Response(200, json={
    ...         "choices": [{"message": {"role": "assistant", "content": None},
    ...                      "finish_reason": "content_filter"}],
    ...         "usage": {"prompt_tokens": 9, "completion_tokens": 0}})
    >>> cfg = BackendConfig.for_name("azure_openai:gpt-4o", base_url="https://res.openai.azure.com",
    ...                              api_key="az-test", deployment="prod-4o")
    >>> p = AzureOpenAIProvider(cfg, transport=httpx.MockTransport(fake))
    >>> c = asyncio.run(p.generate(GenerationRequest(messages=[{"role": "user", "content": "x"}])))
    /openai/deployments/prod-4o/chat/completions 2024-10-21
    >>> c.finish_reason, c.usage.input_tokens
    ('refusal', 9)
    >>> asyncio.run(p.aclose())
    """

    provider_name: ClassVar[str] = "azure_openai"
    DEFAULT_API_VERSION: ClassVar[str] = "2024-10-21"
    send_model: ClassVar[bool] = False

    base_url_required: ClassVar[str | None] = (
        "the resource endpoint, https://<resource>.openai.azure.com"
    )

    def _url(self) -> str:
        deployment = quote(self.config.deployment or self.config.model, safe="")
        assert self.config.base_url is not None
        return (
            f"{self.config.base_url.rstrip('/')}/openai/deployments/{deployment}/chat/completions"
        )

    def _params(self) -> dict[str, str] | None:
        return {"api-version": self.config.api_version or self.DEFAULT_API_VERSION}

    def _auth_headers(self) -> dict[str, str]:
        return {"api-key": self._need_key(self.config.api_key_env or "AZURE_OPENAI_API_KEY")}


class OpenAICompatibleProvider(OpenAIProvider):
    """A self-hosted server with an OpenAI-compatible ``/chat/completions`` (vLLM,
    llama.cpp ``llama-server``, llama-cpp-python, LM Studio).

    ``base_url`` (``http://host:port/v1``) is required; ``Authorization: Bearer`` is sent only
    when a key is configured. The only provider that enforces GBNF grammars
    (``supports_grammar``: llama.cpp's ``"grammar"`` field). ``schema_format="json_object"``
    sends the JSON schema as ``{"type": "json_object", "schema": …}`` (llama-cpp-python's
    server answers OpenAI's ``json_schema`` shape with HTTP 500). Sampler parameters go
    verbatim (``repeat_penalty``, ``top_k``, ``min_p``… are llama.cpp's); a missing ``usage``
    counts 0 tokens.

    Examples
    --------
    >>> import asyncio, json, httpx
    >>> from routewise.backends.base import BackendConfig, Constraint, GenerationRequest
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     body = json.loads(request.content)
    ...     print(sorted(body), "authorization" in request.headers)
    ...     return httpx.Response(200, json={"choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}]})
    >>> cfg = BackendConfig.for_name("openai_compatible:qwen2.5-7b", base_url="http://127.0.0.1:8080/v1",
    ...                              sampler={"temperature": 0.0, "repeat_penalty": 1.1})
    >>> p = OpenAICompatibleProvider(cfg, transport=httpx.MockTransport(fake))
    >>> req = GenerationRequest(messages=[{"role": "user", "content": "ok?"}],
    ...                         constraint=Constraint("yn", grammar='root ::= "yes" | "no"'), constrain="grammar")
    >>> c = asyncio.run(p.generate(req))
    ['grammar', 'max_tokens', 'messages', 'model', 'repeat_penalty', 'temperature'] False
    >>> c.text, c.usage.input_tokens
    ('yes', 0)
    >>> asyncio.run(p.aclose())
    """

    provider_name: ClassVar[str] = "openai_compatible"
    native_grammar: ClassVar[bool] = True
    max_tokens_field: ClassVar[str] = "max_tokens"
    usage_required: ClassVar[bool] = False

    base_url_required: ClassVar[str | None] = (
        "the server's OpenAI-style root, e.g. http://127.0.0.1:8080/v1"
    )

    def _url(self) -> str:
        assert self.config.base_url is not None
        return f"{self.config.base_url.rstrip('/')}/chat/completions"

    def _auth_headers(self) -> dict[str, str]:
        key = self.config.resolve_api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _response_format(self, schema: dict[str, Any], name: str) -> dict[str, Any]:
        if self.config.schema_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return super()._response_format(schema, name)

    def _grammar_fields(self, request: GenerationRequest) -> dict[str, Any]:
        if request.constraint is None or request.constraint.grammar is None:
            raise ProviderError(
                ErrorCategory.bad_request, "constrain='grammar' needs constraint.grammar"
            )
        return {"grammar": request.constraint.grammar}
