"""The three output modes: emitted forms, constraints, tolerant decoding, failed fields,
unsupported schemas and the GBNF grammar (see test_modes_hypothesis.py for the
round-trip properties)."""

from __future__ import annotations

import json
import re
from enum import Enum, IntEnum, StrEnum
from functools import lru_cache
from typing import Any, Literal

import jsonschema_rs
import pytest
from pydantic import AliasPath, BaseModel, Field, ValidationError, create_model, model_validator

from routewise.backends.base import Constraint, ModeResult
from routewise.backends.modes import (
    DecodeError,
    DirectEmit,
    LocalReconstructed,
    OutputCodec,
    TransportCompressed,
    get_codec,
)
from routewise.errors import ConfigError, RoutewiseError
from routewise.types import Mode

MODES = [m.value for m in Mode]


# --------------------------------------------------------------------------------------
# schemas


class Intent(StrEnum):
    refund = "refund"
    billing = "billing"
    bug_report = "bug_report"
    other = "other"


class Customer(BaseModel):
    """Who wrote in."""

    name: str = Field(description="Full name")
    email: str | None = Field(default=None, description="Email address if given")


class Ticket(BaseModel):
    """Triage of one customer support message."""

    intent: Intent = Field(description="What the customer wants")
    priority: int = Field(ge=1, le=5, description="Urgency, 1 (low) to 5 (urgent)")
    needs_human: bool = Field(description="True if an agent must handle it")
    summary: str = Field(description="One-sentence summary")
    tags: list[str] = Field(default_factory=list, description="Short topic labels")
    customer: Customer | None = None


TICKET = Ticket(
    intent=Intent.refund,
    priority=4,
    needs_human=True,
    summary='Charged twice: wants "refund" now',
    tags=["billing", "duplicate charge"],
    customer=Customer(name="Ann Lee", email="ann@example.com"),
)


class Level(IntEnum):
    low = 1
    high = 3


class Line(BaseModel):
    sku: str
    qty: int = Field(alias="Qty", ge=1)
    unit_price: float


class Order(BaseModel):
    order_id: str
    lines: list[Line]
    level: Level = Level.low
    channel: Literal["web", "phone"] = "web"
    size: Literal[1, 2, 3] | None = None
    notes: list[str | None] = []


ORDER = Order(
    order_id="A-1",
    lines=[Line(sku="x", Qty=2, unit_price=9.5), Line(sku="y", Qty=1, unit_price=0.1)],
    level=Level.high,
    channel="phone",
    size=2,
    notes=[None, "fragile"],
)


# --------------------------------------------------------------------------------------
# GBNF checker: rules well-formed and defined, plus a small matcher (grammar → AST, then
# the set of end positions of each node at each position, memoized) to test texts.

_TOKEN = re.compile(
    r'\s*(?:(?P<lit>"(?:[^"\\]|\\.)*")|(?P<cls>\[(?:[^\]\\]|\\.)*\])|(?P<rep>\{\d+(?:,\d*)?\})'
    r"|(?P<ref>[A-Za-z0-9-]+)|(?P<op>[()|?*+]))"
)
_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    '"': '"',
    "\\": "\\",
    "[": "[",
    "]": "]",
    "-": "-",
    "^": "^",
}

Token = tuple[str, str]


def gbnf_rules(grammar: str) -> dict[str, list[Token]]:
    """Rule name → tokens; asserts every line is a well-formed rule."""
    rules: dict[str, list[Token]] = {}
    for line in grammar.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, body = line.partition("::=")
        assert sep, f"not a rule: {line!r}"
        name = name.strip()
        assert re.fullmatch(r"[A-Za-z0-9-]+", name), f"bad rule name {name!r}"
        assert name not in rules, f"rule {name!r} defined twice"
        tokens: list[Token] = []
        pos = 0
        while pos < len(body.rstrip()):
            m = _TOKEN.match(body, pos)
            assert m is not None, f"cannot read {body[pos:]!r} in rule {name!r}"
            kind = m.lastgroup
            assert kind is not None
            tokens.append((kind, m.group(kind)))
            pos = m.end()
        assert tokens, f"empty rule {name!r}"
        rules[name] = tokens
    return rules


def check_gbnf(grammar: str) -> dict[str, list[Token]]:
    """Assert the grammar defines ``root`` and every rule it references."""
    assert grammar.strip()
    rules = gbnf_rules(grammar)
    assert "root" in rules
    for name, tokens in rules.items():
        for kind, text in tokens:
            if kind == "ref":
                assert text in rules, f"rule {name!r} references undefined rule {text!r}"
    return rules


def _chars(body: str) -> list[str]:
    """Characters of a literal or class body, escapes decoded."""
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            if body[i + 1] == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
            else:
                out.append(_ESCAPES[body[i + 1]])
                i += 2
        else:
            out.append(body[i])
            i += 1
    return out


class Gbnf:
    """A recognizer for the (non-recursive) GBNF grammars the codecs emit."""

    def __init__(self, grammar: str) -> None:
        self.rules = {name: self._parse(tokens) for name, tokens in check_gbnf(grammar).items()}
        self._memo: dict[tuple[int, int], frozenset[int]] = {}
        self._text = ""

    def _parse(self, tokens: list[Token]) -> Any:
        pos = 0

        def alternation() -> Any:
            nonlocal pos
            options = [sequence()]
            while pos < len(tokens) and tokens[pos] == ("op", "|"):
                pos += 1
                options.append(sequence())
            return ("alt", options)

        def sequence() -> Any:
            nonlocal pos
            items = []
            while pos < len(tokens) and tokens[pos] not in (("op", "|"), ("op", ")")):
                kind, text = tokens[pos]
                pos += 1
                if kind == "lit":
                    node: Any = ("lit", "".join(_chars(text[1:-1])))
                elif kind == "cls":
                    negated = text.startswith("[^")
                    chars = _chars(text[2 if negated else 1 : -1])
                    node = ("cls", negated, chars)
                elif kind == "ref":
                    node = ("ref", text)
                elif (kind, text) == ("op", "("):
                    node = alternation()
                    assert tokens[pos] == ("op", ")"), "unbalanced parentheses"
                    pos += 1
                else:
                    raise AssertionError(f"unexpected {text!r}")
                while pos < len(tokens) and (tokens[pos][0] == "rep" or tokens[pos][1] in "?*+"):
                    rep = tokens[pos][1]
                    pos += 1
                    lo, hi = {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(rep, (0, 0))
                    if rep.startswith("{"):
                        a, _, b = rep[1:-1].partition(",")
                        lo, hi = int(a), (int(a) if "," not in rep else (int(b) if b else None))
                    node = ("rep", node, lo, hi)
                items.append(node)
            return ("seq", items)

        tree = alternation()
        assert pos == len(tokens), "unbalanced parentheses"
        return tree

    def matches(self, text: str) -> bool:
        self._memo, self._text = {}, text
        return len(text) in self._ends(self.rules["root"], 0)

    def _ends(self, node: Any, pos: int) -> frozenset[int]:
        key = (id(node), pos)
        if key not in self._memo:
            self._memo[key] = frozenset(self._compute(node, pos))
        return self._memo[key]

    def _compute(self, node: Any, pos: int) -> set[int]:
        kind, text = node[0], self._text
        if kind == "lit":
            return {pos + len(node[1])} if text.startswith(node[1], pos) else set()
        if kind == "cls":
            if pos >= len(text):
                return set()
            hit, chars, i = False, node[2], 0
            while i < len(chars):
                if i + 2 < len(chars) and chars[i + 1] == "-":
                    hit |= chars[i] <= text[pos] <= chars[i + 2]
                    i += 3
                else:
                    hit |= chars[i] == text[pos]
                    i += 1
            return {pos + 1} if hit != node[1] else set()
        if kind == "ref":
            return set(self._ends(self.rules[node[1]], pos))
        if kind == "alt":
            return set().union(*(self._ends(option, pos) for option in node[1]))
        if kind == "seq":
            current = {pos}
            for item in node[1]:
                current = set().union(*(self._ends(item, p) for p in current)) if current else set()
            return current
        _, inner, lo, hi = node
        result: set[int] = {pos} if lo == 0 else set()
        frontier, count = {pos}, 0
        while frontier and (hi is None or count < hi):
            count += 1
            frontier = set().union(*(self._ends(inner, p) for p in frontier)) - (
                result if count > lo else set()
            )
            if count >= lo:
                result |= frontier
        return result


@lru_cache(maxsize=64)
def gbnf(grammar: str) -> Gbnf:
    return Gbnf(grammar)


def assert_strict(schema: Any, path: str = "$") -> None:
    """OpenAI strict mode: closed objects, all properties required, no $ref / defaults."""
    if isinstance(schema, dict):
        assert "$ref" not in schema and "$defs" not in schema and "definitions" not in schema, path
        assert "default" not in schema, path
        if schema.get("type") == "object" or "properties" in schema:
            assert schema.get("additionalProperties") is False, path
            assert sorted(schema["required"]) == sorted(schema["properties"]), path
        for key, value in schema.items():
            if key != "enum":
                assert_strict(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            assert_strict(item, f"{path}[{i}]")


# --------------------------------------------------------------------------------------
# API surface


def test_public_names() -> None:
    import routewise.backends.modes as modes

    assert sorted(modes.__all__) == sorted(
        [
            "DecodeError",
            "DirectEmit",
            "LocalReconstructed",
            "OutputCodec",
            "TransportCompressed",
            "get_codec",
        ]
    )


@pytest.mark.parametrize(
    ("mode", "cls"),
    [
        ("direct_emit", DirectEmit),
        ("transport_compressed", TransportCompressed),
        ("local_reconstructed", LocalReconstructed),
    ],
)
def test_get_codec_by_mode_and_cached(mode: str, cls: type[OutputCodec[Any]]) -> None:
    codec = get_codec(mode, Ticket)
    assert isinstance(codec, cls)
    assert codec.mode is Mode(mode)
    assert codec.schema is Ticket
    assert get_codec(Mode(mode), Ticket) is codec
    assert codec.instructions() is codec.instructions()
    assert isinstance(codec.constraint(), Constraint)


def test_get_codec_rejects_unknown_mode_and_non_models() -> None:
    with pytest.raises(ConfigError, match="not an output mode") as info:
        get_codec("yaml", Ticket)
    assert info.value.field == "mode"
    with pytest.raises(ConfigError, match="not a pydantic BaseModel") as info:
        get_codec("direct_emit", dict)  # type: ignore[type-var]
    assert info.value.field == "schema"


def test_decode_error_is_a_routewise_value_error() -> None:
    err = DecodeError("bad")
    assert isinstance(err, RoutewiseError) and isinstance(err, ValueError)
    assert err.reason == "bad"
    with pytest.raises(DecodeError) as info:
        get_codec("direct_emit", Ticket).decode("no json here")
    assert "no complete JSON object" in info.value.reason


@pytest.mark.parametrize("mode", MODES)
def test_encode_checks_the_instance_type(mode: str) -> None:
    with pytest.raises(TypeError, match="expected a Ticket instance"):
        get_codec(mode, Ticket).encode(Customer(name="x"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# emitted forms


def test_emitted_forms_of_the_ticket() -> None:
    assert get_codec("direct_emit", Ticket).encode(TICKET) == (
        '{"intent":"refund","priority":4,"needs_human":true,'
        '"summary":"Charged twice: wants \\"refund\\" now","tags":["billing","duplicate charge"],'
        '"customer":{"name":"Ann Lee","email":"ann@example.com"}}'
    )
    assert get_codec("transport_compressed", Ticket).encode(TICKET) == (
        '{"a":0,"b":4,"c":true,"d":"Charged twice: wants \\"refund\\" now",'
        '"e":["billing","duplicate charge"],"f":{"a":"Ann Lee","b":"ann@example.com"}}'
    )
    assert get_codec("local_reconstructed", Ticket).encode(TICKET) == (
        "intent: refund\n"
        "priority: 4\n"
        "needs_human: true\n"
        'summary: Charged twice: wants "refund" now\n'
        "tags.0: billing\n"
        "tags.1: duplicate charge\n"
        "customer.name: Ann Lee\n"
        "customer.email: ann@example.com\n"
    )


def test_local_leaves_out_what_it_can_rebuild() -> None:
    codec = get_codec("local_reconstructed", Order)
    sparse = Order(order_id="B", lines=[])
    assert codec.encode(sparse) == "order_id: B\n"
    assert codec.decode("order_id: B") == sparse
    # values that differ from what omission rebuilds are written, with markers if empty
    assert codec.encode(ORDER) == (
        "order_id: A-1\n"
        "lines.0.sku: x\n"
        "lines.0.qty: 2\n"
        "lines.0.unit_price: 9.5\n"
        "lines.1.sku: y\n"
        "lines.1.qty: 1\n"
        "lines.1.unit_price: 0.1\n"
        "level: 3\n"
        "channel: phone\n"
        "size: 2\n"
        "notes.0: null\n"
        "notes.1: fragile\n"
    )


def test_transport_enums_by_index_and_int_enums() -> None:
    codec = get_codec("transport_compressed", Order)
    assert codec.encode(ORDER) == (
        '{"a":"A-1","b":[{"a":"x","b":2,"c":9.5},{"a":"y","b":1,"c":0.1}],'
        '"c":1,"d":1,"e":1,"f":[null,"fragile"]}'
    )
    assert codec.decode(codec.encode(ORDER)) == ORDER


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("value", [TICKET, ORDER], ids=["ticket", "order"])
def test_round_trip_examples(mode: str, value: BaseModel) -> None:
    codec = get_codec(mode, type(value))
    assert codec.decode(codec.encode(value)) == value
    result = codec.parse(codec.encode(value))
    assert result == ModeResult(
        value=value, parse_ok=True, schema_valid=True, local_ms=result.local_ms
    )
    assert result.local_ms >= 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        " lead",
        "trail ",
        "a\nb",
        "cr\rhere",
        '"quoted"',
        "'single'",
        "null",
        "None",
        "[]",
        "{}",
        "back\\slash",
        "key: value = x",
        "tab\tin",
        "\u2028sep",
        "emoji 😀",
        "'",
        '"',
    ],
)
def test_local_strings_round_trip(text: str) -> None:
    model = create_model("Note", text=(str, ...), maybe=(str | None, None))
    codec = get_codec("local_reconstructed", model)
    for value in (model(text=text), model(text="x", maybe=text)):
        emitted = codec.encode(value)
        assert codec.decode(emitted) == value, emitted
        assert gbnf(codec.constraint().grammar or "").matches(emitted), emitted


# --------------------------------------------------------------------------------------
# constraints


@pytest.mark.parametrize("mode", ["direct_emit", "transport_compressed"])
@pytest.mark.parametrize("value", [TICKET, ORDER], ids=["ticket", "order"])
def test_json_schema_is_strict_and_accepts_the_encoding(mode: str, value: BaseModel) -> None:
    codec = get_codec(mode, type(value))
    constraint = codec.constraint()
    assert constraint.grammar is None
    assert constraint.json_schema is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", constraint.name)
    assert_strict(constraint.json_schema)
    json.dumps(constraint.json_schema)  # plain JSON
    validator = jsonschema_rs.validator_for(constraint.json_schema)
    assert validator.is_valid(json.loads(codec.encode(value)))
    assert not validator.is_valid({})


def test_direct_schema_inlines_nested_models_and_optionals() -> None:
    assert "$defs" in Ticket.model_json_schema()  # pydantic's own schema has refs
    schema = get_codec("direct_emit", Ticket).constraint().json_schema
    assert schema is not None
    customer = schema["properties"]["customer"]
    assert customer["anyOf"][1] == {"type": "null"}
    assert customer["anyOf"][0]["properties"]["email"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "Email address if given",
    }
    assert schema["properties"]["intent"]["enum"] == ["refund", "billing", "bug_report", "other"]
    order = get_codec("direct_emit", Order).constraint().json_schema
    assert order is not None
    assert "Qty" in order["properties"]["lines"]["items"]["properties"]  # the alias
    assert order["properties"]["level"] == {"type": "integer", "enum": [1, 3]}


def test_transport_schema_uses_short_keys_and_indexes() -> None:
    schema = get_codec("transport_compressed", Ticket).constraint().json_schema
    assert schema is not None
    assert list(schema["properties"]) == ["a", "b", "c", "d", "e", "f"]
    assert schema["properties"]["a"]["enum"] == [0, 1, 2, 3]
    assert schema["properties"]["a"]["description"].startswith("intent (0=refund, 1=billing")
    assert list(schema["properties"]["f"]["anyOf"][0]["properties"]) == ["a", "b"]


def test_local_grammar_defines_every_rule() -> None:
    for schema in (Ticket, Order):
        codec = get_codec("local_reconstructed", schema)
        constraint = codec.constraint()
        assert constraint.json_schema is None
        assert constraint.grammar is not None
        check_gbnf(constraint.grammar)
    grammar = get_codec("local_reconstructed", Ticket).constraint().grammar
    assert grammar is not None
    assert 'choice ::= "refund" | "billing" | "bug_report" | "other"' in grammar.splitlines()


def test_local_grammar_accepts_encodings_and_rejects_others() -> None:
    codec = get_codec("local_reconstructed", Ticket)
    grammar = gbnf(codec.constraint().grammar or "")
    assert grammar.matches(codec.encode(TICKET))
    assert grammar.matches(codec.encode(TICKET.model_copy(update={"customer": None, "tags": []})))
    assert not grammar.matches("intent: refund\n")  # required lines missing
    assert not grammar.matches(codec.encode(TICKET).replace("refund", "refnud", 1))
    assert not grammar.matches(codec.encode(TICKET).replace("priority: 4", "priority: four"))
    assert not grammar.matches(codec.encode(TICKET).replace("tags.1", "tags.2"))
    assert not grammar.matches(codec.encode(TICKET).rstrip("\n"))  # every line ends with \n
    order = get_codec("local_reconstructed", Order)
    assert gbnf(order.constraint().grammar or "").matches(order.encode(ORDER))


def test_local_grammar_stays_small_for_deeply_nested_lists() -> None:
    model = create_model("Deep", cube=(list[list[list[list[list[list[str]]]]]], ...))
    codec = get_codec("local_reconstructed", model)
    grammar = codec.constraint().grammar or ""
    assert len(grammar) < 20_000  # 8 * 4 * 2 * 1 * 1 * 1 copies of the leaf line
    value = model(cube=[[[[[["a"]]]]], [[[[["b"], []]]]], []])
    assert codec.decode(codec.encode(value)) == value
    assert gbnf(grammar).matches(codec.encode(model(cube=[[[[[["a"]]]]], []])))


def test_gbnf_matcher() -> None:
    g = gbnf(
        'root ::= "n: " num ( ", " num ){0,2} tail?\nnum ::= "-"? [0-9]+\ntail ::= [^\\n]* "!"'
    )
    for text in ("n: 1", "n: -12, 3", "n: 1, 2, 3", "n: 1 ok!"):
        assert g.matches(text), text
    for text in ("n: ", "n: 1, 2, 3, 4", "n: x", "n: 1 ok"):
        assert not g.matches(text), text


def test_gbnf_checker_catches_undefined_rules() -> None:
    with pytest.raises(AssertionError, match="undefined rule"):
        check_gbnf('root ::= "a" missing')
    with pytest.raises(AssertionError, match="root"):
        check_gbnf('start ::= "a"')


# --------------------------------------------------------------------------------------
# instructions


def test_instructions_teach_the_form() -> None:
    direct = get_codec("direct_emit", Ticket).instructions()
    assert "Triage of one customer support message." in direct
    assert '"intent": one of "refund", "billing", "bug_report", "other"' in direct
    assert "Urgency, 1 (low) to 5 (urgent)" in direct
    assert "Example: {" in direct

    transport = get_codec("transport_compressed", Ticket).instructions()
    assert '"a" = intent: option number (0=refund, 1=billing, 2=bug_report, 3=other)' in transport
    assert '"f" = customer: object or null with these keys — Who wrote in.' in transport
    assert '  "a" = name: string — Full name' in transport
    example = json.loads(transport.split("Example: ", 1)[1])
    assert example["a"] == 0 and example["f"] == {"a": "text", "b": "text"}

    local = get_codec("local_reconstructed", Ticket).instructions()
    assert "intent: one of refund | billing | bug_report | other" in local
    assert "tags.N: text (optional) — Short topic labels" in local
    assert "customer.email: text (optional)" in local
    assert local.split("Example:\n", 1)[1].startswith("intent: refund\npriority: 1\n")
    for text in (direct, transport, local):
        assert len(text) < 1500


def test_instructions_examples_parse() -> None:
    for mode in MODES:
        codec = get_codec(mode, Order)
        text = codec.instructions()
        example = text.split("Example:", 1)[1].strip()
        result = codec.parse(example)
        assert result.parse_ok, (mode, example)


# --------------------------------------------------------------------------------------
# tolerant decoding


@pytest.mark.parametrize(
    "text",
    [
        '  {"intent":"refund","priority":4,"needs_human":true,"summary":"s"}  \n',
        '```json\n{"intent":"refund","priority":4,"needs_human":true,"summary":"s"}\n```',
        'Here you go:\n{"intent":"refund","priority":4,"needs_human":true,"summary":"s"}\nDone {}!',
        'Use {braces} {"intent":"refund","priority":4,"needs_human":true,"summary":"s"} ok',
    ],
)
def test_direct_tolerates_fences_and_prose(text: str) -> None:
    value = get_codec("direct_emit", Ticket).decode(text)
    assert value == Ticket(intent=Intent.refund, priority=4, needs_human=True, summary="s")


def test_direct_keeps_braces_inside_strings() -> None:
    text = 'ok {"intent":"other","priority":1,"needs_human":false,"summary":"a } { b"}'
    assert get_codec("direct_emit", Ticket).decode(text).summary == "a } { b"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot help with that.",
        '{"intent": "refund", "priority": 4',  # truncated
        '{"intent": "refund", "customer": {"name": "x"}',  # truncated around a whole inner object
        "[1, 2, 3]",
        "{'intent': 'refund'}",
    ],
)
@pytest.mark.parametrize("mode", ["direct_emit", "transport_compressed"])
def test_json_modes_malformed(mode: str, text: str) -> None:
    codec = get_codec(mode, Ticket)
    with pytest.raises(DecodeError):
        codec.decode(text)
    result = codec.parse(text)
    assert (result.parse_ok, result.schema_valid, result.error) == (
        False,
        False,
        "malformed_output",
    )
    assert result.value is None


def test_transport_tolerates_full_names_labels_and_omitted_optionals() -> None:
    codec = get_codec("transport_compressed", Ticket)
    expected = Ticket(intent=Intent.bug_report, priority=2, needs_human=False, summary="s")
    assert codec.decode('{"a":2,"b":2,"c":false,"d":"s"}') == expected
    assert codec.decode('{"a":"Bug_Report","b":2,"c":false,"d":"s","e":[],"f":null}') == expected
    assert (
        codec.decode('{"intent":"bug_report","priority":2,"needs_human":false,"summary":"s"}')
        == expected
    )
    assert codec.decode('```json\n{"a":"2","b":2,"c":false,"d":"s"}\n```') == expected


def test_local_tolerates_model_variations() -> None:
    codec = get_codec("local_reconstructed", Ticket)
    text = (
        "Sure! Here is the triage:\n"
        "```\n"
        "  INTENT: Refund  \n"
        "\n"
        "- priority: 4,\n"
        "Needs_Human: Yes\n"
        'summary: "Charged twice: wants \\"refund\\" now"\n'
        "tags[0]: billing\n"
        "tags.1: duplicate charge\n"
        "customer.name = Ann Lee\n"
        "customer.email: 'ann@example.com'\n"
        "```\n"
        "Let me know if you need anything else."
    )
    assert codec.decode(text) == TICKET


def test_local_reads_json_ish_lines() -> None:
    codec = get_codec("local_reconstructed", Ticket)
    text = '{\n  "intent": "bug_report",\n  "priority": 2,\n  "needs_human": false,\n  "summary": "s",\n}'
    assert codec.decode(text) == Ticket(
        intent=Intent.bug_report, priority=2, needs_human=False, summary="s"
    )


def test_local_list_forms() -> None:
    codec = get_codec("local_reconstructed", Ticket)
    base = "intent: other\npriority: 1\nneeds_human: false\nsummary: s\n"
    assert codec.decode(base + "tags: a\ntags: b").tags == ["a", "b"]
    assert codec.decode(base + 'tags: ["a", "b"]').tags == ["a", "b"]
    assert codec.decode(base + "tags.1: b\ntags.0: a").tags == ["a", "b"]
    assert codec.decode(base + "tags: []").tags == []
    assert codec.decode(base + "customer: null").customer is None
    assert codec.decode(base + "customer: None").customer is None
    order = get_codec("local_reconstructed", Order)
    assert order.decode('order_id: x\nnotes: [null, "n"]').notes == [None, "n"]


def test_local_null_and_none_for_text() -> None:
    model = create_model("M", text=(str | None, ...), level=(Level | None, ...))
    codec = get_codec("local_reconstructed", model)
    assert codec.decode("text: None\nlevel: none") == model(text="None", level=None)
    assert codec.decode("text: null\nlevel: LOW") == model(text=None, level=Level.low)
    assert codec.decode("") == model(text=None, level=None)


@pytest.mark.parametrize(
    "text",
    ["I cannot help with that.", "```\n```\n", "note: hello\nthe answer is 4"],
)
def test_local_malformed(text: str) -> None:
    codec = get_codec("local_reconstructed", Ticket)
    result = codec.parse(text)
    if text.strip() == "```\n```".strip():
        # an empty answer reads fine: every required field is missing
        assert result.parse_ok and not result.schema_valid
        assert result.failed_fields == ("intent", "priority", "needs_human", "summary")
        return
    assert (result.parse_ok, result.error) == (False, "malformed_output")
    with pytest.raises(DecodeError, match="no line of the form"):
        codec.decode(text)


# --------------------------------------------------------------------------------------
# failed fields


def test_failed_fields_direct() -> None:
    codec = get_codec("direct_emit", Ticket)
    text = (
        '{"intent":"refunds","priority":9,"needs_human":true,"summary":"s","tags":["a", 3],'
        '"customer":{"name":"x","email":5}}'
    )
    result = codec.parse(text)
    assert result.parse_ok and not result.schema_valid and result.error is None
    assert result.failed_fields == ("intent", "priority", "tags.1", "customer.email")
    with pytest.raises(ValidationError):
        codec.decode(text)


def test_failed_fields_use_field_names_not_aliases_or_short_keys() -> None:
    bad_line = {"sku": "z", "Qty": 0, "unit_price": 1.0}
    direct = get_codec("direct_emit", Order)
    text = json.dumps({"order_id": "o", "lines": [bad_line, bad_line, bad_line]})
    assert direct.parse(text).failed_fields == ("lines.0.qty", "lines.1.qty", "lines.2.qty")
    transport = get_codec("transport_compressed", Order)
    result = transport.parse(
        '{"a":"o","b":[{"a":"z","b":1,"c":1},{"a":"z","b":"many","c":1}],"c":7}'
    )
    assert result.failed_fields == ("lines.1.qty", "level")
    local = get_codec("local_reconstructed", Order)
    result = local.parse("order_id: o\nlines.0.sku: z\nlines.0.qty: 2\nlines.2.qty: abc\nsize: 7")
    assert result.parse_ok
    assert result.failed_fields == (
        "lines.0.unit_price",
        "lines.1.sku",
        "lines.1.qty",
        "lines.1.unit_price",
        "size",
    )


def test_failed_fields_of_a_model_validator() -> None:
    class Range(BaseModel):
        lo: int
        hi: int

        @model_validator(mode="after")
        def _ordered(self) -> Range:
            if self.lo > self.hi:
                raise ValueError("lo > hi")
            return self

    result = get_codec("local_reconstructed", Range).parse("lo: 3\nhi: 1")
    assert (result.parse_ok, result.schema_valid, result.failed_fields) == (
        True,
        False,
        ("__root__",),
    )


def test_parse_survives_validators_that_raise_other_errors() -> None:
    class Odd(BaseModel):
        x: int

        @model_validator(mode="after")
        def _boom(self) -> Odd:
            raise TypeError("not a ValueError")

    for mode in MODES:
        result = get_codec(mode, Odd).parse(get_codec(mode, Odd).encode(Odd.model_construct(x=1)))
        assert (result.parse_ok, result.error) == (False, "malformed_output")


# --------------------------------------------------------------------------------------
# unsupported schemas


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Pet(BaseModel):
    name: str


class Car(BaseModel):
    plate: str


class Wrapper(BaseModel):
    inner: Customer
    meta: dict[str, int]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"meta": (dict[str, int], ...)}, "field 'meta': dict"),
        ({"owner": (Pet | Car, ...)}, "field 'owner': the union"),
        ({"x": (int | str, ...)}, "field 'x': the union"),
        ({"t": (tuple[int, int], ...)}, "field 't': type"),
        ({"when": (Any, ...)}, "field 'when': type"),
        ({"flag": (Literal[True], ...)}, "field 'flag'"),
        ({"items": (list, ...)}, "field 'items': a list needs one item type"),
        ({"deep": (list[dict[str, str]], ...)}, r"field 'deep\[\]': dict"),
        ({"w": (Wrapper, ...)}, "field 'w.meta'"),
    ],
)
def test_unsupported_schemas_name_the_field(fields: dict[str, Any], match: str) -> None:
    model = create_model("Bad", **fields)
    for mode in MODES:
        with pytest.raises(ConfigError, match=match) as info:
            get_codec(mode, model)
        assert info.value.field == "schema"


def test_recursive_models_are_refused() -> None:
    with pytest.raises(ConfigError, match="field 'children\\[\\]': recursive model Node"):
        get_codec("direct_emit", Node)


def test_enum_values_must_be_str_or_int() -> None:
    class Ratio(Enum):
        half = 0.5

    model = create_model("R", ratio=(Ratio, ...))
    with pytest.raises(ConfigError, match=r"field 'ratio': Ratio value 0\.5"):
        get_codec("transport_compressed", model)


def test_alias_paths_are_refused() -> None:
    model = create_model("A", x=(int, Field(validation_alias=AliasPath("a", 0))))
    with pytest.raises(ConfigError, match="field 'x': an AliasPath"):
        get_codec("direct_emit", model)


def test_local_needs_one_line_enum_labels() -> None:
    model = create_model("L", label=(Literal[" padded", "ok"], ...))
    get_codec("direct_emit", model)  # JSON modes carry any label
    with pytest.raises(ConfigError, match="field 'label': enum value ' padded'"):
        get_codec("local_reconstructed", model)


def test_schema_names_are_sanitized() -> None:
    model = create_model("Ticket (v2)/beta", x=(int, ...))
    assert get_codec("direct_emit", model).constraint().name == "Ticket_v2_beta"
