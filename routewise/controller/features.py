"""Turn a request context (a flat mapping) into a feature vector for linear bandits.

Layout of the vector
--------------------
Index 0 is a constant bias ``1.0``. Every other column belongs to one context key (numeric
and boolean keys) or to one value of a key (categorical keys, one-hot). Columns are assigned
once, in first-seen order, and never move, so a policy only ever has to *grow* its state.
Within one context the keys are visited in sorted order, so which column a new key gets does
not depend on the order in which a client happened to write its keys. Declared features
(a :class:`FeatureSpec`) get their columns at construction, in sorted key order.

Feature types
-------------
A declared key has the declared type; an undeclared key is typed at first sight —
``bool`` → boolean, ``int``/``float`` → numeric, ``str`` → categorical — and keeps that type
for good: a later value of another type is an :class:`~routewise.errors.InvalidContext`.
``None`` means missing (all the key's columns 0; nothing is learned from it).

* boolean — one column, 0 or 1, never standardized.
* numeric — one column: the optional transform (``log1p``, ``sqrt``), then online
  standardization ``z = (x − mean) / std`` with Welford running statistics per key, clipped
  to ``[−5, 5]`` (or ``[−clip, clip]``); 0 while the variance is 0. On learning, the
  statistics are updated with the value *first*, so the first value of a key maps to 0.
  With ``standardize=False`` the transformed value is used as is (clipped only to a
  declared ``clip``).
* categorical — one column per value plus an ``__other__`` column. A declared vocabulary
  fixes the columns (unseen values go to ``__other__``); otherwise the vocabulary grows as
  values appear. ``__other__`` is reserved when the key is first seen (if there is room).

The total length (bias included) never exceeds ``max_dim``. When it is reached, a new
categorical value goes to its key's ``__other__`` column (dropped if the key has none), and
a new numeric or boolean key is still typed and validated but gets no column.

Guarantees
----------
* A context is validated entirely before any state changes: a context that raises leaves
  the featurizer exactly as it was.
* :meth:`Featurizer.learn` leaves exactly the state :meth:`Featurizer.transform` (with
  ``learn=True``) would — replaying logged contexts after a restart rebuilds the state.
* The state is plain JSON (:meth:`Featurizer.to_state`); a restored featurizer produces
  bit-identical vectors (floats survive JSON exactly).

A featurizer is not thread-safe; the controller serializes calls to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from routewise.errors import ConfigError, InvalidContext, StateError

__all__ = ["DEFAULT_CLIP", "DEFAULT_MAX_DIM", "OTHER", "FeatureDef", "FeatureSpec", "Featurizer"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_MAX_DIM = 128
"""Default cap on the vector length (bias included)."""
DEFAULT_CLIP = 5.0
"""Default clip of standardized numeric features."""
OTHER = "__other__"
"""The reserved categorical value that collects values without a column of their own."""

_STATE_VERSION = 1
_NESTED = "nested objects are not supported; flatten them (e.g. 'schema.depth')"
_TRANSFORMS: dict[str, int] = {"none": 0, "log1p": 1, "sqrt": 2}
_TRANSFORM_NAMES = {code: name for name, code in _TRANSFORMS.items()}
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


def _config_error(exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "features"
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
    return ConfigError(where, msg + more)


def _parse_spec(spec: FeatureSpec | Mapping[str, Any] | None) -> FeatureSpec:
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
        raise _config_error(exc) from None


# --------------------------------------------------------------------- records
# Per-key learned state. Columns are ints; -1 means "no column" (the cap was reached).
class _Num:
    __slots__ = ("clip", "col", "declared", "stats", "transform", "zclip")

    def __init__(
        self,
        col: int,
        transform: int,
        clip: float | None,
        declared: bool,
        stats: tuple[int, float, float],
    ) -> None:
        self.col = col
        self.transform = transform
        self.clip = clip
        self.zclip = DEFAULT_CLIP if clip is None else clip
        self.declared = declared
        # Welford running statistics (count, mean, sum of squared deviations), hand-written
        # as plain Python floats so they serialize to JSON exactly and update in ~100 ns.
        # Replaced as a whole tuple, which makes the commit of an update a single store.
        self.stats = stats


class _Bool:
    __slots__ = ("col", "declared")

    def __init__(self, col: int, declared: bool) -> None:
        self.col = col
        self.declared = declared


class _Cat:
    __slots__ = ("cols", "declared", "fixed", "other")

    def __init__(self, other: int, cols: dict[str, int], fixed: bool, declared: bool) -> None:
        self.other = other
        self.cols = cols
        self.fixed = fixed
        self.declared = declared


_Rec = _Num | _Bool | _Cat


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    return f"got {type(value).__name__} {_show(value)}"


def _origin(rec: _Rec) -> str:
    return "declared" if rec.declared else "since first seen"


def _kind_of(key: str, value: Any) -> FeatureType:
    """The feature type a value of an undeclared key gets; raises for unusable values."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, Real):
        return "numeric"
    if isinstance(value, str):
        return "categorical"
    if isinstance(value, Mapping | list | tuple | set | frozenset | np.ndarray):
        raise InvalidContext(key, _NESTED)
    raise InvalidContext(
        key, f"unsupported value type {type(value).__name__} (use a number, string or boolean)"
    )


def _number(key: str, value: Any, rec: _Num | None, transform: int) -> float:
    """Validate ``value`` as a numeric feature value and return it transformed."""
    tv = type(value)
    if (
        tv is not float
        and tv is not int
        and (isinstance(value, bool | np.bool_) or not isinstance(value, Real))
    ):
        if isinstance(value, Mapping | list | tuple | set | frozenset | np.ndarray):
            raise InvalidContext(key, _NESTED)
        origin = f", {_origin(rec)}" if rec is not None else ""
        raise InvalidContext(key, f"expected a number (numeric feature{origin}), {_got(value)}")
    try:
        x = float(value)
    except OverflowError:
        raise InvalidContext(key, f"number too large, {_got(value)}") from None
    if x - x != 0.0:  # nan or ±inf
        raise InvalidContext(key, f"must be finite, got {x!r}")
    if transform == 1:
        if x <= -1.0:
            raise InvalidContext(key, f"the log1p transform needs a value > -1, got {x!r}")
        x = math.log1p(x)
    elif transform == 2:
        if x < 0.0:
            raise InvalidContext(key, f"the sqrt transform needs a value >= 0, got {x!r}")
        x = math.sqrt(x)
    return x


def _bool_value(key: str, value: Any, rec: _Bool) -> float:
    if value is True:
        return 1.0
    if value is False:
        return 0.0
    if isinstance(value, np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, Mapping | list | tuple | set | frozenset | np.ndarray):
        raise InvalidContext(key, _NESTED)
    raise InvalidContext(
        key, f"expected a boolean (boolean feature, {_origin(rec)}), {_got(value)}"
    )


def _category(key: str, value: Any, rec: _Cat | None) -> str:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset | np.ndarray):
        raise InvalidContext(key, _NESTED)
    origin = f", {_origin(rec)}" if rec is not None else ""
    raise InvalidContext(key, f"expected a string (categorical feature{origin}), {_got(value)}")


def _keys(context: Mapping[str, Any]) -> list[Any]:
    """The keys of a context, sorted (as given when they do not sort); raises for a
    context that is not a mapping."""
    if type(context) is not dict and not isinstance(context, Mapping):
        raise InvalidContext(
            "<context>", f"must be a mapping of feature name to value, {_got(context)}"
        )
    try:
        return sorted(context)
    except TypeError:
        return list(context)  # mixed key types: the caller names the first bad one


def _vector(dim: int, cols: list[int], vals: list[float]) -> FloatArray:
    """The ``dim``-long vector: bias 1, ``vals`` at ``cols``, zeros elsewhere."""
    out = np.zeros(dim)
    out[0] = 1.0
    for col, z in zip(cols, vals, strict=True):
        out[col] = z
    return out


# ------------------------------------------------------------------ new columns
class _Growth:
    """The columns, records and categorical values one context adds, pending until the
    whole context has been validated (:meth:`commit`). Created only for a context with a
    key or value not seen before."""

    __slots__ = ("dim", "max_dim", "names", "recs", "values")

    def __init__(self, dim: int, max_dim: int) -> None:
        self.dim = dim
        self.max_dim = max_dim
        self.names: list[str] = []
        self.recs: list[tuple[str, _Rec]] = []
        self.values: list[tuple[_Cat, str, int]] = []

    def column(self, name: str) -> int:
        """The next free column, for ``name``; -1 when the vector is at ``max_dim``."""
        col = self.dim
        if col >= self.max_dim:
            return -1
        self.dim = col + 1
        self.names.append(name)
        return col

    def value(self, key: str, s: str, rec: _Cat) -> int:
        """The column of a categorical value without one: a new column while the key's
        vocabulary may grow and there is room, else the key's ``__other__`` (or -1)."""
        col = self.column(f"{key}={s}") if not rec.fixed and s != OTHER else -1
        if col < 0:
            return rec.other
        self.values.append((rec, s, col))
        return col

    def first_seen(self, key: str, value: Any, learn: bool, standardize: bool) -> tuple[int, float]:
        """A key without a record: typed and validated; when learning, given its record (and
        columns while there is room). Returns its entry in the vector (column -1: none)."""
        kind = _kind_of(key, value)
        if kind == "numeric":
            x = _number(key, value, None, 0)
            if not learn:
                return -1, 0.0
            col = self.column(key)
            self.recs.append((key, _Num(col, 0, None, False, (1, x, 0.0))))
            # one value: variance 0, so standardized value 0
            return col, 0.0 if standardize else x
        if not learn:
            return -1, 0.0
        if kind == "boolean":
            col = self.column(key)
            self.recs.append((key, _Bool(col, False)))
            return (col, 1.0) if value else (-1, 0.0)
        cat = _Cat(self.column(f"{key}={OTHER}"), {}, False, False)
        self.recs.append((key, cat))
        return self.value(key, str(value), cat), 1.0

    def commit(self, recs: dict[str, _Rec], names: list[str]) -> None:
        """Apply the pending changes (to a featurizer's records and column names)."""
        for key, new in self.recs:
            recs[key] = new
        for cat, s, col in self.values:
            cat.cols[s] = col
        names.extend(self.names)


# ----------------------------------------------------------------- featurizer
class Featurizer:
    """Context mapping → ``float64`` feature vector (bias first), learned online.

    Parameters
    ----------
    spec
        Declared features: a :class:`FeatureSpec` or a mapping validated as one
        (``{"features": {name: {"type", "transform", "vocabulary", "clip"}}, "max_dim": n}``).
        Undeclared keys are typed automatically at first sight.
    max_dim
        Cap on the vector length, bias included. Default: the spec's ``max_dim``, else
        :data:`DEFAULT_MAX_DIM` (128). Giving both with different values is an error.
    standardize
        Standardize numeric features online (default). ``False`` passes the (transformed)
        values through.

    Raises
    ------
    routewise.errors.ConfigError
        For an invalid spec, naming the field path (e.g. ``features.language.vocabulary``).

    Examples
    --------
    >>> f = Featurizer({"features": {"language": {"type": "categorical",
    ...                                           "vocabulary": ["en", "zh"]}}})
    >>> f.feature_names
    ['bias', 'language=__other__', 'language=en', 'language=zh']
    >>> f.transform({"language": "zh", "n_fields": 12, "strict": True}).tolist()
    [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    >>> f.feature_names[4:]
    ['n_fields', 'strict']
    >>> f.transform({"language": "fr", "n_fields": 20}).tolist()  # z of 20 after (12, 20)
    [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    >>> f.transform({"n_fields": "many"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.InvalidContext: context['n_fields']: expected a number (numeric feature, ...
    >>> g = Featurizer.from_state(f.to_state())
    >>> bool((g.transform({"n_fields": 16}) == f.transform({"n_fields": 16})).all())
    True
    """

    def __init__(
        self,
        spec: FeatureSpec | Mapping[str, Any] | None = None,
        *,
        max_dim: int | None = None,
        standardize: bool = True,
    ) -> None:
        parsed = _parse_spec(spec)
        if max_dim is not None:
            if isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 1:
                raise ConfigError("max_dim", f"must be an integer >= 1, got {max_dim!r}")
            if parsed.max_dim is not None and parsed.max_dim != max_dim:
                raise ConfigError(
                    "max_dim", f"given as {max_dim} and as {parsed.max_dim} in the feature spec"
                )
        if not isinstance(standardize, bool):
            raise ConfigError("standardize", f"must be a boolean, got {standardize!r}")
        self.spec: FeatureSpec = parsed
        self.max_dim: int = max_dim if max_dim is not None else parsed.max_dim or DEFAULT_MAX_DIM
        self.standardize = standardize
        self._recs: dict[str, _Rec] = {}
        self._names: list[str] = ["bias"]
        self._declare()

    def _declare(self) -> None:
        names = self._names
        needed = 1 + sum(
            1 if d.type != "categorical" else 1 + len(d.vocabulary or ())
            for d in self.spec.features.values()
        )
        if needed > self.max_dim:
            raise ConfigError(
                "max_dim",
                f"{self.max_dim} is too small for the declared features, which need "
                f"{needed} columns (bias included)",
            )
        for key in sorted(self.spec.features):
            d = self.spec.features[key]
            col = len(names)
            if d.type == "numeric":
                self._recs[key] = _Num(col, _TRANSFORMS[d.transform], d.clip, True, (0, 0.0, 0.0))
                names.append(key)
            elif d.type == "boolean":
                self._recs[key] = _Bool(col, True)
                names.append(key)
            else:
                names.append(f"{key}={OTHER}")
                cols: dict[str, int] = {}
                for value in d.vocabulary or ():
                    cols[value] = len(names)
                    names.append(f"{key}={value}")
                self._recs[key] = _Cat(col, cols, d.vocabulary is not None, True)

    # ------------------------------------------------------------------ queries
    @property
    def dim(self) -> int:
        """Current vector length (bias included); grows as keys and values appear."""
        return len(self._names)

    @property
    def feature_names(self) -> list[str]:
        """Column names: ``bias``, ``key`` (numeric, boolean), ``key=value`` (categorical)."""
        return list(self._names)

    def __repr__(self) -> str:
        return (
            f"Featurizer(dim={self.dim}, max_dim={self.max_dim}, keys={len(self._recs)}, "
            f"standardize={self.standardize})"
        )

    # ------------------------------------------------------------------ public API
    def transform(self, context: Mapping[str, Any], *, learn: bool = True) -> FloatArray:
        """The feature vector of ``context`` (length :attr:`dim` after the call).

        With ``learn=True`` the running statistics are updated with this context first and
        new keys / categorical values get columns. With ``learn=False`` the call is pure:
        current statistics, no new columns (unknown keys contribute nothing, unknown values
        go to ``__other__``).

        Raises
        ------
        routewise.errors.InvalidContext
            Naming the key (``<context>`` when ``context`` is not a mapping); the state is
            then unchanged.
        """
        out = self._run(context, learn, True)
        assert out is not None
        return out

    def learn(self, context: Mapping[str, Any]) -> None:
        """Update the state exactly as ``transform(context)`` would, without building the
        vector (used to replay logged contexts)."""
        self._run(context, True, False)

    # ------------------------------------------------------------------ algorithm
    def _run(self, context: Mapping[str, Any], learn: bool, build: bool) -> FloatArray | None:
        keys = _keys(context)
        recs = self._recs
        standardize = self.standardize
        out_cols: list[int] = []  # the vector's non-zero entries
        out_vals: list[float] = []
        # Pending mutations, applied only once the whole context has been validated.
        new_stats: list[tuple[_Num, tuple[int, float, float]]] = []
        grow: _Growth | None = None  # new columns, records, categorical values
        # (known numeric keys and known values are handled inline, as the common case:
        # a call per key would cost more than the work itself)
        for key in keys:
            if type(key) is not str or not key:
                raise InvalidContext(
                    str(key), f"keys must be non-empty strings, got {type(key).__name__} {key!r}"
                )
            value = context[key]
            if value is None:
                continue
            rec = recs.get(key)
            if type(rec) is _Num:
                tv = type(value)
                transform = rec.transform
                if tv is float and transform == 0:
                    x = value
                    if x - x != 0.0:
                        raise InvalidContext(key, f"must be finite, got {x!r}")
                elif tv is int and transform == 0 and -(2**53) <= value <= 2**53:
                    x = float(value)
                elif transform == 1 and (
                    (tv is float and value > -1.0 and value - value == 0.0)
                    or (tv is int and 0 <= value <= 2**53)
                ):
                    x = math.log1p(float(value))  # _number's log1p path, for a value in range
                else:
                    x = _number(key, value, rec, transform)
                n, mean, m2 = rec.stats
                if learn:  # Welford, with the value first
                    n += 1
                    delta = x - mean
                    mean += delta / n
                    m2 += delta * (x - mean)
                    if m2 - m2 != 0.0 or mean - mean != 0.0:
                        raise InvalidContext(key, f"value too large to standardize, got {x!r}")
                    new_stats.append((rec, (n, mean, m2)))
                col = rec.col
                if standardize:
                    z = (x - mean) / math.sqrt(m2 / n) if m2 > 0.0 else 0.0
                    c = rec.zclip
                else:
                    z, c = x, rec.clip if rec.clip is not None else math.inf
                z = c if z > c else -c if z < -c else z
            elif type(rec) is _Cat:
                s = value if type(value) is str else _category(key, value, rec)
                col, z = rec.cols.get(s, -1), 1.0
                if col < 0 and learn:
                    grow = grow or _Growth(len(self._names), self.max_dim)
                    col = grow.value(key, s, rec)
                elif col < 0:
                    col = rec.other
            elif type(rec) is _Bool:
                col, z = rec.col, _bool_value(key, value, rec)
            else:
                grow = grow or _Growth(len(self._names), self.max_dim)
                col, z = grow.first_seen(key, value, learn, standardize)
            if col >= 0:
                out_cols.append(col)
                out_vals.append(z)
        if learn:  # nothing above raised, so the whole context is valid
            for num, stats in new_stats:
                num.stats = stats
            if grow is not None:
                grow.commit(recs, self._names)
        return _vector(len(self._names), out_cols, out_vals) if build else None

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """The whole featurizer as plain JSON-able data (see :meth:`from_state`)."""
        features: list[dict[str, Any]] = []
        for key, rec in self._recs.items():
            if type(rec) is _Num:
                n, mean, m2 = rec.stats
                features.append(
                    {
                        "kind": "numeric",
                        "key": key,
                        "col": rec.col if rec.col >= 0 else None,
                        "transform": _TRANSFORM_NAMES[rec.transform],
                        "clip": rec.clip,
                        "declared": rec.declared,
                        "n": n,
                        "mean": mean,
                        "m2": m2,
                    }
                )
            elif type(rec) is _Bool:
                features.append(
                    {
                        "kind": "boolean",
                        "key": key,
                        "col": rec.col if rec.col >= 0 else None,
                        "declared": rec.declared,
                    }
                )
            elif type(rec) is _Cat:
                features.append(
                    {
                        "kind": "categorical",
                        "key": key,
                        "other": rec.other if rec.other >= 0 else None,
                        "values": dict(rec.cols),
                        "fixed": rec.fixed,
                        "declared": rec.declared,
                    }
                )
        return {
            "version": _STATE_VERSION,
            "max_dim": self.max_dim,
            "standardize": self.standardize,
            "spec": self.spec.model_dump(mode="json"),
            "dim": self.dim,
            "features": features,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Featurizer:
        """Rebuild a featurizer from :meth:`to_state` output (also after a JSON round trip).

        Raises
        ------
        routewise.errors.StateError
            When the state is malformed or inconsistent.
        """
        try:
            parsed = _State.model_validate(state)
        except ValidationError as exc:
            err = _config_error(exc)
            raise StateError(f"featurizer state: {err.field}: {err.reason}") from None
        try:
            obj = cls(parsed.spec, max_dim=parsed.max_dim, standardize=parsed.standardize)
        except ConfigError as exc:
            raise StateError(f"featurizer state: spec: {exc}") from None
        names: list[str | None] = [None] * parsed.dim
        if parsed.dim >= 1:
            names[0] = "bias"

        def place(col: int | None, name: str) -> int:
            if col is None:
                return -1
            if not 1 <= col < parsed.dim or names[col] is not None:
                raise StateError(f"featurizer state: column {col} of {name!r} is invalid or reused")
            names[col] = name
            return col

        recs: dict[str, _Rec] = {}
        for f in parsed.features:
            if f.key in recs:
                raise StateError(f"featurizer state: key {f.key!r} appears twice")
            if isinstance(f, _NumState):
                stats = (f.n, float(f.mean), float(f.m2))
                col = place(f.col, f.key)
                recs[f.key] = _Num(col, _TRANSFORMS[f.transform], f.clip, f.declared, stats)
            elif isinstance(f, _BoolState):
                recs[f.key] = _Bool(place(f.col, f.key), f.declared)
            else:
                other = place(f.other, f"{f.key}={OTHER}")
                cols = {v: place(c, f"{f.key}={v}") for v, c in f.values.items()}
                recs[f.key] = _Cat(other, cols, f.fixed, f.declared)
        if parsed.dim > obj.max_dim or any(n is None for n in names):
            raise StateError(f"featurizer state: columns do not cover 0..{parsed.dim - 1} exactly")
        for key in obj._recs:  # declared features must be in the state with their type
            if key not in recs or type(recs[key]) is not type(obj._recs[key]):
                raise StateError(f"featurizer state: declared feature {key!r} is missing")
        obj._recs = recs
        obj._names = [n for n in names if n is not None]
        return obj


# ------------------------------------------------------------------ state schema
class _NumState(BaseModel):
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


class _BoolState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["boolean"]
    key: str
    col: int | None
    declared: bool


class _CatState(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["categorical"]
    key: str
    other: int | None
    values: dict[str, int]
    fixed: bool
    declared: bool


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal[1]
    max_dim: int = Field(ge=1)
    standardize: bool
    spec: FeatureSpec
    dim: int = Field(ge=1)
    features: list[Annotated[_NumState | _BoolState | _CatState, Field(discriminator="kind")]]
