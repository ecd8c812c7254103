"""The sidecar's OpenAPI document, made specific to its controller.

FastAPI generates the document from the request models and the wire types; this adds what
only the running controller knows — its arm ids, the registered policies and the reward
presets as enums — says that an experiment's variant names must match their pattern, and
describes what the models leave open: the reward spec (the ``RewardSpec`` component: a preset
with overrides, or every weight and both budgets), a policy object (``name`` and the policy's
own parameters) and the ``context`` query parameter (a JSON object). Validation stays in the
library, which names the field; the schema says exactly what it accepts, except what a schema
cannot say: a policy's own parameters (checked by the policy) and that an experiment's
``split`` names its variants and sums to 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI

from routewise.bandits.base import REGISTRY as POLICY_REGISTRY
from routewise.reward import PRESETS
from routewise.server.models import CONTEXT_SCHEMA, MAX_REWARD_NUMBER, NAME_PATTERN

__all__ = ["customize_openapi"]

_OPERATOR_ACTIONS = ("pin", "quarantine", "release")
_HOT_PATHS = ("/v1/decide", "/v1/feedback")  # routed without the gate dependency (app.py)


def _enum_options(prop: dict[str, Any], kind: str, key: str, value: Any) -> None:
    """Set ``key`` on each ``anyOf`` option of ``prop`` whose type is ``kind``."""
    for option in prop.get("anyOf", []):
        if option.get("type") == kind:
            option[key] = value


def _arm_options(prop: dict[str, Any], arm_enum: dict[str, Any]) -> None:
    """An arm subset: this controller's arm ids, each at most once."""
    _enum_options(prop, "array", "items", arm_enum)
    _enum_options(prop, "array", "uniqueItems", True)


def _strict_keys(props: Iterable[dict[str, Any]]) -> None:
    """Constrained mapping keys: pydantic emits ``patternProperties`` (other keys allowed);
    say that every key must match, as the validator does."""
    for prop in props:
        patterns = prop.pop("patternProperties", None)
        if patterns:
            prop["additionalProperties"] = next(iter(patterns.values()))
            prop.setdefault("propertyNames", {})["pattern"] = NAME_PATTERN


_WEIGHTS = ("correctness", "latency", "cost")


def _given(weight: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reward spec that gives ``weight`` (flat ``w_<weight>`` or in ``weights``), matching
    ``value`` when one is given."""
    flat: dict[str, Any] = {"required": [f"w_{weight}"]}
    nested: dict[str, Any] = {"required": [weight]}
    if value is not None:
        flat["properties"] = {f"w_{weight}": value}
        nested["properties"] = {weight: value}
    return {"anyOf": [flat, {"required": ["weights"], "properties": {"weights": nested}}]}


def reward_spec_schema() -> dict[str, Any]:
    """The ``RewardSpec`` component: what :func:`routewise.reward.get_reward` accepts as a
    mapping (every number at most :data:`~routewise.server.models.MAX_REWARD_NUMBER`)."""
    weight = {"type": "number", "minimum": 0, "maximum": MAX_REWARD_NUMBER}
    budget = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_REWARD_NUMBER}
    return {
        "title": "RewardSpec",
        "description": "A reward spec: a preset whose fields the other keys override, or "
        "every weight (flat as w_<name> or nested in weights, not both) and both budgets. "
        "The weights are relative (normalized to sum to 1) and not all 0.",
        "type": "object",
        "properties": {
            "preset": {"type": "string", "enum": sorted(PRESETS)},
            "type": {"type": "string", "enum": ["scalarizer"]},
            "weights": {
                "type": "object",
                "properties": {w: weight for w in _WEIGHTS},
                "additionalProperties": False,
            },
            **{f"w_{w}": weight for w in _WEIGHTS},
            "latency_budget_ms": budget,
            "cost_budget_usd": budget,
            "gate": {"type": "boolean"},
            "name": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
        "allOf": [
            *(
                {
                    "not": {
                        "required": [f"w_{w}", "weights"],
                        "properties": {"weights": {"required": [w]}},
                    }
                }
                for w in _WEIGHTS
            ),
            {
                "anyOf": [
                    {"required": ["preset"]},
                    {
                        "required": ["latency_budget_ms", "cost_budget_usd"],
                        "allOf": [_given(w) for w in _WEIGHTS],
                    },
                ]
            },
            {"not": {"allOf": [_given(w, {"const": 0}) for w in _WEIGHTS]}},
        ],
    }


def _reward_options(prop: dict[str, Any]) -> None:
    """A reward field: a preset name, a :func:`reward_spec_schema` or null."""
    options = prop.get("anyOf", [])
    for i, option in enumerate(options):
        if option.get("type") == "string":
            option["enum"] = sorted(PRESETS)
        elif option.get("type") == "object":
            options[i] = {"$ref": "#/components/schemas/RewardSpec"}


def _policy_options(prop: dict[str, Any]) -> None:
    """A policy field: a registered name, ``{"name": ..., **parameters}`` or null."""
    names = {"type": "string", "enum": sorted(POLICY_REGISTRY)}
    for option in prop.get("anyOf", []):
        if option.get("type") == "string":
            option["enum"] = names["enum"]
        elif option.get("type") == "object":
            option["properties"] = {"name": names}
            option["required"] = ["name"]
            option["description"] = "The policy's name and its parameters (checked by it)."


def _document(schema: dict[str, Any], arm_ids: list[str]) -> None:
    schemas = schema.get("components", {}).get("schemas", {})
    schemas["RewardSpec"] = reward_spec_schema()
    arm_enum = {"type": "string", "enum": list(arm_ids)}
    decide = schemas.get("DecideIn", {}).get("properties", {})
    _arm_options(decide.get("arms", {}), arm_enum)
    _reward_options(decide.get("reward", {}))
    experiment = schemas.get("ExperimentIn", {}).get("properties", {})
    _strict_keys((experiment.get("variants", {}), *experiment.get("split", {}).get("anyOf", [])))
    variant = schemas.get("VariantIn", {}).get("properties", {})
    _policy_options(variant.get("policy", {}))
    _reward_options(variant.get("reward", {}))
    _arm_options(variant.get("arms", {}), arm_enum)
    paths = schema.get("paths", {})
    for param in paths.get("/v1/policy", {}).get("get", {}).get("parameters", []):
        if param.get("name") == "arms":
            _arm_options(param.get("schema", {}), arm_enum)
        elif param.get("name") == "context":  # a JSON object, serialized in the query string
            param.pop("schema", None)
            param["content"] = {"application/json": {"schema": CONTEXT_SCHEMA}}
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
