"""The endpoint documentation is the app: the README's endpoint table ("## The sidecar") and
``docs/api.md`` list exactly the routes the app serves, with the query parameters, request
fields, answer schemas, answer fields and status codes of its OpenAPI document, and the trace
format's fields are the ones the store writes.

A route added to the app without a row in the README table (or a row left behind for a route
that is gone) fails :func:`test_readme_table_lists_exactly_the_served_routes`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import routewise as rw
from routewise.server import create_app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
API_MD = ROOT / "docs" / "api.md"
ARMS = ["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"]
TOKEN = "tok-readme"

Endpoint = tuple[str, str]  # (METHOD, /path/{param})
Fields = dict[str, tuple[bool, dict[str, Any] | None]]  # name → (required, nested fields)
_ENDPOINT = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)(\?[^`]*)?`")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_TYPE_NAME = re.compile(r"`([A-Z][A-Za-z]+)`")


# ------------------------------------------------------------------------ the app's side
@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    ctl = rw.Controller(arms=ARMS, seed=0)
    yield create_app(ctl, token=TOKEN)
    ctl.close()


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    schema: dict[str, Any] = app.openapi()
    return schema


def _flatten(routes: list[Any], prefix: str = "") -> Iterator[Endpoint]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _flatten(included.routes, prefix + route.include_context.prefix)
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)  # {arm_id:path}
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            yield method, path


def served(app: Any) -> set[Endpoint]:
    """Every (method, path) the app routes."""
    return set(_flatten(app.routes))


def operation(spec: dict[str, Any], endpoint: Endpoint) -> dict[str, Any] | None:
    method, path = endpoint
    op: dict[str, Any] | None = spec["paths"].get(path, {}).get(method.lower())
    return op


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema behind ``schema`` ($ref, or the object option of an anyOf)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target: dict[str, Any] = spec["components"]["schemas"][name]
        return target
    for option in schema.get("anyOf", []):
        if "$ref" in option or "properties" in option:
            return resolve(spec, option)
    return schema


def success(op: dict[str, Any]) -> tuple[str, str | None, bool]:
    """``(status, component, is_array)`` of an operation's JSON success answer."""
    code = next(c for c in op["responses"] if c.startswith("2"))
    content = op["responses"][code].get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    is_array = schema.get("type") == "array"
    ref = (schema.get("items", {}) if is_array else schema).get("$ref")
    return code, (ref.rsplit("/", 1)[-1] if ref else None), is_array


def query_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}


def request_schema(spec: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    return None if body is None else resolve(spec, body["schema"])


# ------------------------------------------------------------------- reading the markdown
def section(text: str, heading: str) -> str:
    """The body of the ``heading`` section (up to the next heading of its level or above)."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.compile(rf"^#{{1,{len(level)}}} ", re.M).search(text, start)
    return text[start : stop.start() if stop else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``text``, as cells (``\\|`` kept in)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not all(re.fullmatch(r":?-+:?", c) for c in cells):
            rows.append(cells)
    return rows[1:]  # without the header


@dataclass
class Row:
    endpoints: list[tuple[Endpoint, set[str]]]  # with the query parameter names shown
    request: str
    answer: str


def readme_rows() -> list[Row]:
    body = section(README.read_text(encoding="utf-8"), "## The sidecar")
    out = []
    for cells in table_rows(body):
        endpoints = [
            ((m, p), {kv.split("=")[0] for kv in (q or "?")[1:].split("&") if kv})
            for m, p, q in _ENDPOINT.findall(cells[0])
        ]
        assert endpoints, f"README row names no endpoint: {cells[0]!r}"
        request, answer = [*cells, "", ""][1:3]  # endpoint | request | answer
        out.append(Row(endpoints, request, answer))
    return out


def parse_fields(text: str) -> Fields:
    """``{a, b?, c {d, e}}`` → ``{"a": (True, None), "b": (False, None), "c": (True, {…})}``
    (name → (required, nested fields))."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*\??|[{},]", text)
    pos = 0

    def group() -> Fields:
        nonlocal pos
        assert tokens[pos] == "{", text
        pos += 1
        fields: Fields = {}
        while tokens[pos] != "}":
            name = tokens[pos]
            pos += 1
            nested = group() if tokens[pos] == "{" else None
            fields[name.rstrip("?")] = (not name.endswith("?"), nested)
            if tokens[pos] == ",":
                pos += 1
        pos += 1
        return fields

    fields = group()
    assert pos == len(tokens), f"trailing text after the field list: {text!r}"
    return fields


def field_list(cell: str) -> str | None:
    """The ``{…}`` code span of a table cell, if any."""
    spans = [s for s in _CODE_SPAN.findall(cell) if s.startswith("{")]
    return spans[0] if spans else None


def check_fields(
    spec: dict[str, Any],
    schema: dict[str, Any],
    fields: Fields,
    where: str,
    *,
    required: bool,
) -> list[str]:
    """What differs between documented ``fields`` and ``schema``'s properties (recursively
    for nested lists; ``required``: also compare the ``?`` marks with the schema)."""
    props = schema.get("properties", {})
    problems = []
    if set(fields) != set(props):
        missing, extra = sorted(set(props) - set(fields)), sorted(set(fields) - set(props))
        problems.append(f"{where}: missing {missing}, not in the API {extra}")
    if required:
        marked = {name for name, (req, _) in fields.items() if req}
        if marked != set(schema.get("required", [])):
            problems.append(f"{where}: required {sorted(marked)} != {schema.get('required')}")
    for name, (_, nested) in fields.items():
        if nested is not None and name in props:
            inner = resolve(spec, props[name])
            problems += check_fields(spec, inner, nested, f"{where}.{name}", required=required)
    return problems


# -------------------------------------------------------------------------- README table
def test_readme_table_lists_exactly_the_served_routes(app: Any) -> None:
    documented = [e for row in readme_rows() for e, _ in row.endpoints]
    routes = served(app)
    assert len(documented) == len(set(documented)), "an endpoint is listed twice"
    missing = sorted(routes - set(documented))
    unknown = sorted(set(documented) - routes)
    assert not missing, f"routes the app serves, missing from the README table: {missing}"
    assert not unknown, f"README rows for routes the app does not serve: {unknown}"


def test_readme_query_parameters_and_request_fields(spec: dict[str, Any]) -> None:
    problems = []
    for row in readme_rows():
        for endpoint, shown in row.endpoints:
            op = operation(spec, endpoint)
            if op is None:  # the docs pages: not in the OpenAPI document
                continue
            if shown != query_names(op):
                problems.append(f"{endpoint}: query {sorted(shown)} != {sorted(query_names(op))}")
            body = request_schema(spec, op)
            listed = field_list(row.request)
            if (body is None) != (listed is None):
                problems.append(f"{endpoint}: request body {'not ' * (listed is None)}listed")
            elif body is not None and listed is not None:
                fields = parse_fields(listed)
                problems += check_fields(spec, body, fields, f"{endpoint} request", required=True)
    assert not problems, "\n".join(problems)


def test_readme_answers_name_their_schema_and_its_fields(spec: dict[str, Any]) -> None:
    problems = []
    for row in readme_rows():
        for endpoint, _ in row.endpoints:
            op = operation(spec, endpoint)
            if op is None:
                continue
            code, model, is_array = success(op)
            named = _TYPE_NAME.findall(row.answer)
            if model is None:
                assert not named, (endpoint, named)
                continue
            if named[:1] != [model]:
                problems.append(f"{endpoint}: answer {named[:1]} != {model}")
            if is_array != ("list of" in row.answer):
                problems.append(f"{endpoint}: the answer is {'an array' if is_array else 'one'}")
            if code != "200" and code not in row.answer:
                problems.append(f"{endpoint}: answers {code}, not said")
            listed = field_list(row.answer)
            if listed is not None:
                component = spec["components"]["schemas"][model]
                fields = parse_fields(listed)
                problems += check_fields(
                    spec, component, fields, f"{endpoint} answer", required=False
                )
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ docs/api.md
def api_text() -> str:
    return API_MD.read_text(encoding="utf-8")


def api_endpoint_sections() -> dict[Endpoint, str]:
    body = section(api_text(), "## Endpoints")
    parts = re.split(r"^### ", body, flags=re.M)[1:]
    out: dict[Endpoint, str] = {}
    for part in parts:
        heading, _, text = part.partition("\n")
        found = _ENDPOINT.findall(heading)
        assert len(found) == 1, f"docs/api.md: one endpoint per heading: {heading!r}"
        method, path, _ = found[0]
        assert (method, path) not in out, f"docs/api.md: {method} {path} twice"
        out[method, path] = text
    return out


def bullet(text: str, name: str) -> str | None:
    found = re.search(rf"^- {name}: (.*)$", text, re.M)
    return found.group(1) if found else None


def test_api_md_lists_exactly_the_served_routes(app: Any) -> None:
    routes = served(app)
    sections = set(api_endpoint_sections())
    assert sorted(routes - sections) == [], "routes missing from docs/api.md"
    assert sorted(sections - routes) == [], "docs/api.md sections for routes not served"
    summary = table_rows(section(api_text(), "## Endpoints"))
    listed = {e for cells in summary for (m, p, _) in _ENDPOINT.findall(cells[0]) for e in [(m, p)]}
    assert listed == routes, (sorted(routes - listed), sorted(listed - routes))


def _check_api_section(spec: dict[str, Any], endpoint: Endpoint, text: str) -> list[str]:
    op = operation(spec, endpoint)
    answers = bullet(text, "Answers")
    if answers is None:
        return [f"{endpoint}: no '- Answers:' line"]
    if op is None:
        return []
    problems = []
    codes = re.findall(r"\*\*(\d{3})\*\*", answers)
    if set(codes) != set(op["responses"]):
        problems.append(f"{endpoint}: status codes {sorted(codes)} != {sorted(op['responses'])}")
    code, model, is_array = success(op)
    first = answers.split(f"**{code}**", 1)[-1].split(";", 1)[0]
    named = _TYPE_NAME.findall(first)
    if model is not None and (named[:1] != [model] or is_array != ("array of" in first)):
        problems.append(f"{endpoint}: answer {first.strip()!r}, the API: {model} array={is_array}")
    query = bullet(text, "Query")
    shown = set(re.findall(r"`(\w+)` — ", query or ""))  # "`name` — what it is"
    if shown != query_names(op):
        problems.append(f"{endpoint}: query {sorted(shown)} != {sorted(query_names(op))}")
    body, listed = op.get("requestBody"), bullet(text, "Body")
    if body is None or listed is None:
        if (body is None) != (listed is None):
            problems.append(f"{endpoint}: the request body is {'not ' * (listed is None)}listed")
    else:
        ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        if _TYPE_NAME.findall(listed)[:1] != [ref]:
            problems.append(f"{endpoint}: body {listed!r} != {ref}")
    return problems


def test_api_md_endpoints_match_the_openapi_document(spec: dict[str, Any]) -> None:
    problems = []
    for endpoint, text in api_endpoint_sections().items():
        problems += _check_api_section(spec, endpoint, text)
    assert not problems, "\n".join(problems)


def _request_components(spec: dict[str, Any]) -> set[str]:
    """The components a request body uses, directly or nested."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None and ref.rsplit("/", 1)[-1] not in found:
                name = ref.rsplit("/", 1)[-1]
                found.add(name)
                walk(spec["components"]["schemas"][name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for ops in spec["paths"].values():
        for op in ops.values():
            walk(op.get("requestBody", {}))
    return found


def test_api_md_schemas_have_exactly_the_openapi_fields(spec: dict[str, Any]) -> None:
    body = section(api_text(), "## Schemas")
    documented = {}
    for part in re.split(r"^### ", body, flags=re.M)[1:]:
        heading, _, text = part.partition("\n")
        names = _TYPE_NAME.findall(heading)
        assert len(names) == 1, heading
        rows = table_rows(text)
        documented[names[0]] = {
            _CODE_SPAN.findall(cells[0])[0]: "**required**" in cells[1] for cells in rows
        }
    components = spec["components"]["schemas"]
    assert sorted(set(components) - set(documented)) == [], "schemas missing from docs/api.md"
    assert sorted(set(documented) - set(components)) == [], "docs/api.md schemas not in the API"
    requests = _request_components(spec)
    problems = []
    for name, fields in documented.items():
        flat: Fields = {f: (req, None) for f, req in fields.items()}
        problems += check_fields(spec, components[name], flat, name, required=name in requests)
        if name not in requests and any(fields.values()):
            problems.append(f"{name}: 'required' marks only request fields")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- trace format
def _trace_table(title: str) -> dict[str, bool]:
    """Documented trace fields → always present."""
    text = section(api_text(), "## The trace format")
    if title:
        text = text[text.index(title) :]
    return {_CODE_SPAN.findall(c[0])[0]: c[2] == "always" for c in table_rows(text)}


def _exercise(ctl: rw.Controller, clock: list[float]) -> None:
    """Decisions with every optional trace field: request_id, a subset of arms, a reward
    override, an experiment with a unit id, a score, a default reward, a pending decision."""
    ok = rw.Outcome(valid=True, latency_ms=812.5, cost_usd=0.0003, score=0.9)
    d = ctl.decide({"task": "extraction"}, request_id="r1")
    ctl.feedback(d.decision_id, ok)
    ctl.decide({"task": "extraction"}, arms=[ARMS[1]], reward="low_latency")  # defaulted later
    clock[0] += 10.0
    ctl.create_experiment("e1", variants={"a": {}, "b": {"policy": "uniform"}})
    ctl.start_experiment("e1")
    d = ctl.decide({"task": "x"}, unit_id="u9")
    ctl.feedback(d.decision_id, rw.Outcome(valid=False, latency_ms=10, cost_usd=0, error="timeout"))
    ctl.decide({"task": "x"})  # pending


def test_trace_format_documents_exactly_the_fields_the_store_writes() -> None:
    clock = [1_764_100_000.0]
    ctl = rw.Controller(
        arms=ARMS, seed=0, reward_wait_s=5.0, default_reward=0.0, clock=lambda: clock[0]
    )
    _exercise(ctl, clock)

    async def fetch() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(create_app(ctl))
        async with httpx.AsyncClient(transport=transport, base_url="http://rw") as c:
            r = await c.get("/v1/trace")
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.text.splitlines()]

    lines = asyncio.run(fetch())
    ctl.close()
    assert len(lines) == 4
    top, outcome = _trace_table(""), _trace_table("`outcome`:")
    seen = {key for line in lines for key in line}
    assert seen == set(top), (sorted(seen - set(top)), sorted(set(top) - seen))
    for line in lines:
        assert {k for k, always in top.items() if always} <= set(line), line
    assert "outcome" not in lines[-1] and "reward" not in lines[-1]  # pending
    outcomes = [line["outcome"] for line in lines if "outcome" in line]
    assert {k for o in outcomes for k in o} == set(outcome)
    for o in outcomes:
        assert {k for k, always in outcome.items() if always} <= set(o), o
