"""Google Gemini API (``generativelanguage.googleapis.com``), ``models/{model}:generateContent``.

Request: ``contents`` (roles ``user`` / ``model``; ``assistant`` messages become ``model``),
system messages joined into ``systemInstruction``, ``generationConfig`` with
``maxOutputTokens`` and the sampler parameters in Gemini's camelCase (``top_p`` → ``topP``,
``stop`` → ``stopSequences``…). Authenticated with ``x-goog-api-key`` (``GEMINI_API_KEY``).

Structured output uses ``responseMimeType: "application/json"`` + ``responseSchema``, the
OpenAPI-3.0 subset every Gemini model accepts; :func:`to_gemini_schema` converts the JSON
schema (``$ref`` inlined, ``anyOf [X, null]`` → X with ``nullable``, ``propertyOrdering`` set
to the schema's own key order, unsupported keywords dropped). The newer
``responseJsonSchema`` field, which takes JSON Schema as is, is not used: it is not accepted
by every model the API serves.

Response: ``candidates[0].content.parts[*].text`` joined (thought-summary parts skipped);
``finishReason`` ``STOP`` → ``"stop"``, ``MAX_TOKENS`` → ``"length"``, ``SAFETY`` /
``RECITATION`` / ``BLOCKLIST`` / ``PROHIBITED_CONTENT`` / ``SPII`` / ``IMAGE_SAFETY`` →
``"refusal"``, others lower-cased; a prompt blocked before generation
(``promptFeedback.blockReason``, no candidates) is a ``"refusal"`` completion. Usage:
``usageMetadata.promptTokenCount`` in, ``candidatesTokenCount + thoughtsTokenCount`` out
(thinking tokens are billed as output).

Errors: ``{"error": {"code", "message", "status", "details"}}``. ``RESOURCE_EXHAUSTED`` (429)
→ ``rate_limited``, its delay from a ``Retry-After`` header or the ``RetryInfo`` detail's
``retryDelay`` (``"7s"``); an invalid key (HTTP 400 with ``ErrorInfo.reason ==
"API_KEY_INVALID"``), ``UNAUTHENTICATED`` and ``PERMISSION_DENIED`` → ``auth_error``;
``DEADLINE_EXCEEDED`` → ``timeout``; the rest by status.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import httpx

from routewise.backends.base import (
    Completion,
    ErrorCategory,
    GenerationRequest,
    ProviderError,
    Usage,
)
from routewise.backends.providers.base import Provider, non_negative_int

__all__ = ["GeminiProvider", "to_gemini_schema"]

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "refusal",
    "RECITATION": "refusal",
    "BLOCKLIST": "refusal",
    "PROHIBITED_CONTENT": "refusal",
    "SPII": "refusal",
    "IMAGE_SAFETY": "refusal",
}

#: Keywords of the Gemini ``Schema`` object kept as they are.
_KEPT = (
    "description",
    "required",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
)
#: ``format`` values Gemini accepts, per type.
_FORMATS = {
    "STRING": {"date-time", "enum"},
    "NUMBER": {"float", "double"},
    "INTEGER": {"int32", "int64"},
}
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_MAX_DEPTH = 64


class SchemaConversionError(ValueError):
    """A JSON schema that has no Gemini ``responseSchema`` equivalent (a recursive ``$ref``)."""


def to_gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert a JSON schema to Gemini's ``responseSchema`` (an OpenAPI 3.0 subset).

    ``$ref`` (to ``#/$defs/…`` or ``#/definitions/…``) is inlined (a recursive reference
    raises :class:`SchemaConversionError`); a single-entry ``allOf`` is merged; ``anyOf`` /
    ``oneOf`` / a ``type`` list with ``null`` becomes ``nullable: true`` on the other branch (or
    an ``anyOf`` of the remaining branches); ``const`` becomes a one-value ``enum``; types are
    upper-cased; objects get ``propertyOrdering`` in the schema's key order (Gemini otherwise
    orders keys alphabetically). Dropped: ``additionalProperties``, ``title``, ``default``,
    ``examples``, ``$schema``, ``$defs``, ``exclusiveMinimum``/``Maximum``, ``multipleOf``,
    ``uniqueItems``, ``not``, ``format`` values Gemini does not accept, and ``enum`` values
    that are not all strings (Gemini's enums are strings). Tuple ``prefixItems`` become
    ``items`` (their ``anyOf`` when they differ); an empty schema (any value) becomes a
    ``STRING``, Gemini wanting a type for every node.

    Examples
    --------
    >>> to_gemini_schema({
    ...     "type": "object",
    ...     "properties": {
    ...         "name": {"type": "string", "title": "Name"},
    ...         "tag": {"anyOf": [{"$ref": "#/$defs/Tag"}, {"type": "null"}]},
    ...     },
    ...     "required": ["name"],
    ...     "additionalProperties": False,
    ...     "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
    ... })  # doctest: +NORMALIZE_WHITESPACE
    {'type': 'OBJECT', 'properties': {'name': {'type': 'STRING'},
      'tag': {'type': 'STRING', 'enum': ['a', 'b'], 'nullable': True}},
     'propertyOrdering': ['name', 'tag'], 'required': ['name']}
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        found = schema.get(key)
        if isinstance(found, dict):
            defs.update({f"#/{key}/{name}": sub for name, sub in found.items()})
    return _convert(schema, defs, (), 0)


def _resolve(ref: str, defs: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if ref in stack:
        raise SchemaConversionError(
            f"recursive $ref {ref!r} cannot be inlined for Gemini's responseSchema"
        )
    target = defs.get(ref)
    if not isinstance(target, dict):
        raise SchemaConversionError(f"unresolvable $ref {ref!r}")
    return target


def _convert(node: Any, defs: dict[str, Any], stack: tuple[str, ...], depth: int) -> dict[str, Any]:
    if depth > _MAX_DEPTH:
        raise SchemaConversionError("schema nests too deeply")
    if node is True or node == {}:
        return {"type": "STRING"}  # "anything": the closest Gemini can say
    if not isinstance(node, dict):
        raise SchemaConversionError(f"not a schema: {node!r}")
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _resolve(ref, defs, stack)
        inlined = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(inlined, defs, (*stack, ref), depth + 1)
    all_of = node.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:
            if isinstance(part, dict) and isinstance(part.get("$ref"), str):
                part = _resolve(part["$ref"], defs, stack)
            if isinstance(part, dict):
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                req = [*merged.get("required", []), *part.get("required", [])]
                merged.update(part)
                if props:
                    merged["properties"] = props
                if req:
                    merged["required"] = list(dict.fromkeys(req))
        merged.update({k: v for k, v in node.items() if k != "allOf"})
        return _convert(merged, defs, stack, depth + 1)

    rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(variants, list) and variants:
        non_null = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        nullable = len(non_null) < len(variants)
        if len(non_null) == 1:
            out = _convert({**non_null[0], **rest}, defs, stack, depth + 1)
        else:
            out = _convert_plain(rest, defs, stack, depth, allow_untyped=True)
            out["anyOf"] = [_convert(v, defs, stack, depth + 1) for v in non_null]
        if nullable:
            out["nullable"] = True
        return out
    return _convert_plain(node, defs, stack, depth, allow_untyped=False)


def _convert_plain(
    node: dict[str, Any],
    defs: dict[str, Any],
    stack: tuple[str, ...],
    depth: int,
    *,
    allow_untyped: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nullable = node.get("nullable") is True
    raw_type = node.get("type")
    if isinstance(raw_type, list):
        types = [t for t in raw_type if t != "null"]
        nullable = nullable or len(types) < len(raw_type)
        if len(types) > 1:
            branches = [_convert({**node, "type": t}, defs, stack, depth + 1) for t in types]
            result: dict[str, Any] = {"anyOf": branches}
            if isinstance(node.get("description"), str):
                result["description"] = node["description"]
            if nullable:
                result["nullable"] = True
            return result
        raw_type = types[0] if types else None
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    if isinstance(node.get("enum"), list) and None in node["enum"]:
        node = {**node, "enum": [v for v in node["enum"] if v is not None]}
        nullable = True
    json_type = _json_type(node, raw_type)
    gtype = json_type.upper() if json_type is not None else None
    if gtype is not None:
        out["type"] = gtype
    elif not allow_untyped:
        out["type"] = "STRING"
        gtype = "STRING"
    fmt = node.get("format")
    if isinstance(fmt, str) and gtype is not None and fmt in _FORMATS.get(gtype, set()):
        out["format"] = fmt
    enum = node.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        out["enum"] = list(enum)
    if gtype == "OBJECT":
        props = node.get("properties")
        if isinstance(props, dict):
            out["properties"] = {
                name: _convert(sub, defs, stack, depth + 1) for name, sub in props.items()
            }
            out["propertyOrdering"] = list(props)
    if gtype == "ARRAY":
        items = node.get("items")
        prefix = node.get("prefixItems")
        if isinstance(items, dict) and items:
            out["items"] = _convert(items, defs, stack, depth + 1)
        elif isinstance(prefix, list) and prefix:
            converted = [_convert(p, defs, stack, depth + 1) for p in prefix]
            unique = [c for i, c in enumerate(converted) if c not in converted[:i]]
            out["items"] = unique[0] if len(unique) == 1 else {"anyOf": unique}
        else:
            out["items"] = {"type": "STRING"}
    for key in _KEPT:
        if key in node:
            value = node[key]
            if key == "required":
                names = out.get("properties", {})
                value = [r for r in value if r in names] if isinstance(value, list) else []
                if not value:
                    continue
            out[key] = value
    if nullable:
        out["nullable"] = True
    return out


def _json_type(node: dict[str, Any], declared: Any) -> str | None:
    """The node's JSON type: the declared one, else the one its keywords imply, else None."""
    if declared in _TYPES:
        return str(declared)
    if "properties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    if isinstance(node.get("enum"), list) and all(isinstance(v, str) for v in node["enum"]):
        return "string"
    return None


def _camel(key: str) -> str:
    head, *tail = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in tail)


class GeminiProvider(Provider):
    """The Gemini API's ``generateContent`` (``https://generativelanguage.googleapis.com/v1beta``
    unless ``base_url``), key in ``x-goog-api-key``.

    Examples
    --------
    >>> import asyncio, json, httpx
    >>> from routewise.backends.base import BackendConfig, GenerationRequest
    >>> def fake(request: httpx.Request) -> httpx.Response:
    ...     body = json.loads(request.content)
    ...     print(request.url.path, body["systemInstruction"], body["generationConfig"])
    ...     return httpx.Response(200, json={
    ...         "candidates": [{"content": {"role": "model", "parts": [{"text": "4"}]}, "finishReason": "STOP"}],
    ...         "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1, "thoughtsTokenCount": 30}})
    >>> cfg = BackendConfig.for_name("google_genai:gemini-2.5-flash", api_key="g-test", sampler={"top_p": 0.9})
    >>> p = GeminiProvider(cfg, transport=httpx.MockTransport(fake))
    >>> msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]
    >>> c = asyncio.run(p.generate(GenerationRequest(messages=msgs, max_tokens=100)))
    /v1beta/models/gemini-2.5-flash:generateContent {'parts': [{'text': 'Be terse.'}]} {'maxOutputTokens': 100, 'topP': 0.9}
    >>> c.text, c.usage.output_tokens
    ('4', 31)
    >>> asyncio.run(p.aclose())
    """

    provider_name: ClassVar[str] = "google_genai"
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com/v1beta"

    def _url(self) -> str:
        base = (self.config.base_url or self.default_base_url).rstrip("/")
        return f"{base}/models/{self.config.model}:generateContent"

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        system: list[str] = []
        contents: list[dict[str, Any]] = []
        for m in request.messages:
            role = m.get("role", "user")
            if role == "system":
                system.append(m.get("content", ""))
                continue
            contents.append(
                {
                    "role": "model" if role in ("assistant", "model") else "user",
                    "parts": [{"text": m.get("content", "")}],
                }
            )
        gen: dict[str, Any] = {"maxOutputTokens": self._max_tokens(request)}
        for key, value in self._sampler(request).items():
            if key in ("stop", "stop_sequences"):
                gen["stopSequences"] = [value] if isinstance(value, str) else value
            elif key not in ("max_tokens", "max_output_tokens"):
                gen[_camel(key)] = value
        if request.constrain == "json_schema":
            try:
                schema = to_gemini_schema(self._json_schema(request))
            except SchemaConversionError as exc:
                raise ProviderError(ErrorCategory.bad_request, f"responseSchema: {exc}") from None
            gen["responseMimeType"] = "application/json"
            gen["responseSchema"] = schema
        elif request.constrain == "grammar":
            raise self._unsupported_grammar()
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
        body["generationConfig"] = gen
        return body

    async def _generate(self, request: GenerationRequest) -> Completion:
        body = self._encode(self._body(request))
        key = self._need_key(self.config.api_key_env or "GEMINI_API_KEY")
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "x-goog-api-key": key,
        }
        data = await self._post(self._url(), body, headers)
        return self._parse(data)

    def _parse(self, data: dict[str, Any]) -> Completion:
        meta = data.get("usageMetadata")
        meta = meta if isinstance(meta, dict) else {}
        usage = Usage(
            input_tokens=non_negative_int(meta.get("promptTokenCount")),
            output_tokens=non_negative_int(meta.get("candidatesTokenCount"))
            + non_negative_int(meta.get("thoughtsTokenCount")),
        )
        model = data.get("modelVersion")
        model = model if isinstance(model, str) else self.config.model
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                return Completion(text="", usage=usage, finish_reason="refusal", model=model)
            raise self._bad_response(
                "no 'candidates' and no 'promptFeedback.blockReason'", usage=usage
            )
        cand = candidates[0]
        if not isinstance(cand, dict):
            raise self._bad_response("'candidates[0]' is not an object", usage=usage)
        raw_finish = cand.get("finishReason")
        finish = (
            _FINISH.get(raw_finish, raw_finish.lower()) if isinstance(raw_finish, str) else "stop"
        )
        content = cand.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if parts is None:
            if finish == "stop":
                raise self._bad_response("'candidates[0].content.parts' missing", usage=usage)
            parts = []
        if not isinstance(parts, list):
            raise self._bad_response("'candidates[0].content.parts' is not a list", usage=usage)
        text = "".join(
            p["text"]
            for p in parts
            if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
        )
        return Completion(text=text, usage=usage, finish_reason=finish, model=model)

    def _describe_error(
        self, status: int, headers: httpx.Headers, body: Any
    ) -> tuple[str, ErrorCategory | None, float | None]:
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            return super()._describe_error(status, headers, body)
        raw_message, raw_status, raw_details = (
            err.get("message"),
            err.get("status"),
            err.get("details"),
        )
        message = raw_message if isinstance(raw_message, str) else ""
        gstatus = raw_status if isinstance(raw_status, str) else ""
        details: list[Any] = raw_details if isinstance(raw_details, list) else []
        reasons: set[str] = set()
        retry: float | None = None
        for d in details:
            if not isinstance(d, dict):
                continue
            dtype = str(d.get("@type", ""))
            if dtype.endswith("google.rpc.ErrorInfo") and isinstance(d.get("reason"), str):
                reasons.add(d["reason"])
            elif dtype.endswith("google.rpc.RetryInfo"):
                retry = _duration_s(d.get("retryDelay"))
        category: ErrorCategory | None = None
        if gstatus == "RESOURCE_EXHAUSTED":
            category = ErrorCategory.rate_limited
        elif gstatus in ("UNAUTHENTICATED", "PERMISSION_DENIED") or reasons & {
            "API_KEY_INVALID",
            "API_KEY_SERVICE_BLOCKED",
            "API_KEY_HTTP_REFERRER_BLOCKED",
        }:
            category = ErrorCategory.auth_error
        elif gstatus == "DEADLINE_EXCEEDED":
            category = ErrorCategory.timeout
        text = f"{message} ({gstatus})" if gstatus else message
        return text, category, retry


def _duration_s(value: Any) -> float | None:
    """A protobuf JSON ``Duration`` (``"7s"``, ``"0.5s"``) in seconds."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", value)
        if m:
            return float(m.group(1))
    return None
