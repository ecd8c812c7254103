"""The sidecar's OpenAPI document, made specific to its controller.

FastAPI generates the document from the request models and the wire types; this adds what
only the running controller knows — its arm ids, the registered policies and the reward
presets as enums — and says that an experiment's variant names must match their pattern.
Validation stays in the library, which names the field; the enums are documentation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI

from routewise.bandits.base import REGISTRY as POLICY_REGISTRY
from routewise.reward import PRESETS
from routewise.server.models import NAME_PATTERN

__all__ = ["customize_openapi"]

_OPERATOR_ACTIONS = ("pin", "quarantine", "release")
_HOT_PATHS = ("/v1/decide", "/v1/feedback")  # routed without the gate dependency (app.py)


def _enum_options(prop: dict[str, Any], kind: str, key: str, value: Any) -> None:
    """Set ``key`` on each ``anyOf`` option of ``prop`` whose type is ``kind``."""
    for option in prop.get("anyOf", []):
        if option.get("type") == kind:
            option[key] = value


def _strict_keys(props: Iterable[dict[str, Any]]) -> None:
    """Constrained mapping keys: pydantic emits ``patternProperties`` (other keys allowed);
    say that every key must match, as the validator does."""
    for prop in props:
        patterns = prop.pop("patternProperties", None)
        if patterns:
            prop["additionalProperties"] = next(iter(patterns.values()))
            prop.setdefault("propertyNames", {})["pattern"] = NAME_PATTERN


def _document(schema: dict[str, Any], arm_ids: list[str]) -> None:
    schemas = schema.get("components", {}).get("schemas", {})
    arm_enum = {"type": "string", "enum": list(arm_ids)}
    decide = schemas.get("DecideIn", {}).get("properties", {})
    _enum_options(decide.get("arms", {}), "array", "items", arm_enum)
    _enum_options(decide.get("reward", {}), "string", "enum", sorted(PRESETS))
    experiment = schemas.get("ExperimentIn", {}).get("properties", {})
    _strict_keys((experiment.get("variants", {}), *experiment.get("split", {}).get("anyOf", [])))
    variant = schemas.get("VariantIn", {}).get("properties", {})
    _enum_options(variant.get("policy", {}), "string", "enum", sorted(POLICY_REGISTRY))
    _enum_options(variant.get("reward", {}), "string", "enum", sorted(PRESETS))
    _enum_options(variant.get("arms", {}), "array", "items", arm_enum)
    paths = schema.get("paths", {})
    for param in paths.get("/v1/policy", {}).get("get", {}).get("parameters", []):
        if param.get("name") == "arms":
            _enum_options(param.get("schema", {}), "array", "items", arm_enum)
    security = paths.get("/v1/arms", {}).get("get", {}).get("security")
    if security is not None:  # a token is set: the hot path needs it too (checked at the edge)
        for path in _HOT_PATHS:
            paths.get(path, {}).get("post", {})["security"] = security
    for action in _OPERATOR_ACTIONS:
        op = paths.get(f"/v1/arms/{{arm_id}}/{action}", {}).get("post", {})
        for param in op.get("parameters", []):
            if param.get("name") == "arm_id":
                param["schema"] = {**param.get("schema", {}), **arm_enum}


def customize_openapi(app: FastAPI, arm_ids: list[str]) -> None:
    """Make ``app.openapi()`` document this controller's arm ids, the policies and the reward
    presets as enums (built once, on first use)."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            _document(schema, arm_ids)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
