"""Shared types of the backends subpackage: backend configuration, provider requests and
responses, error categories, and the output-codec protocol.

Two families of objects meet here:

* **Providers** (``routewise.backends.providers``) turn a :class:`GenerationRequest` into a
  :class:`Completion` over HTTP, or raise :class:`ProviderError` with an
  :class:`ErrorCategory`. They know nothing about schemas beyond passing a
  :class:`Constraint` through in the provider's native shape.
* **Output codecs** (``routewise.backends.modes``) realize one output mode for one pydantic
  schema: the instructions that teach the model the emitted form, the constraint (JSON
  schema and/or GBNF grammar) of that form, and the local decoding back to the full object.

The :class:`routewise.Router` joins them and turns what happened into an
:class:`routewise.Outcome`.

Examples
--------
>>> cfg = BackendConfig.for_name("openai:gpt-4o-mini")
>>> cfg.provider, cfg.model, cfg.api_key_env
('openai', 'gpt-4o-mini', 'OPENAI_API_KEY')
>>> Usage(input_tokens=1200, output_tokens=300).cost_usd(0.15, 0.60)
0.00036
>>> ProviderError(ErrorCategory.rate_limited, "slow down", status=429, retry_after_s=2.0).category
<ErrorCategory.rate_limited: 'rate_limited'>
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from routewise.errors import ConfigError, RoutewiseError

__all__ = [
    "PROVIDERS",
    "BackendConfig",
    "Completion",
    "Constraint",
    "ErrorCategory",
    "GenerationRequest",
    "ModeResult",
    "ProviderError",
    "Usage",
]

#: Provider names accepted before the colon of a backend name.
PROVIDERS: tuple[str, ...] = (
    "openai",
    "azure_openai",
    "openai_compatible",
    "google_genai",
    "ollama",
    "bedrock",
)

_DEFAULT_KEY_ENV: dict[str, str | None] = {
    "openai": "OPENAI_API_KEY",
    "azure_openai": "AZURE_OPENAI_API_KEY",
    "openai_compatible": None,
    "google_genai": "GEMINI_API_KEY",
    "ollama": None,
    "bedrock": None,  # AWS credentials: aws_access_key_id_env / aws_secret_access_key_env
}


class ErrorCategory(StrEnum):
    """Why an arm failed; becomes :attr:`routewise.Outcome.error`.

    Provider/transport failures: ``timeout``, ``rate_limited`` (HTTP 429, with
    ``retry_after_s`` when the provider sent Retry-After), ``server_error`` (5xx),
    ``auth_error`` (401/403), ``bad_request`` (other 4xx), ``connection_error``,
    ``bad_response`` (a provider envelope that is not the documented JSON shape).
    Model-output failures: ``truncated`` (stopped on the token limit), ``refusal`` (the
    provider or model declined / safety-blocked), ``malformed_output`` (the emitted text
    cannot be parsed in its mode). A parsed output that fails schema validation is not an
    error: the outcome is ``valid=False`` with the failed fields in :class:`ModeResult`.
    """

    timeout = "timeout"
    rate_limited = "rate_limited"
    server_error = "server_error"
    auth_error = "auth_error"
    bad_request = "bad_request"
    connection_error = "connection_error"
    bad_response = "bad_response"
    truncated = "truncated"
    refusal = "refusal"
    malformed_output = "malformed_output"


class ProviderError(RoutewiseError):
    """A provider call failed; the router turns it into an outcome, never lets it escape.

    ``message`` must never contain credentials (providers build it from the response body
    and status only).
    """

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.category = category
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.usage = usage
        super().__init__(f"{category.value}: {message}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting reported by the provider for one call."""

    input_tokens: int = 0
    output_tokens: int = 0

    def cost_usd(self, price_input_per_mtok: float, price_output_per_mtok: float) -> float:
        """Cost in USD given prices per million input / output tokens."""
        return round(
            (self.input_tokens * price_input_per_mtok + self.output_tokens * price_output_per_mtok)
            / 1_000_000,
            12,
        )


@dataclass(frozen=True, slots=True)
class Constraint:
    """How to constrain decoding to the emitted form of one (schema, mode).

    ``json_schema`` is the JSON schema of the emitted form (``None`` when the form is not
    JSON); ``grammar`` is an equivalent GBNF grammar (llama.cpp); ``name`` names the
    schema for providers that want one (OpenAI ``json_schema.name``).
    """

    name: str
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One provider call: chat messages plus an optional decoding constraint.

    ``constrain`` selects what the provider sends: ``"json_schema"`` the provider's native
    structured-output feature with ``constraint.json_schema``; ``"grammar"`` a GBNF grammar
    (llama.cpp runtimes only); ``"none"`` instructions only.
    """

    messages: list[dict[str, str]]
    constraint: Constraint | None = None
    constrain: Literal["json_schema", "grammar", "none"] = "none"
    max_tokens: int | None = None
    sampler: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """A provider's answer: the text, token usage and why generation stopped.

    ``finish_reason`` is normalized to ``"stop"``, ``"length"``, ``"refusal"`` or the
    provider's own value when it is none of those.
    """

    text: str
    usage: Usage
    finish_reason: str = "stop"
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ModeResult:
    """What an output codec made of a model's text.

    ``parse_ok``: the emitted form could be read; ``schema_valid``: the rebuilt object
    validated against the schema (``failed_fields`` lists the dotted paths that did not);
    ``local_ms``: the local processing time the mode added (decode + rebuild + validate) —
    the burden it took off the model.
    """

    value: BaseModel | None
    parse_ok: bool
    schema_valid: bool
    failed_fields: tuple[str, ...] = ()
    local_ms: float = 0.0
    error: str | None = None


class BackendConfig(BaseModel):
    """Settings of one backend (``provider:model``), from the constructor or
    ``[backends."provider:model"]`` in the config file.

    ``constrain`` chooses constrained decoding for every mode of this backend:
    ``"auto"`` uses the provider's native JSON-schema feature where the mode's emitted form
    is JSON (and a grammar on llama.cpp runtimes where it is not); ``"json_schema"``,
    ``"grammar"`` and ``"none"`` force one way. ``schema_format`` picks the shape of the
    JSON-schema field for ``openai_compatible`` servers: OpenAI's
    ``{"type": "json_schema", ...}`` or llama-cpp-python's ``{"type": "json_object",
    "schema": ...}``. ``sampler`` pins sampler parameters (temperature, top_p, seed,
    repeat_penalty…), sent verbatim, so that a backend is runtime + model + sampler.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: SecretStr | None = None
    price_input_per_mtok: float | None = Field(default=None, ge=0)
    price_output_per_mtok: float | None = Field(default=None, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=1024, ge=1)
    constrain: Literal["auto", "json_schema", "grammar", "none"] = "auto"
    schema_format: Literal["openai", "json_object"] = "openai"
    sampler: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0})
    headers: dict[str, str] = Field(default_factory=dict)
    # Azure OpenAI
    api_version: str | None = None
    deployment: str | None = None
    # AWS Bedrock
    region: str | None = None
    aws_access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    aws_secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"
    aws_session_token_env: str = "AWS_SESSION_TOKEN"

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        provider, sep, model = v.partition(":")
        if not sep or not model:
            raise ValueError(
                f"{v!r} must be 'provider:model' (provider one of {', '.join(PROVIDERS)})"
            )
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
        if "/" in v:
            raise ValueError(f"{v!r} must not contain '/' (it separates the mode in arm ids)")
        return v

    @classmethod
    def for_name(cls, name: str, **settings: Any) -> BackendConfig:
        """Build a config for ``name`` with provider defaults, naming the bad field on error."""
        from pydantic import ValidationError

        try:
            cfg = cls(name=name, **settings)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "backend"
            raise ConfigError(f"backends[{name!r}].{loc}", err["msg"]) from None
        if cfg.api_key_env is None and _DEFAULT_KEY_ENV[cfg.provider] is not None:
            cfg = cfg.model_copy(update={"api_key_env": _DEFAULT_KEY_ENV[cfg.provider]})
        return cfg

    @property
    def provider(self) -> str:
        """The part of the name before the colon (``openai``, ``bedrock``…)."""
        return self.name.partition(":")[0]

    @property
    def model(self) -> str:
        """The part of the name after the colon."""
        return self.name.partition(":")[2]

    def resolve_api_key(self) -> str | None:
        """The API key: ``api_key`` if set, else the ``api_key_env`` variable, else None."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return None
