"""The output-codec protocol: one output mode realized for one pydantic schema.

An :class:`OutputCodec` owns everything a mode needs around the model call: the
instructions that teach the emitted form, the :class:`~routewise.backends.base.Constraint`
that enforces it, and the local work that turns the emitted text back into a validated
instance. Subclasses implement the private hooks (``_instructions``, ``_constraint``,
``_encode``, ``_decode``); the public methods here do the bookkeeping (type checks,
timing, error mapping) once for all modes.

Errors (both below :class:`routewise.errors.RoutewiseError`)::

    RoutewiseError
    ├── ConfigError     get_codec() on a schema a mode cannot express   (.field == "schema")
    └── DecodeError     decode() on text whose form cannot be read      (.reason)

A text that is read fine but does not validate raises ``pydantic.ValidationError``
from :meth:`OutputCodec.decode`; :meth:`OutputCodec.parse` never raises and reports both
cases in a :class:`~routewise.backends.base.ModeResult`.
"""

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from time import perf_counter
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from routewise.backends.base import Constraint, ErrorCategory, ModeResult
from routewise.backends.modes.tree import (
    ListNode,
    ObjectNode,
    SchemaNode,
    compile_schema,
    unwrap_optional,
)
from routewise.errors import RoutewiseError
from routewise.types import Mode

__all__ = ["DecodeError", "OutputCodec"]

M = TypeVar("M", bound=BaseModel)

#: ``failed_fields`` entry for an error that belongs to no field (a model validator).
ROOT_PATH = "__root__"

_MAX_JSON_STARTS = 32


class DecodeError(RoutewiseError, ValueError):
    """The model's text cannot be read in its mode's emitted form (malformed output).

    Examples
    --------
    >>> err = DecodeError("no JSON object found")
    >>> err.reason, isinstance(err, ValueError)
    ('no JSON object found', True)
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class OutputCodec(ABC, Generic[M]):
    """One output mode for one pydantic schema; build it with
    :func:`routewise.backends.modes.get_codec` (cached) or the subclass constructor.

    Raises :class:`routewise.errors.ConfigError` when the schema uses a construct the
    codecs do not support (the message names the field).

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> from routewise.backends.modes import get_codec
    >>> class Reply(BaseModel):
    ...     answer: str
    ...     confidence: float
    >>> codec = get_codec("direct_emit", Reply)
    >>> codec.mode.value, codec.schema.__name__
    ('direct_emit', 'Reply')
    >>> codec.encode(Reply(answer="42", confidence=0.9))
    '{"answer":"42","confidence":0.9}'
    >>> result = codec.parse('{"answer": "42", "confidence": "high"}')
    >>> result.parse_ok, result.schema_valid, result.failed_fields
    (True, False, ('confidence',))
    >>> codec.parse("I cannot answer that.").error
    'malformed_output'
    """

    mode: ClassVar[Mode]

    def __init__(self, schema: type[M]) -> None:
        self.schema: type[M] = schema
        self._tree: ObjectNode = compile_schema(schema)
        self._check(self._tree)
        self._instruction_text: str | None = None
        self._constraint_value: Constraint | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.schema.__name__})"

    def instructions(self) -> str:
        """System-prompt text that teaches the model the emitted form for this schema."""
        if self._instruction_text is None:
            self._instruction_text = self._instructions()
        return self._instruction_text

    def constraint(self) -> Constraint:
        """The JSON schema and/or GBNF grammar of the emitted form."""
        if self._constraint_value is None:
            self._constraint_value = self._constraint()
        return self._constraint_value

    def encode(self, value: M) -> str:
        """Exactly what a perfect model would emit for ``value``."""
        if not isinstance(value, self.schema):
            raise TypeError(
                f"expected a {self.schema.__name__} instance, got {type(value).__name__}"
            )
        return self._encode(value)

    def decode(self, text: str) -> M:
        """Rebuild and validate an instance from the model's text.

        Raises :class:`DecodeError` when the form cannot be read and
        ``pydantic.ValidationError`` when it was read but does not validate.
        """
        if not isinstance(text, str):
            raise DecodeError(f"expected the model's text as str, got {type(text).__name__}")
        payload = self._decode(text)
        try:
            return self.schema.model_validate_json(payload)
        except ValidationError as exc:
            if any(err["type"] == "json_invalid" for err in exc.errors()):
                raise DecodeError(f"not valid JSON: {exc.errors()[0]['msg']}") from None
            raise

    def parse(self, text: str) -> ModeResult:
        """Decode ``text`` into a :class:`ModeResult`; never raises."""
        start = perf_counter()
        try:
            value = self.decode(text)
        except ValidationError as exc:
            return ModeResult(
                value=None,
                parse_ok=True,
                schema_valid=False,
                failed_fields=self.failed_fields(exc),
                local_ms=(perf_counter() - start) * 1000.0,
            )
        except Exception:  # DecodeError, or anything a user validator raised: unreadable output
            return ModeResult(
                value=None,
                parse_ok=False,
                schema_valid=False,
                local_ms=(perf_counter() - start) * 1000.0,
                error=ErrorCategory.malformed_output.value,
            )
        return ModeResult(
            value=value,
            parse_ok=True,
            schema_valid=True,
            local_ms=(perf_counter() - start) * 1000.0,
        )

    def failed_fields(self, exc: ValidationError) -> tuple[str, ...]:
        """Dotted field paths (``"customer.email"``, ``"items.2.qty"``) of the errors in ``exc``."""
        paths = [field_path(self._tree, err["loc"]) for err in exc.errors()]
        return tuple(dict.fromkeys(paths))

    def _check(self, tree: ObjectNode) -> None:
        """Refuse schemas this mode cannot express (raise ``ConfigError``)."""

    @abstractmethod
    def _instructions(self) -> str: ...

    @abstractmethod
    def _constraint(self) -> Constraint: ...

    @abstractmethod
    def _encode(self, value: M) -> str: ...

    @abstractmethod
    def _decode(self, text: str) -> str:
        """The JSON text (full field keys) that pydantic validates; raise DecodeError."""


def field_path(tree: ObjectNode, loc: Sequence[int | str]) -> str:
    """Map a pydantic error location to a dotted path of Python field names.

    Examples
    --------
    >>> from pydantic import BaseModel, Field
    >>> class Line(BaseModel):
    ...     qty: int = Field(alias="Qty")
    >>> class Order(BaseModel):
    ...     items: list[Line]
    >>> field_path(compile_schema(Order), ("items", 2, "Qty"))
    'items.2.qty'
    """
    node: SchemaNode = tree
    parts: list[str] = []
    for step in loc:
        node = unwrap_optional(node)
        if isinstance(node, ObjectNode) and isinstance(step, str):
            f = node.lookup(step)
            parts.append(f.name if f is not None else step)
            if f is None:
                break
            node = f.node
        elif isinstance(node, ListNode) and isinstance(step, int):
            parts.append(str(step))
            node = node.item
        else:
            break
    return ".".join(parts) or ROOT_PATH


def strip_fence(text: str) -> str:
    """``text`` without surrounding whitespace and a Markdown code fence.

    Examples
    --------
    >>> strip_fence("```json\\n{}\\n```")
    '{}'
    """
    s = text.strip()
    if s.startswith("```"):
        newline = s.find("\n")
        s = "" if newline == -1 else s[newline + 1 :]
        if s.rstrip().endswith("```"):
            s = s.rstrip()[:-3]
    return s.strip()


def extract_json_object(text: str) -> tuple[str, dict[str, Any]]:
    """The longest top-level balanced ``{...}`` in ``text`` that is a JSON object (prose
    and fences around it are ignored), as ``(source, value)``; raise :class:`DecodeError`
    when there is none.

    Examples
    --------
    >>> extract_json_object('Sure! {"a": 1} Hope it helps.')
    ('{"a": 1}', {'a': 1})
    """
    s = strip_fence(text)
    best: tuple[str, dict[str, Any]] | None = None
    pos = s.find("{")
    tries = 0
    while pos != -1 and tries < _MAX_JSON_STARTS:
        tries += 1
        end = _balanced_end(s, pos)
        if end is None:  # unclosed: everything after is inside it (e.g. truncated output)
            break
        try:
            value = json.loads(s[pos:end])
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict) and (best is None or end - pos > len(best[0])):
            best = (s[pos:end], value)
        pos = s.find("{", end)
    if best is None:
        preview = re.sub(r"\s+", " ", s[:60])
        raise DecodeError(f"no complete JSON object found in the output (starts {preview!r})")
    return best


def _balanced_end(s: str, start: int) -> int | None:
    """Index just past the ``}`` that closes the ``{`` at ``start`` (JSON strings skipped)."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(s)):
        ch = s[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def dumps(value: Any) -> str:
    """Compact JSON as a model would emit it (UTF-8 text kept, not escaped).

    Examples
    --------
    >>> dumps({"a": [1, 2.5, None], "b": "é"})
    '{"a":[1,2.5,null],"b":"é"}'
    """
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def schema_name(schema: type[BaseModel]) -> str:
    """A name for the schema in ``[A-Za-z0-9_-]{1,64}`` (OpenAI's ``json_schema.name``).

    Examples
    --------
    >>> from pydantic import create_model
    >>> schema_name(create_model("Ticket v2 (beta)"))
    'Ticket_v2_beta'
    """
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", schema.__name__).strip("_")[:64]
    return name or "schema"
