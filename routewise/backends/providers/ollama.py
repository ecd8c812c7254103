"""Ollama's native chat API, ``POST {base_url}/api/chat`` (``http://127.0.0.1:11434`` unless
``base_url``).

Request: ``model``, ``messages``, ``stream: false``, ``options`` (the sampler parameters
verbatim — Ollama's names are ``temperature``, ``top_p``, ``top_k``, ``seed``,
``repeat_penalty``, ``stop``… — plus ``num_predict`` = the token limit) and, for a JSON-schema
constraint, ``format``: the schema itself (Ollama ≥ 0.5 enforces it). Ollama has no GBNF
grammar field. A configured key is sent as ``Authorization: Bearer`` (Ollama behind an
authenticating proxy); none is needed locally.

Response: ``message.content``, ``done_reason`` (``"stop"``, ``"length"``; others as given),
usage from ``prompt_eval_count`` / ``eval_count`` (0 when absent: Ollama omits
``prompt_eval_count`` when the prompt was cached). Ollama has no refusal signal: a refusal is
ordinary text for the output mode to reject.

Errors: ``{"error": "…"}`` with the status; an unknown model is HTTP 404 → ``bad_request``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from routewise.backends.base import Completion, GenerationRequest, Usage
from routewise.backends.providers.base import Provider, non_negative_int

__all__ = ["OllamaProvider"]


class OllamaProvider(Provider):
    """A local (or remote) Ollama server's ``/api/chat``, non-streaming.

    Examples
    --------
    >>> import asyncio, json, httpx
    >>> from routewise.backends.base import BackendConfig, Constraint, GenerationRequest
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     body = json.loads(request.content)
    ...     print(request.url.path, body["stream"], body["options"], body["format"])
    ...     return httpx.Response(200, json={"model": "llama3.1:8b", "message": {"role": "assistant",
    ...         "content": '{"ok": true}'}, "done": True, "done_reason": "stop",
    ...         "prompt_eval_count": 26, "eval_count": 7})
    >>> p = OllamaProvider(BackendConfig.for_name("ollama:llama3.1:8b"), transport=httpx.MockTransport(fake))
    >>> req = GenerationRequest(messages=[{"role": "user", "content": "ok?"}], max_tokens=50,
    ...     constraint=Constraint("Ok", json_schema={"type": "object"}), constrain="json_schema")
    >>> c = asyncio.run(p.generate(req))
    /api/chat False {'temperature': 0.0, 'num_predict': 50} {'type': 'object'}
    >>> c.text, c.usage.input_tokens, c.usage.output_tokens
    ('{"ok": true}', 26, 7)
    >>> asyncio.run(p.aclose())
    """

    provider_name: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str] = "http://127.0.0.1:11434"

    def _url(self) -> str:
        return f"{(self.config.base_url or self.default_base_url).rstrip('/')}/api/chat"

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [dict(m) for m in request.messages],
            "stream": False,
            "options": {**self._sampler(request), "num_predict": self._max_tokens(request)},
        }
        if request.constrain == "json_schema":
            body["format"] = self._json_schema(request)
        elif request.constrain == "grammar":
            raise self._unsupported_grammar()
        return body

    async def _generate(self, request: GenerationRequest) -> Completion:
        body = self._encode(self._body(request))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.config.resolve_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = await self._post(self._url(), body, headers)
        usage = Usage(
            input_tokens=non_negative_int(data.get("prompt_eval_count")),
            output_tokens=non_negative_int(data.get("eval_count")),
        )
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            err = data.get("error")
            what = (
                f"error in a 2xx body: {err}"
                if isinstance(err, str)
                else "no 'message.content' in the chat response"
            )
            raise self._bad_response(what, usage=usage)
        reason = data.get("done_reason")
        model = data.get("model")
        return Completion(
            text=content,
            usage=usage,
            finish_reason=reason if isinstance(reason, str) and reason else "stop",
            model=model if isinstance(model, str) else self.config.model,
        )
