"""Amazon Bedrock's Converse API, ``POST https://bedrock-runtime.{region}.amazonaws.com
/model/{modelId}/converse``, signed with AWS Signature Version 4 by botocore.

Needs the ``bedrock`` extra (``pip install 'routewise[bedrock]'``, i.e. botocore). The region
is ``config.region``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` at construction (missing:
:class:`~routewise.errors.ConfigError` naming ``backends[...].region``). Credentials are read
from the environment variables the config names (``aws_access_key_id_env``,
``aws_secret_access_key_env``, optional ``aws_session_token_env``) at every call, so rotated
session credentials are picked up; missing ones are a ``ProviderError(auth_error)`` at call
time. ``base_url`` replaces the endpoint (VPC endpoints, tests); the signature covers the URL
actually used and the exact body bytes sent.

Request: ``messages`` (``[{"role", "content": [{"text"}]}]``, consecutive same-role
messages merged, as Converse requires alternation), ``system`` (``[{"text"}]``),
``inferenceConfig`` (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``); other
sampler keys (``top_k``…) go to ``additionalModelRequestFields`` verbatim.

Structured output: Converse's native ``outputConfig.textFormat`` (``{"type":
"json_schema", "structure": {"jsonSchema": {"schema": "<the schema as a JSON string>",
"name"}}}``) is sent when the request asks for a JSON-schema constraint. It is documented
only for some models (Claude Sonnet 4.5, Haiku 4.5, Opus 4.5 / 4.6 and some open-weight
models), so ``supports_json_schema`` is true only for model ids matching
:attr:`BedrockProvider.STRUCTURED_OUTPUT_MODELS` (after any cross-region profile prefix
such as ``us.``); every other model gets instructions only.

Response: ``output.message.content[*].text`` joined; ``stopReason`` ``end_turn`` /
``stop_sequence`` → ``"stop"``, ``max_tokens`` / ``model_context_window_exceeded`` →
``"length"``, ``content_filtered`` / ``guardrail_intervened`` → ``"refusal"``, others as
given; usage ``usage.inputTokens`` / ``usage.outputTokens``.

Errors: the ``x-amzn-ErrorType`` header (``ThrottlingException:http://…``, suffix dropped)
with a ``{"message": …}`` body: ``ThrottlingException``, ``ModelNotReadyException``,
``ServiceQuotaExceededException`` → ``rate_limited``; ``AccessDeniedException``,
``UnrecognizedClientException``, ``InvalidSignatureException``, ``ExpiredTokenException``…
→ ``auth_error``; ``ValidationException``, ``ResourceNotFoundException`` → ``bad_request``;
``ModelTimeoutException`` (408) → ``timeout``; ``InternalServerException``,
``ServiceUnavailableException``, ``ModelErrorException`` (424) → ``server_error``; unknown
types by status.
"""

from __future__ import annotations

import json
import os
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

__all__ = ["BedrockProvider"]

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "refusal",
    "guardrail_intervened": "refusal",
}

_ERROR_TYPES: dict[str, ErrorCategory] = {
    "ThrottlingException": ErrorCategory.rate_limited,
    "ModelNotReadyException": ErrorCategory.rate_limited,
    "ServiceQuotaExceededException": ErrorCategory.rate_limited,
    "TooManyRequestsException": ErrorCategory.rate_limited,
    "AccessDeniedException": ErrorCategory.auth_error,
    "UnrecognizedClientException": ErrorCategory.auth_error,
    "InvalidSignatureException": ErrorCategory.auth_error,
    "IncompleteSignatureException": ErrorCategory.auth_error,
    "MissingAuthenticationTokenException": ErrorCategory.auth_error,
    "ExpiredTokenException": ErrorCategory.auth_error,
    "ValidationException": ErrorCategory.bad_request,
    "ResourceNotFoundException": ErrorCategory.bad_request,
    "ModelTimeoutException": ErrorCategory.timeout,
    "InternalServerException": ErrorCategory.server_error,
    "ServiceUnavailableException": ErrorCategory.server_error,
    "ModelErrorException": ErrorCategory.server_error,
}

_PROFILE_PREFIX = re.compile(r"^(?:us-gov|us|eu|apac|jp|au|ca|global)\.")


class BedrockProvider(Provider):
    """Amazon Bedrock Converse, SigV4-signed with botocore (see the module docstring).

    Examples
    --------
    >>> import asyncio, json, httpx, os
    >>> from routewise.backends.base import BackendConfig, GenerationRequest
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     auth = request.headers["authorization"]
    ...     print(request.url.raw_path.decode(), auth.split(",")[0])
    ...     return httpx.Response(200, json={
    ...         "output": {"message": {"role": "assistant", "content": [{"text": "hello"}]}},
    ...         "stopReason": "end_turn", "usage": {"inputTokens": 8, "outputTokens": 2, "totalTokens": 10},
    ...         "metrics": {"latencyMs": 100}})
    >>> os.environ["DOCTEST_AKID"], os.environ["DOCTEST_SECRET"] = "AKIDEXAMPLE", "doctest-secret-key"
    >>> cfg = BackendConfig.for_name("bedrock:amazon.nova-lite-v1:0", region="us-east-1",
    ...     aws_access_key_id_env="DOCTEST_AKID", aws_secret_access_key_env="DOCTEST_SECRET",
    ...     aws_session_token_env="DOCTEST_NO_TOKEN")
    >>> p = BedrockProvider(cfg, transport=httpx.MockTransport(fake))
    >>> p.supports_json_schema
    False
    >>> c = asyncio.run(p.generate(GenerationRequest(messages=[{"role": "user", "content": "hi"}])))
    ... # doctest: +ELLIPSIS
    /model/amazon.nova-lite-v1%3A0/converse AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/.../us-east-1/bedrock/aws4_request
    >>> c.text, c.usage.output_tokens, c.finish_reason
    ('hello', 2, 'stop')
    >>> asyncio.run(p.aclose())
    >>> del os.environ["DOCTEST_AKID"], os.environ["DOCTEST_SECRET"]
    """

    provider_name: ClassVar[str] = "bedrock"
    #: SigV4 signing name of the Bedrock runtime.
    SIGNING_NAME: ClassVar[str] = "bedrock"
    #: Model-id prefixes documented to support Converse ``outputConfig.textFormat``.
    STRUCTURED_OUTPUT_MODELS: ClassVar[tuple[str, ...]] = (
        "anthropic.claude-sonnet-4-5",
        "anthropic.claude-haiku-4-5",
        "anthropic.claude-opus-4-5",
        "anthropic.claude-opus-4-6",
    )

    def __init__(
        self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        try:
            import botocore.auth  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:  # pragma: no cover - botocore is in the test environment
            raise ConfigError(
                f"backends[{config.name!r}]",
                "bedrock needs botocore: pip install 'routewise[bedrock]'",
            ) from None
        region = (
            config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        )
        if not region:
            raise ConfigError(
                f"backends[{config.name!r}].region",
                "required for bedrock (or set AWS_REGION / AWS_DEFAULT_REGION)",
            )
        super().__init__(config, transport)
        self.region = region

    @property
    def supports_json_schema(self) -> bool:
        """True for models documented to support Converse structured outputs."""
        model = _PROFILE_PREFIX.sub("", self.config.model)
        return model.startswith(self.STRUCTURED_OUTPUT_MODELS)

    def _secrets(self) -> list[str | None]:
        env = os.environ
        return [
            env.get(self.config.aws_secret_access_key_env),
            env.get(self.config.aws_session_token_env),
            env.get(self.config.aws_access_key_id_env),
        ]

    def _url(self) -> str:
        base = self.config.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"
        return f"{base.rstrip('/')}/model/{quote(self.config.model, safe='')}/converse"

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        system: list[dict[str, str]] = []
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            role = m.get("role", "user")
            text = m.get("content", "")
            if role == "system":
                system.append({"text": text})
                continue
            role = "assistant" if role in ("assistant", "model") else "user"
            if messages and messages[-1]["role"] == role:
                messages[-1]["content"].append({"text": text})
            else:
                messages.append({"role": role, "content": [{"text": text}]})
        inference: dict[str, Any] = {"maxTokens": self._max_tokens(request)}
        extra: dict[str, Any] = {}
        for key, value in self._sampler(request).items():
            if key == "temperature":
                inference["temperature"] = value
            elif key == "top_p":
                inference["topP"] = value
            elif key in ("stop", "stop_sequences"):
                inference["stopSequences"] = [value] if isinstance(value, str) else value
            else:
                extra[key] = value
        body: dict[str, Any] = {"messages": messages}
        if system:
            body["system"] = system
        body["inferenceConfig"] = inference
        if extra:
            body["additionalModelRequestFields"] = extra
        if request.constrain == "json_schema":
            schema = self._json_schema(request)
            assert request.constraint is not None
            body["outputConfig"] = {
                "textFormat": {
                    "type": "json_schema",
                    "structure": {
                        "jsonSchema": {
                            "schema": json.dumps(schema, ensure_ascii=False),
                            "name": re.sub(r"[^a-zA-Z0-9_-]", "_", request.constraint.name)[:64]
                            or "output",
                        }
                    },
                }
            }
        elif request.constrain == "grammar":
            raise self._unsupported_grammar()
        return body

    def _signed_headers(self, url: str, body: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
        from botocore.credentials import Credentials  # type: ignore[import-untyped]

        env = os.environ
        key_id = env.get(self.config.aws_access_key_id_env)
        secret = env.get(self.config.aws_secret_access_key_env)
        token = env.get(self.config.aws_session_token_env) or None
        if not key_id or not secret:
            raise ProviderError(
                ErrorCategory.auth_error,
                f"no AWS credentials for {self.config.name}: set {self.config.aws_access_key_id_env} "
                f"and {self.config.aws_secret_access_key_env}",
            )
        aws_request = AWSRequest(
            method="POST",
            url=url,
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        SigV4Auth(Credentials(key_id, secret, token), self.SIGNING_NAME, self.region).add_auth(
            aws_request
        )
        return {str(k): str(v) for k, v in aws_request.headers.items()}

    async def _generate(self, request: GenerationRequest) -> Completion:
        body = self._encode(self._body(request))
        url = self._url()
        data = await self._post(url, body, self._signed_headers(url, body))
        raw_usage = data.get("usage")
        if not isinstance(raw_usage, dict):
            raise self._bad_response("no 'usage' in the Converse response")
        usage = Usage(
            input_tokens=non_negative_int(raw_usage.get("inputTokens")),
            output_tokens=non_negative_int(raw_usage.get("outputTokens")),
        )
        output = data.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            raise self._bad_response(
                "no 'output.message.content' in the Converse response", usage=usage
            )
        text = "".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        reason = data.get("stopReason")
        finish = _FINISH.get(reason, reason) if isinstance(reason, str) else "stop"
        return Completion(text=text, usage=usage, finish_reason=finish, model=self.config.model)

    def _describe_error(
        self, status: int, headers: httpx.Headers, body: Any
    ) -> tuple[str, ErrorCategory | None, float | None]:
        etype = headers.get("x-amzn-errortype", "").split(":", 1)[0].strip()
        if not etype and isinstance(body, dict):
            raw = body.get("__type") or body.get("code") or ""
            etype = str(raw).rsplit("#", 1)[-1]
        message, _, _ = super()._describe_error(status, headers, body)
        text = f"{etype}: {message}" if etype else message
        return text, _ERROR_TYPES.get(etype), None
