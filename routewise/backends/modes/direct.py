"""``direct_emit``: the model writes the full JSON object itself.

The constraint is the schema's JSON schema made OpenAI-strict and self-contained (no
``$ref``; every object closed with ``additionalProperties: false`` and all of its
properties required; optional values as ``anyOf [X, null]``); decoding pulls the JSON
object out of the text (tolerating a Markdown fence and prose around it) and validates it.
"""

import json
from collections.abc import Callable
from typing import Any

from routewise.backends.base import Constraint
from routewise.backends.modes.base import M, OutputCodec, dumps, extract_json_object, schema_name
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
)
from routewise.types import Mode

__all__ = ["DirectEmit", "strict_json_schema"]

_JSON_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


class DirectEmit(OutputCodec[M]):
    """The ``direct_emit`` mode: the model emits the full JSON object.

    Examples
    --------
    >>> from enum import Enum
    >>> from pydantic import BaseModel, Field
    >>> class Intent(str, Enum):
    ...     refund = "refund"
    ...     bug = "bug"
    >>> class Ticket(BaseModel):
    ...     intent: Intent = Field(description="What the customer wants")
    ...     note: str | None = None
    >>> codec = DirectEmit(Ticket)
    >>> codec.encode(Ticket(intent=Intent.bug))
    '{"intent":"bug","note":null}'
    >>> codec.decode('```json\\n{"intent": "refund", "note": "asap"}\\n```')
    Ticket(intent=<Intent.refund: 'refund'>, note='asap')
    >>> schema = codec.constraint().json_schema
    >>> schema["required"], schema["additionalProperties"]
    (['intent', 'note'], False)
    >>> schema["properties"]["note"]
    {'anyOf': [{'type': 'string'}, {'type': 'null'}]}
    >>> print(codec.instructions())  # doctest: +NORMALIZE_WHITESPACE
    Reply with only a JSON object with these keys, no other text:
    "intent": one of "refund", "bug" — What the customer wants
    "note": string or null
    Example: {"intent":"refund","note":"text"}
    """

    mode = Mode.direct_emit

    def _instructions(self) -> str:
        lines: list[str] = []
        if self._tree.description:
            lines.append(self._tree.description)
        lines.append("Reply with only a JSON object with these keys, no other text:")
        lines.extend(_describe(self._tree, ""))
        lines.append("Example: " + dumps(_keyed(self._tree, example_plain(self._tree))))
        return "\n".join(lines)

    def _constraint(self) -> Constraint:
        schema = strict_json_schema(self._tree, key=lambda i, f: f.key, choice=_choice_schema)
        return Constraint(name=schema_name(self.schema), json_schema=schema)

    def _encode(self, value: M) -> str:
        return dumps(_keyed(self._tree, to_plain(self._tree, value)))

    def _decode(self, text: str) -> str:
        source, _ = extract_json_object(text)
        return source


def strict_json_schema(
    tree: ObjectNode,
    *,
    key: Callable[[int, FieldNode], str],
    choice: Callable[[ChoiceNode], dict[str, Any]],
    describe: Callable[[FieldNode], str | None] = lambda f: f.description,
) -> dict[str, Any]:
    """A self-contained, OpenAI-strict JSON schema for a tree.

    ``key(i, field)`` names the property of the ``i``-th field, ``choice(node)`` gives the
    schema of an enum, ``describe(field)`` its description (omitted when None).

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> from routewise.backends.modes.tree import compile_schema
    >>> class P(BaseModel):
    ...     x: int
    >>> strict_json_schema(compile_schema(P), key=lambda i, f: f.name, choice=_choice_schema)
    {'type': 'object', 'properties': {'x': {'type': 'integer'}}, 'required': ['x'], 'additionalProperties': False}
    """

    def node_schema(node: SchemaNode) -> dict[str, Any]:
        if isinstance(node, OptionalNode):
            return {"anyOf": [node_schema(node.inner), {"type": "null"}]}
        if isinstance(node, ChoiceNode):
            return choice(node)
        if isinstance(node, ListNode):
            return {"type": "array", "items": node_schema(node.item)}
        if isinstance(node, ObjectNode):
            return object_schema(node)
        return {"type": _JSON_TYPES[node.kind]}

    def object_schema(node: ObjectNode) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for i, f in enumerate(node.fields):
            prop = node_schema(f.node)
            text = describe(f)
            if text:
                prop = {**prop, "description": text}
            properties[key(i, f)] = prop
        out: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }
        if node.description and node is tree:
            out["description"] = node.description
        return out

    return object_schema(tree)


def _choice_schema(node: ChoiceNode) -> dict[str, Any]:
    strs = [v for v in node.values if isinstance(v, str)]
    ints = [v for v in node.values if isinstance(v, int)]
    if not ints:
        return {"type": "string", "enum": strs}
    if not strs:
        return {"type": "integer", "enum": ints}
    return {"anyOf": [{"type": "string", "enum": strs}, {"type": "integer", "enum": ints}]}


def _keyed(node: SchemaNode, plain: Any) -> Any:
    """Plain value (objects keyed by field name) → JSON keyed by validation key (alias)."""
    if plain is None:
        return None
    if isinstance(node, OptionalNode):
        return _keyed(node.inner, plain)
    if isinstance(node, ListNode):
        return [_keyed(node.item, v) for v in plain]
    if isinstance(node, ObjectNode):
        return {f.key: _keyed(f.node, plain[f.name]) for f in node.fields}
    return plain


def _type_text(node: SchemaNode) -> str:
    return type_text(
        node, lambda c: "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in c.values)
    )


def _describe(node: ObjectNode, indent: str) -> list[str]:
    lines: list[str] = []
    for f in node.fields:
        line = f"{indent}{json.dumps(f.key, ensure_ascii=False)}: {_type_text(f.node)}"
        inner = _object_below(f.node)
        if inner is not None:
            line += " with these keys"
        lines.append(line + (f" — {f.description}" if f.description else ""))
        if inner is not None:
            lines.extend(_describe(inner, indent + "  "))
    return lines


def _object_below(node: SchemaNode) -> ObjectNode | None:
    """The model under any ``| None`` and ``list[...]`` wrappers, if there is one."""
    while isinstance(node, OptionalNode | ListNode):
        node = node.inner if isinstance(node, OptionalNode) else node.item
    return node if isinstance(node, ObjectNode) else None
