"""Round-trip properties of the output modes over generated schemas and instances.

Schemas are built with ``pydantic.create_model`` from a Hypothesis strategy (nested
models to depth 3, lists of scalars / objects / lists, str and int enums, str and int
Literals, optionals, defaults, aliases); instances come from a strategy derived from the
same specification. For every mode ``decode(encode(x)) == x``; the JSON encodings
validate against the mode's JSON schema; the line encoding matches the GBNF grammar;
``parse`` never raises.
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum
from typing import Any, Literal

import jsonschema_rs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model
from test_modes import TICKET, Order, Ticket, assert_strict, gbnf

from routewise.backends.modes import get_codec

MODES = ["direct_emit", "transport_compressed", "local_reconstructed"]
_names = itertools.count()

# Property settings: ~150 examples each, no deadline (schema building is not the point).
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Spec:
    """A generated field type: its annotation and a strategy for its values."""

    annotation: Any
    values: st.SearchStrategy[Any]


# -- leaves ------------------------------------------------------------------------------

_LABEL_CHARS = string.ascii_letters + string.digits + "_-: .é😀"
labels = st.one_of(
    st.text(_LABEL_CHARS, min_size=1, max_size=8).map(str.strip).filter(bool),
    st.sampled_from(["null", "None", "NULL", "[]", "{}", '"q"', "'q'", "true", "0"]),
)
texts = st.one_of(
    st.text(),
    st.sampled_from(["", " ", "null", "a: b", "x = y", "\\", '"', "'s'", "line\nbreak", "😀 "]),
)

SCALARS: dict[str, Spec] = {
    "str": Spec(str, texts),
    "int": Spec(int, st.integers(min_value=-(2**63), max_value=2**63)),
    "float": Spec(float, st.floats(allow_nan=False, allow_infinity=False)),
    "bool": Spec(bool, st.booleans()),
}


@st.composite
def choice_specs(draw: st.DrawFn) -> Spec:
    kind = draw(
        st.sampled_from(["str_enum", "plain_enum", "int_enum", "str_literal", "int_literal"])
    )
    n = next(_names)
    if kind in ("int_enum", "int_literal"):
        values: list[Any] = draw(st.lists(st.integers(-5, 99), min_size=1, max_size=4, unique=True))
    else:
        values = draw(st.lists(labels, min_size=1, max_size=4, unique=True))
    members = {f"M{i}": v for i, v in enumerate(values)}
    if kind == "str_enum":
        enum_cls: type[Enum] = StrEnum(f"E{n}", members)  # type: ignore[misc]
        return Spec(enum_cls, st.sampled_from(list(enum_cls)))
    if kind == "plain_enum":
        enum_cls = Enum(f"E{n}", members)  # type: ignore[misc]
        return Spec(enum_cls, st.sampled_from(list(enum_cls)))
    if kind == "int_enum":
        enum_cls = IntEnum(f"E{n}", members)  # type: ignore[misc]
        return Spec(enum_cls, st.sampled_from(list(enum_cls)))
    return Spec(Literal[tuple(values)], st.sampled_from(values))


# -- nodes and models ---------------------------------------------------------------------

field_names = st.from_regex(r"[a-z][a-z0-9_]{0,5}|[A-Z][a-z]{0,3}|café", fullmatch=True).filter(
    lambda n: not hasattr(BaseModel, n) and not n.startswith("model_")
)


@st.composite
def node_specs(draw: st.DrawFn, depth: int, lists: int) -> Spec:
    kinds = ["scalar", "scalar", "choice", "optional"]
    if lists < 3:
        kinds.append("list")
    if depth < 3:
        kinds.append("object")
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        return SCALARS[draw(st.sampled_from(sorted(SCALARS)))]
    if kind == "choice":
        return draw(choice_specs())
    if kind == "optional":
        inner = draw(node_specs(depth, lists))
        return Spec(inner.annotation | None, st.none() | inner.values)
    if kind == "list":
        item = draw(node_specs(depth, lists + 1))
        # within the grammar's bounds (8, 4, 2, 1 items by list nesting)
        return Spec(list[item.annotation], st.lists(item.values, max_size=(3, 2, 2)[lists]))
    model, values = draw(model_specs(depth + 1, lists))
    return Spec(model, values)


@st.composite
def model_specs(draw: st.DrawFn, depth: int = 0, lists: int = 0) -> tuple[type[BaseModel], Any]:
    names = draw(st.lists(field_names, min_size=1 if depth == 0 else 0, max_size=5, unique=True))
    fields: dict[str, Any] = {}
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name in names:
        spec = draw(node_specs(depth, lists))
        key = draw(st.sampled_from([name, name, name, f"{name}Alias"]))
        extra: dict[str, Any] = {"description": draw(st.sampled_from([None, f"the {name}"]))}
        if key != name:
            extra["alias"] = key
        annotation = spec.annotation
        is_list = getattr(annotation, "__origin__", None) is list
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if draw(st.booleans()):  # give the field a default
            if is_list:
                extra["default_factory"] = list
            elif not is_model:
                extra["default"] = draw(spec.values)
        if "default" in extra or "default_factory" in extra:
            optional[key] = spec.values
        else:
            required[key] = spec.values
        fields[name] = (annotation, Field(**extra))
    doc = draw(st.sampled_from([None, "A generated model."]))
    model = create_model(f"M{next(_names)}", __doc__=doc, **fields)
    values = st.fixed_dictionaries(required, optional=optional).map(lambda kw: model(**kw))
    return model, values


@st.composite
def schema_and_instance(draw: st.DrawFn) -> tuple[type[BaseModel], BaseModel]:
    model, values = draw(model_specs())
    return model, draw(values)


# -- properties ---------------------------------------------------------------------------


@PROPERTY
@given(schema_and_instance())
def test_round_trip_every_mode(case: tuple[type[BaseModel], BaseModel]) -> None:
    model, value = case
    for mode in MODES:
        codec = get_codec(mode, model)
        emitted = codec.encode(value)
        assert codec.decode(emitted) == value, (mode, emitted)
        result = codec.parse(emitted)
        assert result.parse_ok and result.schema_valid and result.value == value


@PROPERTY
@given(schema_and_instance())
def test_json_encodings_validate_against_the_strict_schema(
    case: tuple[type[BaseModel], BaseModel],
) -> None:
    model, value = case
    for mode in ("direct_emit", "transport_compressed"):
        constraint = get_codec(mode, model).constraint()
        assert constraint.json_schema is not None
        assert_strict(constraint.json_schema)
        emitted = json.loads(get_codec(mode, model).encode(value))
        assert jsonschema_rs.validator_for(constraint.json_schema).is_valid(emitted)


@PROPERTY
@given(schema_and_instance())
def test_line_encoding_matches_the_grammar(case: tuple[type[BaseModel], BaseModel]) -> None:
    model, value = case
    codec = get_codec("local_reconstructed", model)
    grammar = codec.constraint().grammar
    assert grammar is not None and codec.constraint().json_schema is None
    emitted = codec.encode(value)
    assert gbnf(grammar).matches(emitted), (grammar, emitted)


@PROPERTY
@given(schema_and_instance())
def test_instructions_are_compact_and_their_examples_read(
    case: tuple[type[BaseModel], BaseModel],
) -> None:
    model, _ = case
    for mode in MODES:
        codec = get_codec(mode, model)
        text = codec.instructions()
        assert "Example:" in text
        example = text.split("Example:", 1)[1].strip()
        assert codec.parse(example).parse_ok or example == "", (mode, example)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.sampled_from(MODES))
def test_parse_never_raises_on_arbitrary_text(text: str, mode: str) -> None:
    for schema in (Ticket, Order):
        result = get_codec(mode, schema).parse(text)
        assert result.local_ms >= 0
        assert result.parse_ok or result.error == "malformed_output"
        assert result.schema_valid == (result.value is not None)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MODES), st.integers(0, 10_000), st.integers(0, 40), st.text(max_size=5))
def test_parse_never_raises_on_damaged_encodings(mode: str, at: int, cut: int, insert: str) -> None:
    codec = get_codec(mode, Ticket)
    emitted = codec.encode(TICKET)
    at %= len(emitted) + 1
    damaged = emitted[:at] + insert + emitted[at + cut :]
    result = codec.parse(damaged)
    if result.schema_valid:
        assert isinstance(result.value, Ticket)
    else:
        assert result.value is None
