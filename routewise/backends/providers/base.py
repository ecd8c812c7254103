"""The provider protocol and the HTTP error mapping every provider shares.

A :class:`Provider` turns a :class:`~routewise.backends.base.GenerationRequest` into a
:class:`~routewise.backends.base.Completion` with one HTTP call, or raises
:class:`~routewise.backends.base.ProviderError` — and nothing else: transport failures,
error statuses and undocumented bodies all become an :class:`ErrorCategory`.

The shared mapping (:func:`error_from_status`, used by every provider unless the provider's
documented error body says more):

=====================================  ====================
what happened                          category
=====================================  ====================
``httpx.TimeoutException``             ``timeout``
other ``httpx`` transport errors       ``connection_error``
HTTP 429                               ``rate_limited`` (``retry_after_s`` from
                                       ``retry-after-ms``, ``Retry-After`` seconds or
                                       HTTP-date, or a provider body hint)
HTTP 5xx                               ``server_error``
HTTP 401 / 403                         ``auth_error``
HTTP 408                               ``timeout``
other 4xx                              ``bad_request``
2xx that is not JSON / lacks the
documented fields                      ``bad_response``
=====================================  ====================

Stopping on the token limit or a refusal is *not* an error: the provider returns a
:class:`Completion` with ``finish_reason`` ``"length"`` / ``"refusal"`` and its usage, so
the cost is still accounted.

Error messages are short (``"HTTP 429: <the provider's message>"``), built from the status
and the response body only, and every credential the provider holds is masked out of them
(some APIs echo the key they rejected), so neither the exception, its ``repr`` nor the
``provider_error`` log line ever carries a secret.

Examples
--------
>>> error_from_status(429, "slow down", retry_after_s=2.0).category
<ErrorCategory.rate_limited: 'rate_limited'>
>>> str(error_from_status(503, "overloaded"))
'server_error: HTTP 503: overloaded'
>>> parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"})
1.5
>>> redact("bad key sk-abc123", ["sk-abc123"])
'bad key [redacted]'
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar

import httpx
import structlog

from routewise.backends.base import (
    BackendConfig,
    Completion,
    ErrorCategory,
    GenerationRequest,
    ProviderError,
    Usage,
)

__all__ = [
    "Provider",
    "error_from_status",
    "parse_retry_after",
    "redact",
]

_log = structlog.get_logger("routewise.providers")

#: Longest provider message kept in an error (the rest is cut with an ellipsis).
MAX_MESSAGE_CHARS = 300


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        return text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI, Azure) or ``Retry-After`` (seconds
    or an HTTP-date), or ``None`` when neither is usable.

    >>> parse_retry_after({"Retry-After": "7"})
    7.0
    >>> parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
    ...                   now=datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC))
    10.0
    >>> parse_retry_after({"retry-after": "soon"}) is None
    True
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = lower.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now if now is not None else datetime.now(UTC)
        return max(0.0, (when - current).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def error_from_status(
    status: int,
    message: str,
    *,
    category: ErrorCategory | None = None,
    retry_after_s: float | None = None,
    usage: Usage | None = None,
) -> ProviderError:
    """The :class:`ProviderError` of an HTTP error status (see the module table);
    ``category`` overrides the status-based choice when the provider's body says more."""
    if category is None:
        if status == 429:
            category = ErrorCategory.rate_limited
        elif status >= 500:
            category = ErrorCategory.server_error
        elif status in (401, 403):
            category = ErrorCategory.auth_error
        elif status == 408:
            category = ErrorCategory.timeout
        elif 400 <= status < 500:
            category = ErrorCategory.bad_request
        else:
            category = ErrorCategory.bad_response
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    return ProviderError(category, text, status=status, retry_after_s=retry_after_s, usage=usage)


def non_negative_int(value: Any) -> int:
    """A token count from a response field: ints (or integral floats/strings) ≥ 0, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


class Provider(ABC):
    """One backend's HTTP client: ``generate`` a completion or raise :class:`ProviderError`.

    ``config`` is the backend's :class:`BackendConfig`; ``transport`` replaces httpx's network
    transport (tests: ``httpx.MockTransport``, ``httpx.ASGITransport``). The
    ``httpx.AsyncClient`` (timeout ``config.timeout_s``, ``config.headers`` on every request)
    is built on first use; :meth:`aclose` closes it. ``supports_json_schema`` /
    ``supports_grammar`` say which constraints the provider enforces natively.

    Subclasses implement :meth:`_generate` (build the request, parse the documented
    response) and may refine :meth:`_describe_error` for their documented error bodies.

    Examples
    --------
    >>> import asyncio, httpx
    >>> from routewise.backends.base import BackendConfig, GenerationRequest
    >>> from routewise.backends.providers import make_provider
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     return httpx.Response(429, headers={"retry-after": "3"},
    ...                           json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    >>> p = make_provider(BackendConfig.for_name("openai:gpt-4o-mini", api_key="sk-test"),
    ...                   transport=httpx.MockTransport(fake))
    >>> async def call() -> None:
    ...     try:
    ...         await p.generate(GenerationRequest(messages=[{"role": "user", "content": "hi"}]))
    ...     except ProviderError as exc:
    ...         print(exc.category.value, exc.status, exc.retry_after_s)
    ...     finally:
    ...         await p.aclose()
    >>> from structlog.testing import capture_logs
    >>> with capture_logs() as logs:
    ...     asyncio.run(call())
    rate_limited 429 3.0
    >>> logs[0]["event"], logs[0]["message"]
    ('provider_error', 'HTTP 429: Rate limit reached (code=rate_limit_exceeded)')
    """

    #: The provider name before the colon of a backend name.
    provider_name: ClassVar[str]
    #: Whether :class:`GenerationRequest` ``constrain="json_schema"`` is enforced natively.
    native_json_schema: ClassVar[bool] = True
    #: Whether ``constrain="grammar"`` (GBNF) is enforced natively.
    native_grammar: ClassVar[bool] = False

    def __init__(
        self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.config.name!r})"

    @property
    def supports_json_schema(self) -> bool:
        """Whether the provider can enforce a JSON schema on the output natively."""
        return self.native_json_schema

    @property
    def supports_grammar(self) -> bool:
        """Whether the provider can enforce a GBNF grammar on the output natively."""
        return self.native_grammar

    # ------------------------------------------------------------------ public API
    async def generate(self, request: GenerationRequest) -> Completion:
        """Run ``request``; return the :class:`Completion` or raise :class:`ProviderError`."""
        t0 = time.perf_counter()
        try:
            return await self._generate(request)
        except ProviderError as exc:
            error = exc
        except httpx.TimeoutException as exc:
            error = ProviderError(
                ErrorCategory.timeout,
                f"no response within {self.config.timeout_s:g}s ({type(exc).__name__})",
            )
        except httpx.HTTPError as exc:  # ConnectError, RemoteProtocolError, ReadError…
            detail = self._redact(str(exc)) or "no detail"
            error = ProviderError(
                ErrorCategory.connection_error, f"{type(exc).__name__}: {_shorten(detail)}"
            )
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            # A body of the documented type but an undocumented shape slipped past a check.
            error = ProviderError(
                ErrorCategory.bad_response, f"undocumented response shape ({type(exc).__name__})"
            )
        error.message = self._redact(error.message)
        error.args = (self._redact(str(error.args[0])) if error.args else error.message,)
        _log.warning(
            "provider_error",
            backend=self.config.name,
            category=error.category.value,
            status=error.status,
            retry_after_s=error.retry_after_s,
            message=error.message,
            elapsed_ms=round((time.perf_counter() - t0) * 1000.0, 1),
        )
        raise error

    async def aclose(self) -> None:
        """Close the HTTP client (a later :meth:`generate` opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ for subclasses
    @abstractmethod
    async def _generate(self, request: GenerationRequest) -> Completion:
        """Build the provider request, send it with :meth:`_post`, parse the response."""

    def _secrets(self) -> list[str | None]:
        """Credentials to mask out of every message."""
        try:
            return [self.config.resolve_api_key()]
        except Exception:  # pragma: no cover - resolve_api_key only reads the environment
            return []

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets())

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout_s),
                transport=self.transport,
                headers=self.config.headers,
                follow_redirects=False,
            )
        return self._client

    def _sampler(self, request: GenerationRequest) -> dict[str, Any]:
        """The backend's pinned sampler parameters, overridden by the request's."""
        return {**self.config.sampler, **request.sampler}

    def _max_tokens(self, request: GenerationRequest) -> int:
        return request.max_tokens if request.max_tokens is not None else self.config.max_tokens

    def _need_key(self, hint: str) -> str:
        key = self.config.resolve_api_key()
        if not key:
            raise ProviderError(
                ErrorCategory.auth_error,
                f"no API key for {self.config.name}: set {hint} or backends[{self.config.name!r}].api_key",
            )
        return key

    @staticmethod
    def _json_schema(request: GenerationRequest) -> dict[str, Any]:
        if request.constraint is None or request.constraint.json_schema is None:
            raise ProviderError(
                ErrorCategory.bad_request, "constrain='json_schema' needs constraint.json_schema"
            )
        return request.constraint.json_schema

    def _unsupported_grammar(self) -> ProviderError:
        return ProviderError(
            ErrorCategory.bad_request,
            f"{self.provider_name} cannot enforce a GBNF grammar (only openai_compatible llama.cpp runtimes can)",
        )

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        """The JSON bytes of a request body (a sampler value JSON cannot carry is a
        ``bad_request``, not a crash)."""
        try:
            return json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ProviderError(
                ErrorCategory.bad_request, f"request body is not JSON-serializable: {exc}"
            ) from None

    async def _post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST ``body``; return the JSON object of a 2xx response or raise the mapped error."""
        response = await self._http().post(url, content=body, headers=dict(headers), params=params)
        if not 200 <= response.status_code < 300:
            raise self._error_from_response(response)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            ctype = response.headers.get("content-type", "?")
            raise ProviderError(
                ErrorCategory.bad_response,
                f"HTTP {response.status_code}: body is not JSON ({len(response.content)} bytes, {ctype})",
                status=response.status_code,
            ) from None
        if not isinstance(data, dict):
            raise self._bad_response(
                f"expected a JSON object, got {type(data).__name__}", response.status_code
            )
        return data

    @staticmethod
    def _bad_response(
        what: str, status: int | None = 200, usage: Usage | None = None
    ) -> ProviderError:
        return ProviderError(
            ErrorCategory.bad_response, f"HTTP {status}: {what}", status=status, usage=usage
        )

    def _error_from_response(self, response: httpx.Response) -> ProviderError:
        try:
            body: Any = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        message, category, hint = self._describe_error(response.status_code, response.headers, body)
        if not message and body is None:
            message = response.content[:200].decode("utf-8", "replace")
        retry = parse_retry_after(response.headers)
        if retry is None:
            retry = hint
        return error_from_status(
            response.status_code,
            _shorten(self._redact(message)),
            category=category,
            retry_after_s=retry,
        )

    def _describe_error(
        self, status: int, headers: httpx.Headers, body: Any
    ) -> tuple[str, ErrorCategory | None, float | None]:
        """``(message, category override, retry-after hint)`` of an error response; the
        default reads ``{"error": {"message": …}}``, ``{"error": "…"}`` or ``{"message": …}``."""
        return _generic_message(body), None, None


def _generic_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            if isinstance(msg, str):
                return msg
        if isinstance(err, str):
            return err
        for key in ("message", "Message", "detail"):
            msg = body.get(key)
            if isinstance(msg, str):
                return msg
    return ""
