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

Bounds
------
What the featurizer keeps never grows with the input past these (each hit is counted in
:attr:`Featurizer.hits`, and the first hit of each logged — :mod:`~routewise.controller.bounds`):

* ``max_context_keys`` (default 256) — a context with more keys is refused
  (:class:`~routewise.errors.InvalidContext` on ``<context>``), before any key is looked at.
* ``max_value_chars`` (default 1,024) — a new key, or a string value, longer than this is
  refused (``InvalidContext`` naming the key). With ``max_context_keys``, one stored context is
  at most 256 × 2 × 1,024 characters.
* ``max_feature_keys`` (default 4,096) — at most this many distinct keys are remembered
  (declared ones included). Past it a new key is still validated (type, length, finiteness)
  but no record is kept: it gets no column, no statistics and no type of its own, and it is
  counted each time it is ignored. Remembered keys are never forgotten.
* ``max_dim`` — the columns, as above; a categorical value without a column keeps no record
  (it goes to ``__other__``), so the per-value records are bounded by ``max_dim`` too. Each
  column refused is counted.

The bounds are settings, not state (:meth:`Featurizer.to_state` does not hold them); the
same contexts in the same order under the same bounds give the same state. A state holding
more keys than ``max_feature_keys`` (written by an older version) is trimmed on restore
(:meth:`Featurizer.from_state`).

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
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from routewise.controller.bounds import (
    DEFAULT_MAX_CONTEXT_KEYS,
    DEFAULT_MAX_FEATURE_KEYS,
    DEFAULT_MAX_VALUE_CHARS,
    BoundHits,
)
from routewise.controller.featurespec import (
    OTHER,
    BoolState,
    FeatureDef,
    FeatureSpec,
    FeatureType,
    FeaturizerState,
    NumState,
    config_error,
    parse_spec,
    trim_state,
)
from routewise.errors import ConfigError, InvalidContext, StateError

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_MAX_CONTEXT_KEYS",
    "DEFAULT_MAX_DIM",
    "DEFAULT_MAX_FEATURE_KEYS",
    "DEFAULT_MAX_VALUE_CHARS",
    "OTHER",
    "FeatureDef",
    "FeatureSpec",
    "Featurizer",
]

FloatArray = npt.NDArray[np.float64]

DEFAULT_MAX_DIM = 128
"""Default cap on the vector length (bias included)."""
DEFAULT_CLIP = 5.0
"""Default clip of standardized numeric features."""

_STATE_VERSION = 1
_NESTED = "nested objects are not supported; flatten them (e.g. 'schema.depth')"
_TRANSFORMS: dict[str, int] = {"none": 0, "log1p": 1, "sqrt": 2}
_TRANSFORM_NAMES = {code: name for name, code in _TRANSFORMS.items()}


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


def _keys(context: Mapping[str, Any], limit: int, hits: BoundHits) -> list[Any]:
    """The keys of a context, sorted (as given when they do not sort); raises for a
    context that is not a mapping or has more than ``limit`` keys (a hit of
    ``max_context_keys``), before looking at any of them."""
    if type(context) is not dict and not isinstance(context, Mapping):
        raise InvalidContext(
            "<context>", f"must be a mapping of feature name to value, {_got(context)}"
        )
    if len(context) > limit:
        hits.hit("max_context_keys", limit)
        raise InvalidContext(
            "<context>",
            f"has {len(context)} keys; at most {limit} are allowed (max_context_keys)",
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

    __slots__ = ("dim", "full", "ignored", "max_dim", "names", "recs", "room", "values")

    def __init__(self, dim: int, max_dim: int, room: int) -> None:
        self.dim = dim
        self.max_dim = max_dim
        self.room = room  # how many more keys may be remembered (max_feature_keys)
        self.full = 0  # columns refused: the vector is at max_dim
        self.ignored = 0  # new keys not remembered: max_feature_keys reached
        self.names: list[str] = []
        self.recs: list[tuple[str, _Rec]] = []
        self.values: list[tuple[_Cat, str, int]] = []

    def column(self, name: str) -> int:
        """The next free column, for ``name``; -1 when the vector is at ``max_dim``."""
        col = self.dim
        if col >= self.max_dim:
            self.full += 1
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
        x = _number(key, value, None, 0) if kind == "numeric" else 0.0
        if not learn:
            return -1, 0.0
        if self.room <= 0:  # max_feature_keys: validated, but no record is kept
            self.ignored += 1
            return -1, 0.0
        self.room -= 1
        if kind == "numeric":
            col = self.column(key)
            self.recs.append((key, _Num(col, 0, None, False, (1, x, 0.0))))
            # one value: variance 0, so standardized value 0
            return col, 0.0 if standardize else x
        if kind == "boolean":
            col = self.column(key)
            self.recs.append((key, _Bool(col, False)))
            return (col, 1.0) if value else (-1, 0.0)
        cat = _Cat(self.column(f"{key}={OTHER}"), {}, False, False)
        self.recs.append((key, cat))
        return self.value(key, str(value), cat), 1.0

    def commit(self, f: Featurizer) -> None:
        """Apply the pending changes to ``f``'s records and column names, and count the
        bounds they hit."""
        recs = f._recs
        for key, new in self.recs:
            recs[key] = new
        for cat, s, col in self.values:
            cat.cols[s] = col
        f._names.extend(self.names)
        if self.ignored:
            f.hits.hit("max_feature_keys", f.max_feature_keys, self.ignored)
        if self.full:
            f.hits.hit("max_dim", f.max_dim, self.full)


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
    max_feature_keys
        Cap on the distinct keys remembered (declared ones included; default 4,096): past it
        a new key is validated but ignored — no record, no column — and counted.
    max_context_keys
        Cap on the keys of one context (default 256): a context with more is refused.
    max_value_chars
        Cap on the length of a new key and of a string value (default 1,024): longer is
        refused.
    hits
        Where the bound hits are counted (default: a :class:`BoundHits` of its own).

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
    >>> from structlog.testing import capture_logs
    >>> small = Featurizer(max_feature_keys=2)
    >>> with capture_logs() as logs:  # the first hit of a bound is logged
    ...     _ = small.transform({"a": 1, "b": "x", "c": True})  # "c" is ignored
    >>> small.keys, small.hits.as_dict()["max_feature_keys"], logs[0]["bound"]
    (2, 1, 'max_feature_keys')
    """

    def __init__(
        self,
        spec: FeatureSpec | Mapping[str, Any] | None = None,
        *,
        max_dim: int | None = None,
        standardize: bool = True,
        max_feature_keys: int = DEFAULT_MAX_FEATURE_KEYS,
        max_context_keys: int = DEFAULT_MAX_CONTEXT_KEYS,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        hits: BoundHits | None = None,
    ) -> None:
        parsed = parse_spec(spec)
        for name, limit in (
            ("max_feature_keys", max_feature_keys),
            ("max_context_keys", max_context_keys),
            ("max_value_chars", max_value_chars),
        ):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigError(name, f"must be an integer >= 1, got {limit!r}")
        if len(parsed.features) > max_feature_keys:
            raise ConfigError(
                "max_feature_keys",
                f"{max_feature_keys} is less than the {len(parsed.features)} declared features",
            )
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
        self.max_feature_keys = max_feature_keys
        self.max_context_keys = max_context_keys
        self.max_value_chars = max_value_chars
        self.hits = hits if hits is not None else BoundHits()
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
    def keys(self) -> int:
        """How many distinct keys are remembered (at most ``max_feature_keys``)."""
        return len(self._recs)

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
        keys = _keys(context, self.max_context_keys, self.hits)
        maxc = self.max_value_chars
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
                if len(s) > maxc:
                    raise self._too_long(key, "value", len(s))
                col, z = rec.cols.get(s, -1), 1.0
                if col < 0 and learn:
                    grow = grow or self._growth()
                    col = grow.value(key, s, rec)
                elif col < 0:
                    col = rec.other
            elif type(rec) is _Bool:
                col, z = rec.col, _bool_value(key, value, rec)
            else:
                self._check_new(key, value)
                grow = grow or self._growth()
                col, z = grow.first_seen(key, value, learn, standardize)
            if col >= 0:
                out_cols.append(col)
                out_vals.append(z)
        if learn:  # nothing above raised, so the whole context is valid
            for num, stats in new_stats:
                num.stats = stats
            if grow is not None:
                grow.commit(self)
        return _vector(len(self._names), out_cols, out_vals) if build else None

    def _growth(self) -> _Growth:
        return _Growth(len(self._names), self.max_dim, self.max_feature_keys - len(self._recs))

    def _check_new(self, key: str, value: Any) -> None:
        """Refuse a new key, or its string value, longer than ``max_value_chars``."""
        if len(key) > self.max_value_chars:
            raise self._too_long(key, "key", len(key))
        if type(value) is str and len(value) > self.max_value_chars:
            raise self._too_long(key, "value", len(value))

    def _too_long(self, key: str, what: str, n: int) -> InvalidContext:
        """The refusal of a key or string value over ``max_value_chars`` (counted)."""
        limit = self.max_value_chars
        self.hits.hit("max_value_chars", limit)
        name = key if len(key) <= 60 else key[:57] + "..."
        reason = f"the {what} has {n} characters; at most {limit} are allowed (max_value_chars)"
        return InvalidContext(name, reason)

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
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        max_feature_keys: int = DEFAULT_MAX_FEATURE_KEYS,
        max_context_keys: int = DEFAULT_MAX_CONTEXT_KEYS,
        max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
        hits: BoundHits | None = None,
    ) -> Featurizer:
        """Rebuild a featurizer from :meth:`to_state` output (also after a JSON round trip).

        The bounds are settings, not state: they are given here as to the constructor. A
        state with more than ``max_feature_keys`` keys (written before the bound existed, or
        under a larger one) keeps every key that has a column or is declared, then the
        others in first-seen order while there is room (the rest are counted as hits).

        Raises
        ------
        routewise.errors.StateError
            When the state is malformed or inconsistent.
        """
        hits = hits if hits is not None else BoundHits()
        try:
            parsed = FeaturizerState.model_validate(trim_state(state, max_feature_keys, hits))
        except ValidationError as exc:
            err = config_error(exc)
            raise StateError(f"featurizer state: {err.field}: {err.reason}") from None
        try:
            obj = cls(
                parsed.spec,
                max_dim=parsed.max_dim,
                standardize=parsed.standardize,
                max_feature_keys=max_feature_keys,
                max_context_keys=max_context_keys,
                max_value_chars=max_value_chars,
                hits=hits,
            )
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
            if isinstance(f, NumState):
                stats = (f.n, float(f.mean), float(f.m2))
                col = place(f.col, f.key)
                recs[f.key] = _Num(col, _TRANSFORMS[f.transform], f.clip, f.declared, stats)
            elif isinstance(f, BoolState):
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
