"""``transport_compressed``: the model writes a compact JSON object with short keys.

The schema is compiled into a transport codec: at every object level the fields get the
keys ``a``, ``b``, … ``z``, ``aa``, ``ab``… in declaration order, enum values travel as
their index ``0..n-1``, optional values as ``null``. The form still has a strict JSON
schema (so native structured output can enforce it); the instructions teach the key and
enum tables; decoding expands the short form locally before validation. Decoding also
accepts full field names, enum labels instead of indexes, and omitted optional keys.
"""

import json
from typing import Any

from routewise.backends.base import Constraint
from routewise.backends.modes.base import M, OutputCodec, dumps, extract_json_object, schema_name
from routewise.backends.modes.direct import strict_json_schema
from routewise.backends.modes.tree import (
    ChoiceNode,
    FieldNode,
    ListNode,
    ObjectNode,
    OptionalNode,
    SchemaNode,
    example_plain,
    to_plain,
    type_text,
    unwrap_optional,
)
from routewise.types import Mode

__all__ = ["TransportCompressed", "short_key"]


def short_key(i: int) -> str:
    """The transport key of the ``i``-th field of an object: a…z, aa, ab…

    Examples
    --------
    >>> [short_key(i) for i in (0, 1, 25, 26, 27, 701, 702)]
    ['a', 'b', 'z', 'aa', 'ab', 'zz', 'aaa']
    """
    out = ""
    n = i + 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out


class TransportCompressed(OutputCodec[M]):
    """The ``transport_compressed`` mode: short keys, enum indexes, expanded locally.

    Examples
    --------
    >>> from enum import Enum
    >>> from pydantic import BaseModel, Field
    >>> class Intent(str, Enum):
    ...     refund = "refund"
    ...     bug = "bug"
    >>> class Customer(BaseModel):
    ...     name: str
    >>> class Ticket(BaseModel):
    ...     '''A support ticket.'''
    ...     intent: Intent = Field(description="What the customer wants")
    ...     priority: int
    ...     customer: Customer | None = None
    >>> codec = TransportCompressed(Ticket)
    >>> codec.encode(Ticket(intent=Intent.bug, priority=2, customer=Customer(name="Ann")))
    '{"a":1,"b":2,"c":{"a":"Ann"}}'
    >>> codec.decode('{"a": 0, "b": 5}')
    Ticket(intent=<Intent.refund: 'refund'>, priority=5, customer=None)
    >>> print(codec.instructions())  # doctest: +NORMALIZE_WHITESPACE
    A support ticket.
    Reply with only a compact JSON object that uses these short keys, no other text:
    "a" = intent: option number (0=refund, 1=bug) — What the customer wants
    "b" = priority: integer
    "c" = customer: object or null with these keys
      "a" = name: string
    Example: {"a":0,"b":1,"c":{"a":"text"}}
    """

    mode = Mode.transport_compressed

    def _instructions(self) -> str:
        lines: list[str] = []
        if self._tree.description:
            lines.append(self._tree.description)
        lines.append(
            "Reply with only a compact JSON object that uses these short keys, no other text:"
        )
        lines.extend(_describe(self._tree, ""))
        lines.append("Example: " + dumps(_compress(self._tree, example_plain(self._tree))))
        return "\n".join(lines)

    def _constraint(self) -> Constraint:
        schema = strict_json_schema(
            self._tree,
            key=lambda i, f: short_key(i),
            choice=lambda node: {"type": "integer", "enum": list(range(len(node.labels)))},
            describe=_property_description,
        )
        return Constraint(name=schema_name(self.schema), json_schema=schema)

    def _encode(self, value: M) -> str:
        return dumps(_compress(self._tree, to_plain(self._tree, value)))

    def _decode(self, text: str) -> str:
        _, obj = extract_json_object(text)
        return json.dumps(_expand(self._tree, obj))


def _compress(node: SchemaNode, plain: Any) -> Any:
    if plain is None:
        return None
    if isinstance(node, OptionalNode):
        return _compress(node.inner, plain)
    if isinstance(node, ChoiceNode):
        return node.index_of(plain)
    if isinstance(node, ListNode):
        return [_compress(node.item, v) for v in plain]
    if isinstance(node, ObjectNode):
        return {short_key(i): _compress(f.node, plain[f.name]) for i, f in enumerate(node.fields)}
    return plain


def _expand(node: SchemaNode, value: Any) -> Any:
    """Transport value → JSON keyed by validation key; what cannot be expanded is passed
    through unchanged so that validation reports it on its field."""
    if value is None:
        return None
    if isinstance(node, OptionalNode):
        return _expand(node.inner, value)
    if isinstance(node, ChoiceNode):
        return _expand_choice(node, value)
    if isinstance(node, ListNode):
        return [_expand(node.item, v) for v in value] if isinstance(value, list) else value
    if isinstance(node, ObjectNode):
        return _expand_object(node, value) if isinstance(value, dict) else value
    return value


def _expand_object(node: ObjectNode, value: dict[str, Any]) -> dict[str, Any]:
    shorts = {short_key(i) for i in range(len(node.fields))}
    by_name: dict[str, Any] = {}
    for k, v in value.items():
        if k not in shorts:
            f = node.lookup(k)
            if f is not None:
                by_name.setdefault(f.name, v)
    out: dict[str, Any] = {}
    for i, f in enumerate(node.fields):
        sk = short_key(i)
        if sk in value:
            out[f.key] = _expand(f.node, value[sk])
        elif f.name in by_name:
            out[f.key] = _expand(f.node, by_name[f.name])
        elif not f.has_default and isinstance(f.node, OptionalNode):
            out[f.key] = None
    return out


def _expand_choice(node: ChoiceNode, value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(node.values):
        return node.values[value]
    if isinstance(value, str):
        text = value.strip()
        label = node.match_label(text)
        if label is not None:
            return label
        if text.isdecimal() and int(text) < len(node.values):
            return node.values[int(text)]
    return value


def _property_description(f: FieldNode) -> str:
    text = f.name
    choice = unwrap_optional(f.node)
    while isinstance(choice, ListNode):
        choice = unwrap_optional(choice.item)
    if isinstance(choice, ChoiceNode):
        text += f" ({_choice_table(choice)})"
    if f.description:
        text += f": {f.description}"
    return text


def _choice_table(node: ChoiceNode) -> str:
    return ", ".join(f"{i}={label}" for i, label in enumerate(node.labels))


def _type_text(node: SchemaNode) -> str:
    return type_text(node, lambda c: f"option number ({_choice_table(c)})")


def _describe(node: ObjectNode, indent: str) -> list[str]:
    lines: list[str] = []
    for i, f in enumerate(node.fields):
        line = f'{indent}"{short_key(i)}" = {f.name}: {_type_text(f.node)}'
        inner = f.node
        while isinstance(inner, OptionalNode | ListNode):
            inner = inner.inner if isinstance(inner, OptionalNode) else inner.item
        if isinstance(inner, ObjectNode):
            line += " with these keys"
        lines.append(line + (f" — {f.description}" if f.description else ""))
        if isinstance(inner, ObjectNode):
            lines.extend(_describe(inner, indent + "  "))
    return lines
