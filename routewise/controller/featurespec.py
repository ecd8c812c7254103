"""The featurizer's declarations and its JSON state schema.

:class:`FeatureSpec` / :class:`FeatureDef` declare context keys (types, transforms, fixed
vocabularies, clips) and optionally the dimension cap; the private ``_State`` models validate
a :meth:`~routewise.controller.features.Featurizer.to_state` document before it is restored.
Import them from :mod:`routewise.controller.features`, which re-exports them.

Examples
--------
>>> FeatureSpec.model_validate({"features": {"n": "numeric"}, "max_dim": 8}).max_dim
8
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from routewise.controller.bounds import BoundHits
from routewise.errors import ConfigError

__all__ = [
    "OTHER",
    "BoolState",
    "CatState",
    "FeatureDef",
    "FeatureSpec",
    "FeatureType",
    "FeaturizerState",
    "NumState",
    "config_error",
    "parse_spec",
    "trim_state",
]

OTHER = "__other__"
"""The reserved categorical value that collects values without a column of their own."""
FeatureType = Literal["numeric", "categorical", "boolean"]


# --------------------------------------------------------------------------- spec
class FeatureDef(BaseModel):
    """The declaration of one context key.

    A bare type name is accepted as shorthand: ``"boolean"`` ≡ ``{"type": "boolean"}``.

    Examples
    --------
    >>> FeatureDef.model_validate({"type": "numeric", "transform": "log1p"}).transform
    'log1p'
    >>> FeatureDef.model_validate("categorical").vocabulary is None
    True
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: FeatureType
    transform: Literal["none", "log1p", "sqrt"] = "none"
    """Numeric only: applied before standardization."""
    vocabulary: list[str] | None = None
    """Categorical only: the fixed set of values with a column of their own."""
    clip: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Numeric only: clip the standardized value to ``[-clip, clip]`` (default 5)."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @field_validator("transform")
    @classmethod
    def _transform_numeric_only(cls, value: str, info: ValidationInfo) -> str:
        if value != "none" and info.data.get("type") != "numeric":
            raise ValueError("only numeric features take a transform")
        return value

    @field_validator("vocabulary")
    @classmethod
    def _vocabulary_categorical_only(
        cls, value: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if value is None:
            return value
        if info.data.get("type") != "categorical":
            raise ValueError("only categorical features take a vocabulary")
        if len(set(value)) != len(value):
            dup = sorted({v for v in value if value.count(v) > 1})
            raise ValueError(f"duplicate value(s) {dup}")
        if OTHER in value:
            raise ValueError(f"{OTHER!r} is reserved for values outside the vocabulary")
        return value

    @field_validator("clip")
    @classmethod
    def _clip_numeric_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("type") != "numeric":
            raise ValueError("only numeric features take a clip")
        return value


class FeatureSpec(BaseModel):
    """Declared features (``features``) and optionally the dimension cap (``max_dim``).

    Examples
    --------
    >>> spec = FeatureSpec.model_validate(
    ...     {"features": {"language": {"type": "categorical", "vocabulary": ["en", "zh"]},
    ...                   "input_tokens": {"type": "numeric", "transform": "log1p"}}})
    >>> sorted(spec.features)
    ['input_tokens', 'language']
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    features: dict[str, FeatureDef] = Field(default_factory=dict)
    max_dim: int | None = Field(default=None, ge=1)

    @field_validator("features")
    @classmethod
    def _non_empty_keys(cls, value: dict[str, FeatureDef]) -> dict[str, FeatureDef]:
        if "" in value:
            raise ValueError("feature names must be non-empty")
        return value


def config_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "features"
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return ConfigError(where, msg + more)


def parse_spec(spec: FeatureSpec | Mapping[str, Any] | None) -> FeatureSpec:
    if spec is None:
        return FeatureSpec()
    if isinstance(spec, FeatureSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(
            "features", f"must be a FeatureSpec or a mapping, got {type(spec).__name__}"
        )
    try:
        return FeatureSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise config_error(exc) from None


# ------------------------------------------------------------------ state schema
# What Featurizer.to_state writes (validated by Featurizer.from_state).
class NumState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["numeric"]
    key: str
    col: int | None
    transform: Literal["none", "log1p", "sqrt"]
    clip: float | None = Field(gt=0, allow_inf_nan=False)
    declared: bool
    n: int = Field(ge=0)
    mean: float = Field(allow_inf_nan=False)
    m2: float = Field(ge=0, allow_inf_nan=False)


class BoolState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["boolean"]
    key: str
    col: int | None
    declared: bool


class CatState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["categorical"]
    key: str
    other: int | None
    values: dict[str, int]
    fixed: bool
    declared: bool


class FeaturizerState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1]
    max_dim: int = Field(ge=1)
    standardize: bool
    spec: FeatureSpec
    dim: int = Field(ge=1)
    features: list[Annotated[NumState | BoolState | CatState, Field(discriminator="kind")]]


def trim_state(state: Mapping[str, Any], limit: int, hits: BoundHits) -> Mapping[str, Any]:
    """``state`` with at most ``limit`` key records where it can (see
    :meth:`~routewise.controller.features.Featurizer.from_state`), trimmed before it is
    validated, so that a bloated old state is not expanded into models first."""
    feats = state.get("features") if isinstance(state, Mapping) else None
    if not isinstance(feats, list) or len(feats) <= limit:
        return state

    def anchored(f: Any) -> bool:  # declared, or holds a column: never dropped
        if not isinstance(f, Mapping):
            return True  # malformed: left for the validation to name
        cols = (f.get("col"), f.get("other"))
        return (
            f.get("declared") is True or any(c is not None for c in cols) or bool(f.get("values"))
        )

    room = limit - sum(1 for f in feats if anchored(f))
    kept: list[Any] = []
    for f in feats:
        if anchored(f):
            kept.append(f)
        elif room > 0:
            kept.append(f)
            room -= 1
    hits.hit("max_feature_keys", limit, len(feats) - len(kept))
    return {**state, "features": kept}
