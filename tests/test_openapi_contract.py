"""The OpenAPI schema names a response model for every endpoint, and those models are the
library's wire types (defined once in ``routewise.types``), not copies kept by the server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import routewise as rw
from routewise import types as wire
from routewise.server import create_app


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], seed=0)
    return create_app(ctl, token="t").openapi()


def _model(schema: dict[str, Any]) -> str | None:
    """The component a response schema names (directly or as the items of an array)."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        return str(schema["items"]["$ref"]).rsplit("/", 1)[-1]
    return None


def test_every_endpoint_names_its_response_model(spec: dict[str, Any]) -> None:
    plain_text = {"/v1/trace", "/metrics"}  # JSON Lines and Prometheus text
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok, (method, path)
            for code in ok:
                content = op["responses"][code]["content"]
                if path in plain_text:
                    assert all(c["schema"].get("type") == "string" for c in content.values())
                    continue
                model = _model(content["application/json"]["schema"])
                assert model is not None, (method, path, code)
                assert model in spec["components"]["schemas"], model


@pytest.mark.parametrize(
    "cls",
    [
        wire.Decision,
        wire.FeedbackResult,
        wire.PolicyRanking,
        wire.RankedArm,
        wire.Status,
        wire.GuardianEvent,
        wire.GuardianHealth,
        wire.OperatorResult,
        wire.ExperimentReport,
        wire.VariantReport,
        wire.Comparison,
    ],
)
def test_response_components_are_the_wire_types(spec: dict[str, Any], cls: type) -> None:
    component = spec["components"]["schemas"][cls.__name__]
    names = []
    for f in dataclasses.fields(cls):
        alias = {"from_state": "from", "to_state": "to"}.get(f.name, f.name)
        names.append(alias)
    assert list(component["properties"]) == names


def test_error_answers_name_the_error_body(spec: dict[str, Any]) -> None:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for code, resp in op["responses"].items():
                if code.startswith(("4", "5")) and path not in ("/healthz", "/readyz"):
                    schema = resp["content"]["application/json"]["schema"]
                    assert _model(schema) == "ErrorBody", (method, path, code)
