"""Tests of routewise.controller.features.Featurizer."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routewise.controller.features import (
    DEFAULT_CLIP,
    DEFAULT_MAX_DIM,
    OTHER,
    FeatureSpec,
    Featurizer,
)
from routewise.errors import ConfigError, InvalidContext, StateError

SETTINGS = settings(max_examples=150, deadline=None)

Context = dict[str, Any]

# ------------------------------------------------------------------ strategies
key_names = st.text(alphabet="abcxyz._=", min_size=1, max_size=4)
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
categories = st.one_of(
    st.sampled_from(["en", "zh", "fr", "de", "x y", OTHER, ""]),
    st.text(max_size=3),
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "numeric": st.one_of(st.none(), numbers),
    "boolean": st.one_of(st.none(), st.booleans()),
    "categorical": st.one_of(st.none(), categories),
}
kinds = st.sampled_from(sorted(VALUES))


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, str]:
    return draw(st.dictionaries(key_names, kinds, min_size=1, max_size=6))


def contexts_for(schema: Mapping[str, str]) -> st.SearchStrategy[Context]:
    return st.fixed_dictionaries({}, optional={k: VALUES[kind] for k, kind in schema.items()})


@st.composite
def streams(draw: st.DrawFn, max_size: int = 25) -> tuple[dict[str, str], list[Context]]:
    schema = draw(schemas())
    return schema, draw(st.lists(contexts_for(schema), max_size=max_size))


featurizer_params = st.fixed_dictionaries(
    {"max_dim": st.integers(min_value=1, max_value=24), "standardize": st.booleans()}
)


def frozen(f: Featurizer) -> str:
    """The state, serialized (so tests compare exactly, including float bits)."""
    return json.dumps(f.to_state(), allow_nan=False)


def numeric_stats(f: Featurizer, key: str) -> tuple[int, float, float]:
    for feat in f.to_state()["features"]:
        if feat["key"] == key:
            assert feat["kind"] == "numeric"
            return feat["n"], feat["mean"], feat["m2"]
    raise AssertionError(f"no numeric feature {key!r}")


# ------------------------------------------------------------------ properties
@SETTINGS
@given(streams(), featurizer_params)
def test_vectors_are_finite_biased_and_sized(
    stream: tuple[dict[str, str], list[Context]], params: dict[str, Any]
) -> None:
    _, ctxs = stream
    f = Featurizer(**params)
    for ctx in ctxs:
        v = f.transform(ctx)
        assert v.dtype == np.float64 and v.shape == (f.dim,)
        assert v[0] == 1.0
        assert np.isfinite(v).all()
        assert 1 <= f.dim <= params["max_dim"]
        assert len(f.feature_names) == f.dim
        if params["standardize"]:
            assert np.abs(v).max() <= DEFAULT_CLIP
        w = f.transform(ctx, learn=False)
        assert w.shape == (f.dim,) and w[0] == 1.0 and np.isfinite(w).all()


@SETTINGS
@given(streams(), featurizer_params)
def test_learn_leaves_the_same_state_as_transform(
    stream: tuple[dict[str, str], list[Context]], params: dict[str, Any]
) -> None:
    _, ctxs = stream
    a, b = Featurizer(**params), Featurizer(**params)
    for ctx in ctxs:
        a.transform(ctx)
        b.learn(ctx)
        assert frozen(a) == frozen(b)
        assert a.feature_names == b.feature_names


@SETTINGS
@given(streams(), featurizer_params, st.data())
def test_json_state_round_trip_gives_identical_vectors(
    stream: tuple[dict[str, str], list[Context]], params: dict[str, Any], data: st.DataObject
) -> None:
    schema, ctxs = stream
    f = Featurizer(**params)
    split = data.draw(st.integers(min_value=0, max_value=len(ctxs)))
    for ctx in ctxs[:split]:
        f.transform(ctx)
    g = Featurizer.from_state(json.loads(json.dumps(f.to_state(), allow_nan=False)))
    assert frozen(g) == frozen(f)
    assert g.feature_names == f.feature_names and g.dim == f.dim
    rest = ctxs[split:] + data.draw(st.lists(contexts_for(schema), max_size=5))
    for ctx in rest:
        assert np.array_equal(f.transform(ctx, learn=False), g.transform(ctx, learn=False))
        assert np.array_equal(f.transform(ctx), g.transform(ctx))
    assert frozen(g) == frozen(f)


@SETTINGS
@given(streams(), featurizer_params, st.data())
def test_key_order_is_irrelevant(
    stream: tuple[dict[str, str], list[Context]], params: dict[str, Any], data: st.DataObject
) -> None:
    _, ctxs = stream
    a, b = Featurizer(**params), Featurizer(**params)
    for ctx in ctxs:
        order = data.draw(st.permutations(list(ctx)))
        shuffled = {k: ctx[k] for k in order}
        assert np.array_equal(a.transform(ctx), b.transform(shuffled))
    assert frozen(a) == frozen(b)
    assert a.feature_names == b.feature_names


class _Opaque:
    pass


UNIVERSALLY_BAD: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    [1, 2],
    {"depth": 3},
    (1,),
    {1},
    frozenset(),
    np.zeros(2),
    b"bytes",
    _Opaque(),
    10**400,
]
WRONG_TYPE: dict[str, list[Any]] = {
    "numeric": ["3", True, np.bool_(False)],
    "boolean": [1, 0.0, "true"],
    "categorical": [3, 2.5, False],
}


@SETTINGS
@given(streams(), featurizer_params, st.data())
def test_invalid_values_raise_naming_the_key_and_change_nothing(
    stream: tuple[dict[str, str], list[Context]], params: dict[str, Any], data: st.DataObject
) -> None:
    schema, ctxs = stream
    f = Featurizer(**params)
    for ctx in ctxs:
        f.transform(ctx)
    known = {feat["key"]: feat["kind"] for feat in f.to_state()["features"]}
    ctx = dict(data.draw(contexts_for(schema)))
    key = data.draw(st.sampled_from(sorted(set(schema) | {"fresh"})))
    candidates = list(UNIVERSALLY_BAD)
    if key in known:
        candidates += WRONG_TYPE[known[key]]
    ctx[key] = data.draw(st.sampled_from(candidates))
    before = frozen(f)
    for call in (f.transform, f.learn, lambda c: f.transform(c, learn=False)):
        with pytest.raises(InvalidContext) as info:
            call(ctx)
        assert info.value.key == key
        assert frozen(f) == before


def test_nested_values_are_explained() -> None:
    f = Featurizer()
    with pytest.raises(InvalidContext, match=r"flatten them \(e\.g\. 'schema\.depth'\)"):
        f.transform({"schema": {"depth": 3}})
    f.transform({"depth": 3})
    with pytest.raises(InvalidContext, match="nested objects"):
        f.transform({"depth": [3]})


def test_bad_context_and_bad_keys() -> None:
    f = Featurizer()
    for bad in ([("a", 1)], "a=1", None, 3):
        with pytest.raises(InvalidContext) as info:
            f.transform(bad)  # type: ignore[arg-type]
        assert info.value.key == "<context>"
    with pytest.raises(InvalidContext) as info:
        f.transform({"a": 1, 2: 3})  # type: ignore[dict-item]
    assert info.value.key == "2" and "strings" in info.value.reason
    with pytest.raises(InvalidContext) as info:
        f.transform({"": 1})
    assert info.value.key == ""
    assert f.dim == 1


def test_type_lock_messages_name_expected_and_got() -> None:
    f = Featurizer({"features": {"tier": "categorical"}})
    f.transform({"n": 3, "ok": True, "lang": "en"})
    cases = {
        "n": ("expected a number", "since first seen", "got str"),
        "ok": ("expected a boolean", "got int"),
        "lang": ("expected a string", "got float"),
        "tier": ("expected a string", "declared", "got int"),
    }
    values = {"n": "3", "ok": 1, "lang": 1.5, "tier": 2}
    for key, fragments in cases.items():
        with pytest.raises(InvalidContext) as info:
            f.transform({key: values[key]})
        assert info.value.key == key
        for fragment in fragments:
            assert fragment in info.value.reason


def test_first_invalid_key_in_sorted_order_is_reported() -> None:
    f = Featurizer()
    with pytest.raises(InvalidContext) as info:
        f.transform({"zeta": math.nan, "alpha": [1]})
    assert info.value.key == "alpha"


# ------------------------------------------------------------------ batch oracle
@SETTINGS
@given(
    st.lists(st.one_of(st.none(), numbers), min_size=1, max_size=40),
    st.sampled_from(["none", "log1p", "sqrt"]),
)
def test_welford_matches_numpy_at_every_step(raw: list[float | None], transform: str) -> None:
    f = Featurizer({"features": {"x": {"type": "numeric", "transform": transform}}})
    seen: list[float] = []
    for value in raw:
        if value is not None and transform == "log1p":
            value = abs(value)
        if value is not None and transform == "sqrt":
            value = abs(value)
        z = f.transform({"x": value})[1]
        n, mean, m2 = numeric_stats(f, "x")
        if value is None:
            assert z == 0.0
        else:
            x = float(value)
            seen.append(
                math.log1p(x)
                if transform == "log1p"
                else math.sqrt(x)
                if transform == "sqrt"
                else x
            )
        assert n == len(seen)
        if not seen:
            continue
        arr = np.array(seen)
        scale = float(np.abs(arr).max()) + 1.0
        assert mean == pytest.approx(float(arr.mean()), rel=1e-9, abs=1e-12 * scale)
        assert m2 / n == pytest.approx(float(arr.var()), rel=1e-7, abs=1e-12 * scale**2)
        if value is None:
            continue
        if len(set(seen)) == 1:
            assert m2 == 0.0 and z == 0.0  # first value (and constant streams) map to 0
        elif arr.var() > 1e-6 * scale**2:  # well conditioned: compare z with the oracle
            expected = (seen[-1] - arr.mean()) / arr.std()
            assert z == pytest.approx(float(np.clip(expected, -5, 5)), rel=1e-6, abs=1e-9)


def test_learn_false_uses_current_stats_without_updating() -> None:
    f = Featurizer()
    for value in (1.0, 2.0, 3.0, 4.0):
        f.transform({"x": value})
    before = frozen(f)
    mean, std = 2.5, float(np.std([1.0, 2.0, 3.0, 4.0]))
    assert f.transform({"x": 10.0}, learn=False)[1] == pytest.approx(min((10 - mean) / std, 5.0))
    assert f.transform({"x": 3.0}, learn=False)[1] == pytest.approx((3 - mean) / std)
    v = f.transform({"x": 2.0, "new": 1.0, "flag": True, "lang": "en"}, learn=False)
    assert v.shape == (2,)
    assert frozen(f) == before


def test_standardize_false_passes_values_through() -> None:
    f = Featurizer(
        {"features": {"t": {"type": "numeric", "transform": "sqrt", "clip": 3.0}}},
        standardize=False,
    )
    assert f.transform({"t": 4, "n": 1234})[1:].tolist() == [2.0, 1234.0]
    assert f.transform({"t": 100, "n": -7.5})[1:].tolist() == [3.0, -7.5]


def test_declared_clip_and_default_clip() -> None:
    f = Featurizer({"features": {"c": {"type": "numeric", "clip": 1.5}}})
    for _ in range(50):
        f.transform({"c": 0.0, "d": 0.0})
    v = f.transform({"c": 1e6, "d": 1e6})
    assert v[1] == 1.5 and v[2] == DEFAULT_CLIP
    v = f.transform({"c": -1e6, "d": -1e6})
    assert v[1] == -1.5 and v[2] == -DEFAULT_CLIP


def test_values_too_large_to_standardize_are_rejected_atomically() -> None:
    f = Featurizer()
    f.transform({"a": "x", "big": 1e300})
    before = frozen(f)
    with pytest.raises(InvalidContext) as info:
        f.transform({"a": "new", "big": -1e300})
    assert info.value.key == "big" and "too large" in info.value.reason
    assert frozen(f) == before


def test_numpy_scalars_are_accepted() -> None:
    f = Featurizer()
    v = f.transform(
        {"i": np.int64(3), "f": np.float32(2.5), "b": np.bool_(True), "s": np.str_("en")}
    )
    assert f.feature_names == ["bias", "b", "f", "i", "s=__other__", "s=en"]
    assert v.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert f.transform({"b": np.bool_(False), "i": 5})[1] == 0.0


# ------------------------------------------------------------------ layout and cap
def test_columns_in_first_seen_order_with_sorted_keys() -> None:
    f = Featurizer()
    f.transform({"task": "qa", "n_fields": 3, "language": "zh", "strict": False, "empty": None})
    assert f.feature_names == [
        "bias",
        "language=__other__",
        "language=zh",
        "n_fields",
        "strict",
        "task=__other__",
        "task=qa",
    ]
    v = f.transform({"language": "en", "task": "qa", "strict": True})
    assert f.feature_names[-1] == "language=en"
    assert v.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    v = f.transform({"language": OTHER})  # the literal reserved value goes to __other__
    assert v.tolist() == [1.0, 1.0] + [0.0] * 6 and f.dim == 8


def test_dimension_cap() -> None:
    f = Featurizer(max_dim=4)
    assert f.transform({"lang": "en"}).tolist() == [1.0, 0.0, 1.0]
    assert f.transform({"lang": "zh"}).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert f.feature_names == ["bias", "lang=__other__", "lang=en", "lang=zh"]
    # Full: new values fall into __other__, new keys get no column but are typed.
    assert f.transform({"lang": "fr", "n": 2.0, "flag": True, "task": "qa"}).tolist() == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert f.dim == 4
    for key, bad in (("n", "two"), ("flag", 1), ("task", 3)):
        with pytest.raises(InvalidContext) as info:
            f.transform({key: bad})
        assert info.value.key == key
    kinds = {feat["key"]: feat["kind"] for feat in f.to_state()["features"]}
    assert kinds == {
        "lang": "categorical",
        "n": "numeric",
        "flag": "boolean",
        "task": "categorical",
    }


def test_cap_with_room_for_other_only() -> None:
    f = Featurizer(max_dim=2)
    assert f.transform({"lang": "en"}).tolist() == [1.0, 1.0]  # en → the reserved __other__
    assert f.feature_names == ["bias", "lang=__other__"]
    assert f.transform({"lang": "zh", "other_key": "x"}).tolist() == [1.0, 1.0]
    g = Featurizer(max_dim=1)
    assert g.transform({"a": 1, "b": "x", "c": True}).tolist() == [1.0]


@SETTINGS
@given(st.lists(st.text(alphabet="abcdef", max_size=3), max_size=60), st.integers(2, 12))
def test_cap_is_never_exceeded_and_overflow_goes_to_other(values: list[str], cap: int) -> None:
    f = Featurizer(max_dim=cap)
    for s in values:
        v = f.transform({"k": s})
        assert f.dim <= cap and v.sum() == 2.0  # bias + exactly one category column
        name = f.feature_names[int(np.flatnonzero(v)[1])]
        assert name in (f"k={s}", f"k={OTHER}")
        if name == f"k={OTHER}" and s != OTHER:
            assert f.dim == cap


# ------------------------------------------------------------------ declared spec
SPEC = {
    "features": {
        "input_tokens": {"type": "numeric", "transform": "log1p"},
        "language": {"type": "categorical", "vocabulary": ["en", "zh"]},
        "strict": "boolean",
        "task": {"type": "categorical"},
    }
}


def test_declared_spec_with_log1p_and_vocabulary() -> None:
    f = Featurizer(SPEC)
    names = [
        "bias",
        "input_tokens",
        "language=__other__",
        "language=en",
        "language=zh",
        "strict",
        "task=__other__",
    ]
    assert f.feature_names == names and f.dim == 7
    tokens = [900, 120, 4000, 0, 77]
    for t in tokens:
        f.transform({"input_tokens": t, "language": "fr", "task": "qa"})
    n, mean, m2 = numeric_stats(f, "input_tokens")
    logs = np.log1p(tokens)
    assert n == 5 and mean == pytest.approx(logs.mean()) and m2 / n == pytest.approx(logs.var())
    # The vocabulary is fixed: unseen values go to __other__, no column is added for them.
    assert f.feature_names == [*names, "task=qa"]
    v = f.transform({"language": "de"}, learn=True)
    assert v[2] == 1.0 and v[3] == v[4] == 0.0
    assert f.transform({"language": "zh"})[4] == 1.0
    with pytest.raises(InvalidContext) as info:
        f.transform({"input_tokens": -1})
    assert info.value.key == "input_tokens" and "log1p" in info.value.reason
    with pytest.raises(InvalidContext, match="expected a number"):
        f.transform({"input_tokens": "900"})
    with pytest.raises(InvalidContext, match="expected a boolean"):
        f.transform({"strict": 1})
    with pytest.raises(InvalidContext, match="expected a string"):
        f.transform({"language": 1})


def test_declared_sqrt_rejects_negatives() -> None:
    f = Featurizer({"features": {"s": {"type": "numeric", "transform": "sqrt"}}})
    with pytest.raises(InvalidContext, match="sqrt"):
        f.transform({"s": -0.5})
    f.transform({"s": 0})


def test_spec_object_mapping_and_shorthand_are_equivalent() -> None:
    spec = FeatureSpec.model_validate(SPEC)
    a, b = Featurizer(spec), Featurizer(SPEC)
    assert a.feature_names == b.feature_names and a.spec == b.spec
    assert Featurizer(None).dim == 1 and Featurizer().max_dim == DEFAULT_MAX_DIM


def test_max_dim_from_spec_or_keyword() -> None:
    assert Featurizer({"max_dim": 16}).max_dim == 16
    assert Featurizer(max_dim=16).max_dim == 16
    assert Featurizer({"max_dim": 16}, max_dim=16).max_dim == 16
    with pytest.raises(ConfigError) as info:
        Featurizer({"max_dim": 16}, max_dim=32)
    assert info.value.field == "max_dim"
    with pytest.raises(ConfigError) as info:
        Featurizer(SPEC, max_dim=6)  # the declared features need 7 columns
    assert info.value.field == "max_dim"
    Featurizer(SPEC, max_dim=7)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"features": {"x": {"type": "numbr"}}}, "features.x.type"),
        ({"features": {"x": {}}}, "features.x.type"),
        ({"features": {"x": {"type": "boolean", "transform": "log1p"}}}, "features.x.transform"),
        ({"features": {"x": {"type": "numeric", "transform": "log"}}}, "features.x.transform"),
        ({"features": {"x": {"type": "numeric", "vocabulary": ["a"]}}}, "features.x.vocabulary"),
        (
            {"features": {"x": {"type": "categorical", "vocabulary": ["a", "a"]}}},
            "features.x.vocabulary",
        ),
        (
            {"features": {"x": {"type": "categorical", "vocabulary": [OTHER]}}},
            "features.x.vocabulary",
        ),
        (
            {"features": {"x": {"type": "categorical", "vocabulary": ["a", 1]}}},
            "features.x.vocabulary.1",
        ),
        ({"features": {"x": {"type": "categorical", "clip": 2.0}}}, "features.x.clip"),
        ({"features": {"x": {"type": "numeric", "clip": 0}}}, "features.x.clip"),
        ({"features": {"x": {"type": "numeric", "clip": math.inf}}}, "features.x.clip"),
        ({"features": {"x": {"type": "numeric", "vocab": ["a"]}}}, "features.x.vocab"),
        ({"features": {"x": 3}}, "features.x"),
        ({"features": {"": "numeric"}}, "features"),
        ({"features": ["x"]}, "features"),
        ({"feature": {}}, "feature"),
        ({"max_dim": 0}, "max_dim"),
        ({"max_dim": True}, "max_dim"),
        ("numeric", "features"),
    ],
)
def test_spec_errors_name_the_field_path(spec: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Featurizer(spec)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_dim": 0}, "max_dim"),
        ({"max_dim": 2.5}, "max_dim"),
        ({"standardize": 1}, "standardize"),
    ],
)
def test_keyword_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Featurizer(**kwargs)
    assert info.value.field == field


# ------------------------------------------------------------------ state
def test_state_of_declared_featurizer_round_trips() -> None:
    f = Featurizer(SPEC, max_dim=20, standardize=False)
    f.transform({"input_tokens": 10, "language": "zh", "task": "qa", "extra": 2.5})
    state = json.loads(json.dumps(f.to_state(), allow_nan=False))
    g = Featurizer.from_state(state)
    assert (g.max_dim, g.standardize, g.spec) == (20, False, f.spec)
    assert frozen(g) == frozen(f)


def _corrupt(state: dict[str, Any], how: str) -> dict[str, Any]:
    s: dict[str, Any] = json.loads(json.dumps(state))
    feats = s["features"]
    if how == "version":
        s["version"] = 99
    elif how == "reused column":
        feats[1]["col"] = feats[0]["col"]
    elif how == "gap":
        s["dim"] += 1
    elif how == "duplicate key":
        feats.append(dict(feats[0]))
    elif how == "bad kind":
        feats[0]["kind"] = "vector"
    elif how == "negative m2":
        feats[0]["m2"] = -1.0
    elif how == "missing declared":
        s["spec"] = {"features": {"zzz": "boolean"}}
    elif how == "not a mapping":
        return ["state"]  # type: ignore[return-value]
    return s


@pytest.mark.parametrize(
    "how",
    [
        "version",
        "reused column",
        "gap",
        "duplicate key",
        "bad kind",
        "negative m2",
        "missing declared",
        "not a mapping",
    ],
)
def test_corrupt_state_raises_state_error(how: str) -> None:
    f = Featurizer()
    f.transform({"a": 1.0, "b": 2.0})
    f.transform({"a": 3.0, "b": 5.0})
    with pytest.raises(StateError):
        Featurizer.from_state(_corrupt(f.to_state(), how))
