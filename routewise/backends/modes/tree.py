"""The schema tree: a pydantic model class compiled into the few shapes the codecs handle.

Every output codec works on this tree rather than on pydantic's JSON schema, so that the
three modes agree on what a schema *is*::

    SchemaNode
    ├── ScalarNode    str | int | float | bool
    ├── ChoiceNode    an Enum (str or int values) or a Literal[...] of str / int
    ├── OptionalNode  X | None
    ├── ListNode      list[X]
    └── ObjectNode    a nested pydantic model: a tuple of FieldNode (name, key, node, default)

Anything else (``dict[str, X]``, unions of several types, recursive models, dates…) is
refused by :func:`compile_schema` with a :class:`routewise.errors.ConfigError` naming the
field, so a codec never meets a shape it cannot round-trip.

Values travel between the tree and the codecs as *plain* values: JSON-like Python objects
(``dict`` keyed by field name, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None``;
enum members become their values), built by :func:`to_plain`.

Examples
--------
>>> from enum import Enum
>>> from pydantic import BaseModel, Field
>>> class Intent(str, Enum):
...     refund = "refund"
...     bug = "bug"
>>> class Ticket(BaseModel):
...     intent: Intent
...     tags: list[str] = Field(default_factory=list)
...     note: str | None = None
>>> tree = compile_schema(Ticket)
>>> [(f.name, type(f.node).__name__) for f in tree.fields]
[('intent', 'ChoiceNode'), ('tags', 'ListNode'), ('note', 'OptionalNode')]
>>> to_plain(tree, Ticket(intent=Intent.bug, tags=["ui"]))
{'intent': 'bug', 'tags': ['ui'], 'note': None}
"""

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, RootModel
from pydantic.fields import FieldInfo

from routewise.errors import ConfigError

__all__ = [
    "ChoiceNode",
    "FieldNode",
    "ListNode",
    "ObjectNode",
    "OptionalNode",
    "ScalarNode",
    "SchemaNode",
    "compile_schema",
    "example_plain",
    "is_omittable",
    "is_omitted",
    "to_plain",
    "type_text",
    "unwrap_optional",
]

ScalarKind = Literal["str", "int", "float", "bool"]

_SUPPORTED = (
    "supported: str, int, float, bool, Enum (str or int values), Literal[...] of str/int, "
    "X | None, nested BaseModel, list[X]"
)


@dataclass(frozen=True, slots=True)
class ScalarNode:
    """A JSON scalar: ``kind`` is ``"str"``, ``"int"``, ``"float"`` or ``"bool"``.

    Examples
    --------
    >>> ScalarNode("int").kind
    'int'
    """

    kind: ScalarKind


@dataclass(frozen=True, slots=True)
class ChoiceNode:
    """A closed set of values: an Enum class or a ``Literal[...]``.

    ``values`` are what the JSON carries (str or int), ``labels`` their one-line text form
    (``str(value)``), ``names`` the Enum member names (the labels again for a Literal).

    Examples
    --------
    >>> node = ChoiceNode(values=(1, 2), labels=("1", "2"), names=("LOW", "HIGH"))
    >>> node.index_of(2)
    1
    """

    values: tuple[str | int, ...]
    labels: tuple[str, ...]
    names: tuple[str, ...]

    def index_of(self, value: Any) -> int:
        """Position of ``value`` (an enum member or a raw value) in :attr:`values`."""
        raw = value.value if isinstance(value, enum.Enum) else value
        for i, v in enumerate(self.values):
            if type(v) is type(raw) and v == raw:
                return i
        raise ValueError(f"{value!r} is not one of {list(self.values)!r}")

    def match_label(self, text: str) -> str | int | None:
        """The value whose label (or member name) is ``text``, exactly or ignoring case."""
        for i, label in enumerate(self.labels):
            if label == text:
                return self.values[i]
        folded = text.casefold()
        for candidates in (self.labels, self.names):
            hits = [i for i, c in enumerate(candidates) if c.casefold() == folded]
            if len(hits) == 1:
                return self.values[hits[0]]
        return None


@dataclass(frozen=True, slots=True)
class OptionalNode:
    """``X | None``.

    Examples
    --------
    >>> OptionalNode(ScalarNode("str")).inner
    ScalarNode(kind='str')
    """

    inner: "SchemaNode"


@dataclass(frozen=True, slots=True)
class ListNode:
    """``list[X]``.

    Examples
    --------
    >>> ListNode(ScalarNode("int")).item.kind
    'int'
    """

    item: "SchemaNode"


@dataclass(frozen=True, slots=True, eq=False)
class FieldNode:
    """One field of a model: its Python ``name``, the ``key`` pydantic validates it under
    (the alias, if any), its node, description, and default.

    Examples
    --------
    >>> f = FieldNode("qty", "qty", ScalarNode("int"), has_default=True, default=1)
    >>> f.default_value()
    (True, 1)
    """

    name: str
    key: str
    node: "SchemaNode"
    description: str | None = None
    has_default: bool = False
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    default_known: bool = True

    def default_value(self) -> tuple[bool, Any]:
        """``(True, default)`` when the default is known without validated data."""
        if not (self.has_default and self.default_known):
            return False, None
        if self.default_factory is not None:
            return True, self.default_factory()
        return True, self.default


@dataclass(frozen=True, slots=True, eq=False)
class ObjectNode:
    """A pydantic model: its class, fields in declaration order and docstring.

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> class Item(BaseModel):
    ...     '''One order line.'''
    ...     sku: str
    >>> node = compile_schema(Item)
    >>> node.description, node.lookup("SKU").name
    ('One order line.', 'sku')
    """

    model: type[BaseModel]
    fields: tuple[FieldNode, ...]
    description: str | None = None
    _index: dict[str, FieldNode] = field(default_factory=dict, repr=False)
    _folded: dict[str, FieldNode] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for f in self.fields:
            for k in (f.name, f.key):
                self._index.setdefault(k, f)
        for f in self.fields:
            for k in (f.name, f.key):
                self._folded.setdefault(k.casefold(), f)

    def lookup(self, name: str) -> FieldNode | None:
        """The field called ``name`` (Python name or alias), exactly or ignoring case."""
        return self._index.get(name) or self._folded.get(name.casefold())


SchemaNode = ScalarNode | ChoiceNode | OptionalNode | ListNode | ObjectNode


def compile_schema(schema: type[BaseModel]) -> ObjectNode:
    """Compile a pydantic model class into a schema tree, or raise ``ConfigError``."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError("schema", f"{schema!r} is not a pydantic BaseModel subclass")
    return _compile_model(schema, "", ())


def unwrap_optional(node: SchemaNode) -> SchemaNode:
    """``node`` without its ``| None`` wrapper.

    Examples
    --------
    >>> unwrap_optional(OptionalNode(ScalarNode("int")))
    ScalarNode(kind='int')
    """
    while isinstance(node, OptionalNode):
        node = node.inner
    return node


_TYPE_TEXT = {"str": "string", "int": "integer", "float": "number", "bool": "true or false"}
_PLURAL = {"str": "strings", "int": "integers", "float": "numbers", "bool": "true/false values"}


def type_text(node: SchemaNode, choice: Callable[[ChoiceNode], str]) -> str:
    """How instructions describe a JSON value of ``node``'s type; ``choice`` renders an
    enum (the JSON modes differ only there: labels vs option numbers).

    Examples
    --------
    >>> type_text(ListNode(OptionalNode(ScalarNode("int"))), lambda c: "")
    'list of integers (or null)'
    """
    if isinstance(node, OptionalNode):
        return f"{type_text(node.inner, choice)} or null"
    if isinstance(node, ChoiceNode):
        return choice(node)
    if isinstance(node, ListNode):
        item = unwrap_optional(node.item)
        if isinstance(item, ScalarNode):
            text = _PLURAL[item.kind]
        elif isinstance(item, ObjectNode):
            text = "objects"
        else:
            text = f"items, each {type_text(item, choice)}"
        return "list of " + text + (" (or null)" if isinstance(node.item, OptionalNode) else "")
    if isinstance(node, ObjectNode):
        return "object"
    assert isinstance(node, ScalarNode)
    return _TYPE_TEXT[node.kind]


def to_plain(node: SchemaNode, value: Any) -> Any:
    """The plain (JSON-like) form of ``value`` under ``node``; objects keyed by field name."""
    if value is None:
        return None
    if isinstance(node, OptionalNode):
        return to_plain(node.inner, value)
    if isinstance(node, ChoiceNode):
        return node.values[node.index_of(value)]
    if isinstance(node, ListNode):
        return [to_plain(node.item, v) for v in value]
    if isinstance(node, ObjectNode):
        out: dict[str, Any] = {}
        for f in node.fields:
            if isinstance(value, Mapping):
                item = value.get(f.name, value.get(f.key))
            else:
                item = getattr(value, f.name)
            out[f.name] = to_plain(f.node, item)
        return out
    return value


def is_omittable(f: FieldNode) -> bool:
    """Whether a reader can rebuild ``f`` when its value is left out of the emitted form:
    it has a default, is optional (→ None), is a list (→ []) or an object whose fields are
    all omittable."""
    node = f.node
    if f.has_default or isinstance(node, OptionalNode | ListNode):
        return True
    if isinstance(node, ObjectNode):
        return all(is_omittable(g) for g in node.fields)
    return False


def is_omitted(f: FieldNode, value: Any) -> bool:
    """Whether leaving ``f`` out rebuilds exactly ``value`` (see :func:`is_omittable`)."""
    node = f.node
    if f.has_default:
        known, default = f.default_value()
        if not known:
            return False
        try:
            same = bool(value == default)
        except Exception:  # an exotic __eq__: never omit
            return False
        return same and _same_plain(to_plain(node, value), to_plain(node, default))
    if isinstance(node, OptionalNode):
        return value is None
    if isinstance(node, ListNode):
        return isinstance(value, list) and not value
    if isinstance(node, ObjectNode) and isinstance(value, BaseModel):
        return all(is_omitted(g, getattr(value, g.name)) for g in node.fields)
    return False


def example_plain(node: SchemaNode, f: FieldNode | None = None) -> Any:
    """A small, well-formed plain value for ``node`` to show in instructions."""
    if f is not None and f.has_default and f.default_factory is None:
        default = f.default
        if default is not None and not isinstance(default, list | BaseModel):
            try:
                return to_plain(node, default)
            except (ValueError, TypeError):
                pass
    if isinstance(node, OptionalNode):
        return example_plain(node.inner)
    if isinstance(node, ChoiceNode):
        return node.values[0]
    if isinstance(node, ListNode):
        return [example_plain(node.item)]
    if isinstance(node, ObjectNode):
        return {g.name: example_plain(g.node, g) for g in node.fields}
    return {"str": "text", "int": 1, "float": 0.5, "bool": True}[node.kind]


def _same_plain(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (and -0.0 from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_plain(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_plain(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def _compile_model(
    model: type[BaseModel], path: str, stack: tuple[type[BaseModel], ...]
) -> ObjectNode:
    where = f"field {path!r}" if path else model.__name__
    if model in stack:
        raise ConfigError("schema", f"{where}: recursive model {model.__name__} is not supported")
    if issubclass(model, RootModel):
        raise ConfigError("schema", f"{where}: RootModel {model.__name__} is not supported")
    if not model.__pydantic_complete__:
        try:
            model.model_rebuild()
        except Exception as exc:
            raise ConfigError(
                "schema", f"{where}: model {model.__name__} is not fully defined ({exc})"
            ) from None
    by_name = model.model_config.get("validate_by_alias", True) is False
    fields: list[FieldNode] = []
    for name, info in model.model_fields.items():
        fpath = f"{path}.{name}" if path else name
        node = _compile_type(info.annotation, fpath, (*stack, model))
        description = info.description
        inner = unwrap_optional(node)
        if description is None and isinstance(inner, ObjectNode):
            description = inner.description
        has_default = not info.is_required()
        factory = info.default_factory
        takes_data = factory is not None and info.default_factory_takes_validated_data
        fields.append(
            FieldNode(
                name=name,
                key=name if by_name else _validation_key(name, info, fpath),
                node=node,
                description=description,
                has_default=has_default,
                default=info.default if has_default and factory is None else None,
                default_factory=None
                if takes_data
                else typing.cast(Callable[[], Any] | None, factory),
                default_known=not takes_data,
            )
        )
    doc = model.__dict__.get("__doc__")
    return ObjectNode(
        model=model, fields=tuple(fields), description=inspect.cleandoc(doc) if doc else None
    )


def _validation_key(name: str, info: FieldInfo, path: str) -> str:
    alias = info.validation_alias
    if alias is None:
        return info.alias if isinstance(info.alias, str) else name
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    raise ConfigError("schema", f"field {path!r}: an AliasPath validation alias is not supported")


def _compile_type(tp: Any, path: str, stack: tuple[type[BaseModel], ...]) -> SchemaNode:
    origin = get_origin(tp)
    if origin is Annotated:
        return _compile_type(get_args(tp)[0], path, stack)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise ConfigError(
                "schema",
                f"field {path!r}: the union {_type_name(tp)} is not supported (only X | None; {_SUPPORTED})",
            )
        inner = _compile_type(rest[0], path, stack)
        return inner if isinstance(inner, OptionalNode) else OptionalNode(inner)
    if origin is Literal:
        values = list(dict.fromkeys(get_args(tp)))
        if None in values:
            values.remove(None)
            if not values:
                raise ConfigError("schema", f"field {path!r}: Literal[None] is not supported")
            return OptionalNode(_choice([(str(v), v) for v in values], path, _type_name(tp)))
        return _choice([(str(v), v) for v in values], path, _type_name(tp))
    if origin is list or tp is list:
        args = get_args(tp)
        if len(args) != 1:
            raise ConfigError(
                "schema", f"field {path!r}: a list needs one item type, e.g. list[str]"
            )
        return ListNode(_compile_type(args[0], f"{path}[]", stack))
    if origin is dict or tp is dict:
        raise ConfigError(
            "schema",
            f"field {path!r}: {_type_name(tp)} (free-form keys) is not supported; use a nested model with named fields",
        )
    if origin is None and isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            members = list(tp)
            return _choice([(m.name, m.value) for m in members], path, tp.__name__)
        if issubclass(tp, BaseModel):
            return _compile_model(tp, path, stack)
        for py, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
            if tp is py:
                return ScalarNode(typing.cast(ScalarKind, kind))
    raise ConfigError(
        "schema", f"field {path!r}: type {_type_name(tp)} is not supported ({_SUPPORTED})"
    )


def _choice(items: list[tuple[str, Any]], path: str, what: str) -> ChoiceNode:
    if not items:
        raise ConfigError("schema", f"field {path!r}: {what} has no values")
    for _, v in items:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ConfigError(
                "schema",
                f"field {path!r}: {what} value {v!r} is not a str or int (only str/int choices are supported)",
            )
    labels = tuple(str(v) for _, v in items)
    if len(set(labels)) != len(labels):
        raise ConfigError(
            "schema", f"field {path!r}: {what} has values with the same text {list(labels)!r}"
        )
    return ChoiceNode(
        values=tuple(v for _, v in items), labels=labels, names=tuple(n for n, _ in items)
    )


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return repr(tp).replace("typing.", "")
