"""``local_reconstructed``: the model writes only the leaf values, one ``path: value`` line
each; the object is rebuilt locally.

The emitted form, for a schema with fields ``intent`` (enum), ``priority`` (int),
``tags`` (list[str]) and ``customer`` (optional nested model)::

    intent: refund
    priority: 3
    tags.0: billing
    tags.1: vip
    customer.name: Ann Lee

* one line per leaf, ``path: value``; paths are dotted field names, list items by index
  (``items.2.qty``);
* enums by their label, numbers plain (floats as Python's shortest exact repr), booleans
  ``true``/``false``, ``null`` for an absent optional value;
* strings raw on the rest of the line; a string that would not survive that (empty,
  leading/trailing whitespace, a line break, a leading quote, the word ``null``) is written
  as a JSON string literal in double quotes;
* a field may be left out when its value can be rebuilt: its default, ``None`` for an
  optional field, ``[]`` for a list, and a nested object whose fields can all be left
  out. ``path: []`` and ``path: {}`` mark an empty list or object that could not be left
  out.

Decoding is tolerant of what small models do: blank lines, surrounding whitespace, a
Markdown fence, prose lines that name no field, bullets, quotes around values, keys and
enum labels in another case, ``tags[0]`` for ``tags.0``, repeated ``tags:`` lines for
list items. The GBNF grammar (:meth:`LocalReconstructed.constraint`) accepts the form
for the schema with up to 8 items per list (4 in a list inside a list item, 2 one level
deeper, 1 below that: see ``GRAMMAR_LIST_ITEMS``); decoding accepts any number.
"""

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from routewise.backends.base import Constraint
from routewise.backends.modes.base import DecodeError, M, OutputCodec, schema_name, strip_fence
from routewise.backends.modes.tree import (
    ChoiceNode,
    FieldNode,
    ListNode,
    ObjectNode,
    OptionalNode,
    ScalarNode,
    SchemaNode,
    example_plain,
    is_omittable,
    is_omitted,
    to_plain,
    unwrap_optional,
)
from routewise.errors import ConfigError
from routewise.types import Mode

__all__ = ["LocalReconstructed"]

#: Items per list the grammar admits, by how many lists enclose the list (the last entry
#: applies below). Every enclosing list multiplies the rules of the lines below it (paths
#: carry the indexes), so the product is kept at 64 however deeply lists nest.
GRAMMAR_LIST_ITEMS = (8, 4, 2, 1)

_VALUE_RULES = {
    "int": 'int ::= "-"? [0-9]{1,20}',
    "num": 'num ::= "-"? [0-9]{1,20} ("." [0-9]{1,24})? ([eE] [-+]? [0-9]{1,3})?',
    "bool": 'bool ::= "true" | "false"',
    "text": "text ::= [^\\n]*",
}
_SCALAR_RULE = {"str": "text", "int": "int", "float": "num", "bool": "bool"}
_TYPE_TEXT = {"str": "text", "int": "integer", "float": "number", "bool": "true or false"}
_NULLS = {"null", "none"}
_BULLET = re.compile(r"^(?:[-*•]+|\d+[.)])\s+")
_INDEX = re.compile(r"\[\s*(\d+)\s*\]")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One line read: the path below the current node (field names / list indexes) and
    the value text."""

    steps: tuple[str | int, ...]
    text: str

    def rest(self) -> "_Entry":
        return _Entry(self.steps[1:], self.text)


class LocalReconstructed(OutputCodec[M]):
    """The ``local_reconstructed`` mode: ``path: value`` lines, rebuilt locally.

    Examples
    --------
    >>> from enum import Enum
    >>> from pydantic import BaseModel, Field
    >>> class Intent(str, Enum):
    ...     refund = "refund"
    ...     bug = "bug"
    >>> class Ticket(BaseModel):
    ...     intent: Intent = Field(description="What the customer wants")
    ...     priority: int = Field(ge=1, le=5)
    ...     tags: list[str] = []
    ...     note: str | None = None
    >>> codec = LocalReconstructed(Ticket)
    >>> print(codec.encode(Ticket(intent=Intent.bug, priority=2, tags=["ui", "crash"])), end="")
    intent: bug
    priority: 2
    tags.0: ui
    tags.1: crash
    >>> codec.decode('```\\nIntent: "Refund"\\n\\npriority: 5\\nnote: call me: today\\n```')
    Ticket(intent=<Intent.refund: 'refund'>, priority=5, tags=[], note='call me: today')
    >>> print(codec.constraint().grammar)
    root ::= "intent: " choice "\\n" "priority: " int "\\n" f-tags? ( "note: " ( "null" | text ) "\\n" )?
    choice ::= "refund" | "bug"
    f-tags ::= "tags: []\\n" | "tags.0: " text "\\n" ( "tags.1: " text "\\n" ( "tags.2: " text "\\n" ( "tags.3: " text "\\n" ( "tags.4: " text "\\n" ( "tags.5: " text "\\n" ( "tags.6: " text "\\n" ( "tags.7: " text "\\n" )? )? )? )? )? )? )?
    int ::= "-"? [0-9]{1,20}
    text ::= [^\\n]*
    """

    mode = Mode.local_reconstructed

    def _check(self, tree: ObjectNode) -> None:
        _check_object(tree, "")

    # -- instructions -------------------------------------------------------------------

    def _instructions(self) -> str:
        lines: list[str] = []
        if self._tree.description:
            lines.append(self._tree.description)
        lines.append("Reply with one `name: value` line per field below — no JSON, no other text.")
        lines.extend(_describe(self._tree, "", 0))
        lines.append(
            "Write text as is on one line (in double quotes with \\n only if it has line breaks). "
            "List items are numbered from 0. Leave out (optional) lines you have no value for."
        )
        lines.append("Example:")
        lines.extend(_emit_object(self._tree, example_plain(self._tree), None, ""))
        return "\n".join(lines)

    # -- constraint ---------------------------------------------------------------------

    def _constraint(self) -> Constraint:
        return Constraint(name=schema_name(self.schema), grammar=_Grammar(self._tree).render())

    # -- encode -------------------------------------------------------------------------

    def _encode(self, value: M) -> str:
        lines = _emit_object(self._tree, to_plain(self._tree, value), value, "")
        return "".join(line + "\n" for line in lines)

    # -- decode -------------------------------------------------------------------------

    def _decode(self, text: str) -> str:
        entries: list[_Entry] = []
        unread = 0
        for raw in strip_fence(text).split("\n"):
            line = raw.strip()
            if not line:
                continue
            entry = self._read_line(line)
            if entry is None:
                unread += 1
            else:
                entries.append(entry)
        if unread and not entries:
            raise DecodeError(
                f"no line of the form 'name: value' names a field of {self.schema.__name__}"
            )
        return json.dumps(_build_fields(self._tree, entries))

    def _read_line(self, line: str) -> _Entry | None:
        line = _BULLET.sub("", line)
        for sep in (":", "="):
            at = line.find(sep)
            if at <= 0:
                continue
            steps = _resolve(self._tree, line[:at])
            if steps is not None:
                return _Entry(steps, line[at + 1 :].strip())
        return None


# ---------------------------------------------------------------------------------------
# schema checks


def _check_object(node: ObjectNode, prefix: str) -> None:
    for f in node.fields:
        path = prefix + f.name
        if not f.name.isidentifier():
            raise ConfigError(
                "schema",
                f"field {path!r}: local_reconstructed needs field names that are identifiers",
            )
        _check_node(f.node, path)


def _check_node(node: SchemaNode, path: str) -> None:
    if isinstance(node, OptionalNode):
        _check_node(node.inner, path)
    elif isinstance(node, ListNode):
        _check_node(node.item, path + "[]")
    elif isinstance(node, ObjectNode):
        _check_object(node, path + ".")
    elif isinstance(node, ChoiceNode):
        for label in node.labels:
            if not label or label != label.strip() or "\n" in label or "\r" in label:
                raise ConfigError(
                    "schema",
                    f"field {path!r}: enum value {label!r} cannot be written on one line "
                    "(empty, line break or leading/trailing whitespace)",
                )


# ---------------------------------------------------------------------------------------
# emitting lines


def _format_text(s: str) -> str:
    """A string as its raw one-line form, or a JSON literal when raw would not round-trip."""
    raw_ok = (
        s
        and s == s.strip()
        and "\n" not in s
        and "\r" not in s
        and not s.startswith('"')
        and not (len(s) >= 2 and s[0] == s[-1] == "'")
        and s.casefold() not in _NULLS
        and s not in ("[]", "{}")
    )
    return s if raw_ok else json.dumps(s, ensure_ascii=False)


def _format_scalar(node: SchemaNode, plain: Any) -> str:
    if isinstance(node, ChoiceNode):
        return _format_text(node.labels[node.index_of(plain)])
    assert isinstance(node, ScalarNode)
    if node.kind == "bool":
        return "true" if plain else "false"
    if node.kind == "float":
        return repr(float(plain))
    if node.kind == "int":
        return str(int(plain))
    return _format_text(str(plain))


def _emit_object(node: ObjectNode, plain: dict[str, Any], value: Any, prefix: str) -> list[str]:
    """Lines for an object; ``value`` is the live instance (None for a plain example)."""
    lines: list[str] = []
    for f in node.fields:
        live = getattr(value, f.name) if value is not None else None
        if value is not None and is_omitted(f, live):
            continue
        lines.extend(_emit(f.node, plain[f.name], live, prefix + f.name))
    return lines


def _emit(node: SchemaNode, plain: Any, live: Any, path: str) -> list[str]:
    if isinstance(node, OptionalNode):
        if plain is None:
            return [f"{path}: null"]
        return _emit(node.inner, plain, live, path)
    if isinstance(node, ObjectNode):
        lines = _emit_object(node, plain, live, path + ".")
        return lines or [f"{path}: {{}}"]
    if isinstance(node, ListNode):
        if not plain:
            return [f"{path}: []"]
        lines = []
        for i, item in enumerate(plain):
            lines.extend(
                _emit(node.item, item, live[i] if live is not None else None, f"{path}.{i}")
            )
        return lines
    return [f"{path}: {_format_scalar(node, plain)}"]


# ---------------------------------------------------------------------------------------
# reading lines


def _resolve(tree: ObjectNode, key: str) -> tuple[str | int, ...] | None:
    key = _INDEX.sub(r".\1", key.strip().strip("`*\"'").strip())
    node: SchemaNode = tree
    steps: list[str | int] = []
    for segment in key.split("."):
        seg = segment.strip()
        node = unwrap_optional(node)
        if isinstance(node, ObjectNode):
            f = node.lookup(seg)
            if f is None:
                return None
            steps.append(f.name)
            node = f.node
        elif isinstance(node, ListNode) and seg.isascii() and seg.isdigit():
            steps.append(int(seg))
            node = node.item
        else:
            return None
    return tuple(steps)


def _unquote(text: str) -> tuple[str, bool]:
    """``(value, quoted)``: a JSON string literal or a '…'/"…"-quoted value unwrapped
    (a comma after the closing quote, as in a JSON-ish line, is dropped)."""
    if len(text) >= 3 and text[0] in "\"'" and text[-1] == "," and text[-2] == text[0]:
        text = text[:-1]
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        if text[0] == '"':
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if isinstance(value, str):
                return value, True
        return text[1:-1], True
    return text, False


def _build_fields(node: ObjectNode, entries: list[_Entry]) -> dict[str, Any]:
    groups: dict[str, list[_Entry]] = defaultdict(list)
    for e in entries:
        groups[str(e.steps[0])].append(e.rest())
    out: dict[str, Any] = {}
    for f in node.fields:
        if f.name in groups:
            out[f.key] = _build(f.node, groups[f.name])
        else:
            _fill_absent(f, out)
    return out


def _fill_absent(f: FieldNode, out: dict[str, Any]) -> None:
    """What a left-out field rebuilds to (left to pydantic when it has a default)."""
    if f.has_default:
        return
    if isinstance(f.node, OptionalNode):
        out[f.key] = None
    elif isinstance(f.node, ListNode):
        out[f.key] = []
    elif isinstance(f.node, ObjectNode):
        out[f.key] = _build_fields(f.node, [])


def _build(node: SchemaNode, entries: list[_Entry]) -> Any:
    here = [e.text for e in entries if not e.steps]
    below = [e for e in entries if e.steps]
    if isinstance(node, OptionalNode):
        if not below and here:
            value, quoted = _unquote(here[-1])
            if not quoted and _is_null(node.inner, value):
                return None
        return _build(node.inner, entries)
    if isinstance(node, ObjectNode):
        if here and not below and here[-1] != "{}":
            return _unquote(here[-1])[0]  # not an object: let validation name the field
        return _build_fields(node, below)
    if isinstance(node, ListNode):
        return _build_list(node, here, below)
    return _convert(node, here[-1])


def _build_list(node: ListNode, here: list[str], below: list[_Entry]) -> list[Any]:
    by_index: dict[int, list[_Entry]] = defaultdict(list)
    for e in below:
        by_index[int(e.steps[0])].append(e.rest())
    items = [_build(node.item, by_index[i]) for i in sorted(by_index)]
    for text in here:
        if text == "[]":
            continue
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                items.extend(_from_json(node.item, v) for v in parsed)
                continue
        items.append(_build(node.item, [_Entry((), text)]))
    return items


def _from_json(node: SchemaNode, value: Any) -> Any:
    """An item of a ``tags: ["a", "b"]`` line."""
    if isinstance(value, str):
        return _build(node, [_Entry((), json.dumps(value, ensure_ascii=False))])
    if value is None or isinstance(value, dict | list):
        return value
    return _build(node, [_Entry((), json.dumps(value))])


def _is_null(inner: SchemaNode, value: str) -> bool:
    folded = value.casefold()
    if folded == "null":
        return True
    if folded == "none":  # "none" may be a legitimate text or label
        base = unwrap_optional(inner)
        if isinstance(base, ChoiceNode):
            return base.match_label(value) is None
        return not (isinstance(base, ScalarNode) and base.kind == "str")
    return False


def _convert(node: SchemaNode, text: str) -> Any:
    """A scalar from its text; what does not convert is passed on for validation to name."""
    value, quoted = _unquote(text)
    if isinstance(node, ScalarNode) and node.kind == "str":
        return value
    if not quoted:
        value, quoted = _unquote(value.rstrip(",;").strip())
    if not quoted and value.casefold() == "null":
        return None
    if isinstance(node, ChoiceNode):
        match = node.match_label(value)
        return value if match is None else match
    assert isinstance(node, ScalarNode)
    try:
        if node.kind == "int":
            return int(value)
        if node.kind == "float":
            number = float(value)
            return number if math.isfinite(number) else value
    except ValueError:
        return value
    folded = value.casefold()
    if folded in ("true", "yes"):
        return True
    if folded in ("false", "no"):
        return False
    return value


# ---------------------------------------------------------------------------------------
# instructions


def _describe(
    node: ObjectNode, prefix: str, lists: int, within_optional: bool = False
) -> list[str]:
    lines: list[str] = []
    for f in node.fields:
        path = prefix + f.name
        base = f.node
        optional = within_optional or f.has_default or isinstance(base, OptionalNode)
        depth = lists
        while isinstance(base, OptionalNode | ListNode):
            if isinstance(base, ListNode):
                path += "." + "NMK"[min(depth, 2)]
                depth += 1
                base = base.item
            else:
                base = base.inner
        if isinstance(base, ObjectNode):
            lines.extend(_describe(base, path + ".", depth, optional))
            continue
        line = f"{path}: {_leaf_text(base)}"
        notes = []
        if optional and not within_optional:
            known, default = f.default_value()
            if known and default is not None and not isinstance(default, list | dict):
                try:
                    notes.append(
                        f"optional, default {_format_scalar(base, to_plain(base, default))}"
                    )
                except (ValueError, TypeError, AssertionError):
                    notes.append("optional")
            else:
                notes.append("optional")
        elif optional:
            notes.append("optional")
        if notes:
            line += f" ({', '.join(notes)})"
        if f.description:
            line += f" — {f.description}"
        lines.append(line)
    return lines


def _leaf_text(node: SchemaNode) -> str:
    if isinstance(node, ChoiceNode):
        return "one of " + " | ".join(_format_text(label) for label in node.labels)
    assert isinstance(node, ScalarNode)
    return _TYPE_TEXT[node.kind]


# ---------------------------------------------------------------------------------------
# GBNF grammar


class _Grammar:
    """Builds the GBNF grammar (llama.cpp) of the line form of one schema."""

    def __init__(self, tree: ObjectNode) -> None:
        self._tree = tree
        self._rules: dict[str, str] = {}
        self._bodies: dict[str, str] = {}
        self._values: set[str] = set()

    def render(self) -> str:
        root = " ".join(self._field(f, f.name, 0) for f in self._tree.fields) or '""'
        lines = [f"root ::= {root}"]
        lines.extend(f"{name} ::= {body}" for name, body in self._rules.items())
        lines.extend(_VALUE_RULES[v] for v in sorted(self._values))
        return "\n".join(lines)

    def _rule(self, hint: str, body: str) -> str:
        if body in self._bodies:
            return self._bodies[body]
        base = re.sub(r"[^A-Za-z0-9]+", "-", hint).strip("-").lower() or "r"
        name, n = base, 2
        while name in self._rules or name in _VALUE_RULES or name == "root":
            name, n = f"{base}-{n}", n + 1
        self._rules[name] = body
        self._bodies[body] = name
        return name

    def _field(self, f: FieldNode, path: str, lists: int) -> str:
        expr = self._value(f.node, path, lists)
        if not is_omittable(f):
            return expr
        return f"{expr}?" if _is_atom(expr) else f"( {expr} )?"

    def _value(self, node: SchemaNode, path: str, lists: int, nullable: bool = False) -> str:
        """The lines of a value at ``path`` (``nullable``: or a ``path: null`` line)."""
        if isinstance(node, OptionalNode):
            return self._value(node.inner, path, lists, nullable=True)
        if isinstance(node, ScalarNode | ChoiceNode):
            leaf = self._leaf(node)
            value = f'( "null" | {leaf} )' if nullable else leaf
            return f'{_lit(path + ": ")} {value} "\\n"'
        markers = [_lit(path + ": null\n")] if nullable else []
        if isinstance(node, ObjectNode):
            parts = [self._field(g, f"{path}.{g.name}", lists) for g in node.fields]
            if all(is_omittable(g) for g in node.fields):
                markers.append(_lit(path + ": {}\n"))
            body = " | ".join([*markers, " ".join(parts)] if parts else markers)
            return self._rule("f-" + path, body)
        bound = GRAMMAR_LIST_ITEMS[min(lists, len(GRAMMAR_LIST_ITEMS) - 1)]
        nested = ""
        for i in reversed(range(bound)):
            item = self._value(node.item, f"{path}.{i}", lists + 1)
            nested = f"{item} ( {nested} )?" if nested else item
        return self._rule("f-" + path, " | ".join([*markers, _lit(path + ": []\n"), nested]))

    def _leaf(self, node: ScalarNode | ChoiceNode) -> str:
        if isinstance(node, ChoiceNode):
            return self._rule(
                "choice", " | ".join(_lit(_format_text(label)) for label in node.labels)
            )
        rule = _SCALAR_RULE[node.kind]
        self._values.add(rule)
        return rule


def _is_atom(expr: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9-]+", expr) is not None


def _lit(s: str) -> str:
    """A GBNF string literal."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
