"""Tests of routewise.reward: the scalarizer's formula and laws, presets, get_reward."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routewise.errors import ConfigError
from routewise.reward import (
    DEFAULT_PRESET,
    PRESETS,
    RewardFunction,
    Scalarizer,
    get_reward,
)
from routewise.types import Outcome

SETTINGS = settings(max_examples=300, deadline=None)

weights = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False)
budgets = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)
latencies = st.floats(min_value=0.0, max_value=1e8, allow_nan=False, allow_infinity=False)
costs = st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@st.composite
def custom_scalarizers(draw: st.DrawFn) -> Scalarizer:
    wc, wl, wk = draw(st.tuples(weights, weights, weights).filter(lambda w: sum(w) > 0.0))
    return Scalarizer(
        wc,
        wl,
        wk,
        latency_budget_ms=draw(budgets),
        cost_budget_usd=draw(budgets),
        gate=draw(st.booleans()),
        name=draw(st.sampled_from(["custom", "x", "my reward"])),
    )


scalarizers = st.one_of(st.sampled_from(list(PRESETS.values())), custom_scalarizers())


@st.composite
def outcomes(draw: st.DrawFn) -> Outcome:
    return Outcome(
        valid=draw(st.booleans()),
        latency_ms=draw(latencies),
        cost_usd=draw(costs),
        error=draw(st.sampled_from([None, None, "timeout"])),
        score=draw(st.one_of(st.none(), unit)),
    )


def reference(s: Scalarizer, o: Outcome) -> float:
    """The documented formula, written independently of the implementation."""
    total = s.w_correctness + s.w_latency + s.w_cost
    wc, wl, wk = s.w_correctness / total, s.w_latency / total, s.w_cost / total
    c = 0.0 if o.error is not None else (o.score if o.score is not None else float(o.valid))
    u_lat = min(max(1.0 - o.latency_ms / s.latency_budget_ms, 0.0), 1.0)
    u_cost = min(max(1.0 - o.cost_usd / s.cost_budget_usd, 0.0), 1.0)
    if s.gate:
        return c * (wc + wl * u_lat + wk * u_cost)
    return wc * c + wl * u_lat + wk * u_cost


# --------------------------------------------------------------------------- laws
@SETTINGS
@given(scalarizers, outcomes())
def test_reward_is_a_float_in_unit_interval_and_matches_formula(s: Scalarizer, o: Outcome) -> None:
    r = s(o)
    assert type(r) is float
    assert 0.0 <= r <= 1.0
    assert r == pytest.approx(reference(s, o), rel=1e-12, abs=1e-12)


@SETTINGS
@given(scalarizers, latencies, costs)
def test_valid_beats_invalid(s: Scalarizer, lat: float, cost: float) -> None:
    bad = Outcome(valid=False, latency_ms=lat, cost_usd=cost)
    good = Outcome(valid=True, latency_ms=lat, cost_usd=cost)
    assert s(bad) <= s(good)


@SETTINGS
@given(scalarizers, latencies, costs, unit, unit)
def test_non_decreasing_in_score(
    s: Scalarizer, lat: float, cost: float, a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    r_lo = s(Outcome(valid=True, latency_ms=lat, cost_usd=cost, score=lo))
    r_hi = s(Outcome(valid=True, latency_ms=lat, cost_usd=cost, score=hi))
    assert r_lo <= r_hi


@SETTINGS
@given(scalarizers, latencies, costs, st.booleans())
def test_an_error_never_helps(s: Scalarizer, lat: float, cost: float, valid: bool) -> None:
    ok = Outcome(valid=valid, latency_ms=lat, cost_usd=cost)
    failed = Outcome(valid=valid, latency_ms=lat, cost_usd=cost, error="rate_limited")
    assert s(failed) <= s(ok)


@SETTINGS
@given(scalarizers, outcomes(), latencies, latencies)
def test_non_increasing_in_latency(s: Scalarizer, o: Outcome, a: float, b: float) -> None:
    fast, slow = sorted((a, b))
    r_fast = s(Outcome(o.valid, fast, o.cost_usd, o.error, o.score))
    r_slow = s(Outcome(o.valid, slow, o.cost_usd, o.error, o.score))
    assert r_slow <= r_fast


@SETTINGS
@given(scalarizers, outcomes(), costs, costs)
def test_non_increasing_in_cost(s: Scalarizer, o: Outcome, a: float, b: float) -> None:
    cheap, dear = sorted((a, b))
    r_cheap = s(Outcome(o.valid, o.latency_ms, cheap, o.error, o.score))
    r_dear = s(Outcome(o.valid, o.latency_ms, dear, o.error, o.score))
    assert r_dear <= r_cheap


# --------------------------------------------------------------------------- gate
@SETTINGS
@given(custom_scalarizers(), latencies, costs)
def test_gate_makes_wrong_answers_worthless(s: Scalarizer, lat: float, cost: float) -> None:
    gated = Scalarizer(*_args(s), gate=True)
    ungated = Scalarizer(*_args(s), gate=False)
    wrong = Outcome(valid=False, latency_ms=lat, cost_usd=cost)
    assert gated(wrong) == 0.0
    w = ungated.weights
    u_lat = max(1.0 - lat / s.latency_budget_ms, 0.0)
    u_cost = max(1.0 - cost / s.cost_budget_usd, 0.0)
    assert ungated(wrong) == pytest.approx(w["latency"] * u_lat + w["cost"] * u_cost, abs=1e-12)
    right = Outcome(valid=True, latency_ms=lat, cost_usd=cost)
    assert gated(right) == pytest.approx(ungated(right), abs=1e-12)  # equal when c == 1
    assert gated(right) >= w["correctness"] - 1e-12


def _args(s: Scalarizer) -> tuple[float, float, float, float, float]:
    return (s.w_correctness, s.w_latency, s.w_cost, s.latency_budget_ms, s.cost_budget_usd)


def test_gate_examples() -> None:
    s = Scalarizer(0.6, 0.25, 0.15, 5000.0, 0.01, gate=True)
    assert s(Outcome(valid=True, latency_ms=0.0, cost_usd=0.0)) == pytest.approx(1.0)
    assert s(Outcome(valid=False, latency_ms=0.0, cost_usd=0.0)) == 0.0
    half = s(Outcome(valid=True, latency_ms=0.0, cost_usd=0.0, score=0.5))
    assert half == pytest.approx(0.5)
    u = Scalarizer(0.6, 0.25, 0.15, 5000.0, 0.01, gate=False)
    assert u(Outcome(valid=False, latency_ms=0.0, cost_usd=0.0)) == pytest.approx(0.4)
    assert u(Outcome(valid=True, latency_ms=0.0, cost_usd=0.0, score=0.5)) == pytest.approx(0.7)


def test_budgets_saturate() -> None:
    s = Scalarizer(0.5, 0.25, 0.25, latency_budget_ms=1000.0, cost_budget_usd=0.01, gate=False)
    at_budget = s(Outcome(valid=True, latency_ms=1000.0, cost_usd=0.01))
    past_budget = s(Outcome(valid=True, latency_ms=99_000.0, cost_usd=5.0))
    assert at_budget == past_budget == pytest.approx(0.5)
    assert s(Outcome(valid=True, latency_ms=500.0, cost_usd=0.0)) == pytest.approx(0.875)


def test_weights_are_normalized_but_stored_as_given() -> None:
    s = Scalarizer(6, 3, 1, 1000, 0.01)
    assert (s.w_correctness, s.w_latency, s.w_cost) == (6.0, 3.0, 1.0)
    assert type(s.w_correctness) is float and type(s.latency_budget_ms) is float
    assert s.weights == pytest.approx({"correctness": 0.6, "latency": 0.3, "cost": 0.1})
    assert s == Scalarizer(6.0, 3.0, 1.0, 1000.0, 0.01)
    assert hash(s) == hash(Scalarizer(6.0, 3.0, 1.0, 1000.0, 0.01))
    with pytest.raises(AttributeError):
        s.gate = False  # type: ignore[misc]


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name: str) -> None:
    s = PRESETS[name]
    assert isinstance(s, Scalarizer)
    assert isinstance(s, RewardFunction)
    assert s.name == name
    assert s.gate is True
    assert math.fsum(s.weights.values()) == pytest.approx(1.0)
    assert s.weights["correctness"] >= 0.45  # correctness dominates every preset
    assert get_reward(name) is s
    assert Scalarizer.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    perfect = Outcome(valid=True, latency_ms=0.0, cost_usd=0.0)
    assert s(perfect) == pytest.approx(1.0)
    assert s(Outcome(valid=False, latency_ms=0.0, cost_usd=0.0)) == 0.0


def test_preset_table() -> None:
    assert sorted(PRESETS) == ["balanced", "cost_sensitive", "high_correctness", "low_latency"]
    assert get_reward() is get_reward(None) is PRESETS[DEFAULT_PRESET] is PRESETS["balanced"]
    b = PRESETS["balanced"]
    assert _args(b) == (0.6, 0.25, 0.15, 5000.0, 0.01)
    assert _args(PRESETS["high_correctness"]) == (0.9, 0.05, 0.05, 10000.0, 0.05)
    assert _args(PRESETS["low_latency"]) == (0.45, 0.45, 0.10, 2000.0, 0.01)
    assert _args(PRESETS["cost_sensitive"]) == (0.5, 0.1, 0.4, 30000.0, 0.002)
    with pytest.raises(TypeError):
        PRESETS["mine"] = b  # type: ignore[index]


def test_presets_rank_a_fast_and_a_cheap_arm_differently() -> None:
    fast_dear = Outcome(valid=True, latency_ms=400.0, cost_usd=0.008)
    slow_cheap = Outcome(valid=True, latency_ms=4000.0, cost_usd=0.0002)
    assert get_reward("low_latency")(fast_dear) > get_reward("low_latency")(slow_cheap)
    assert get_reward("cost_sensitive")(slow_cheap) > get_reward("cost_sensitive")(fast_dear)


# --------------------------------------------------------------------------- dicts
@SETTINGS
@given(scalarizers)
def test_dict_round_trip(s: Scalarizer) -> None:
    d = s.to_dict()
    assert d["type"] == "scalarizer"
    back = Scalarizer.from_dict(json.loads(json.dumps(d, allow_nan=False)))
    assert back == s
    assert back.weights == s.weights
    assert get_reward(d) == s


def test_flat_and_nested_weights_are_equivalent() -> None:
    nested = get_reward(
        {
            "weights": {"correctness": 0.7, "latency": 0.2, "cost": 0.1},
            "latency_budget_ms": 3000,
            "cost_budget_usd": 0.02,
            "gate": False,
        }
    )
    flat = get_reward(
        {
            "w_correctness": 0.7,
            "w_latency": 0.2,
            "w_cost": 0.1,
            "latency_budget_ms": 3000,
            "cost_budget_usd": 0.02,
            "gate": False,
        }
    )
    assert nested == flat == Scalarizer(0.7, 0.2, 0.1, 3000.0, 0.02, gate=False)


def test_preset_as_base_with_overrides() -> None:
    assert get_reward({"preset": "low_latency"}) == PRESETS["low_latency"]
    same = get_reward({"preset": "low_latency", "gate": True, "latency_budget_ms": 2000})
    assert same == PRESETS["low_latency"] and same.name == "low_latency"
    r = get_reward({"preset": "low_latency", "weights": {"cost": 0.45}})
    assert (r.w_correctness, r.w_latency, r.w_cost) == (0.45, 0.45, 0.45)
    assert r.latency_budget_ms == 2000.0 and r.name == "low_latency+custom"
    named = get_reward({"preset": "balanced", "w_cost": 0.0, "name": "no_cost"})
    assert named.name == "no_cost" and named.weights["cost"] == 0.0
    assert get_reward(named) is named


def test_custom_reward_function_passes_through() -> None:
    class Constant:
        def __call__(self, outcome: Outcome) -> float:
            return 0.5

        def to_dict(self) -> dict[str, Any]:
            return {"type": "constant"}

    c = Constant()
    assert get_reward(c) is c


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"w_correctness": -0.1}, "w_correctness"),
        ({"w_latency": float("nan")}, "w_latency"),
        ({"w_cost": float("inf")}, "w_cost"),
        ({"w_cost": "0.1"}, "w_cost"),
        ({"w_cost": True}, "w_cost"),
        ({"w_correctness": 0.0, "w_latency": 0.0, "w_cost": 0.0}, "weights"),
        ({"w_correctness": 1e308, "w_latency": 1e308}, "weights"),
        ({"latency_budget_ms": 0.0}, "latency_budget_ms"),
        ({"latency_budget_ms": -5.0}, "latency_budget_ms"),
        ({"cost_budget_usd": float("inf")}, "cost_budget_usd"),
        ({"cost_budget_usd": None}, "cost_budget_usd"),
        ({"gate": 1}, "gate"),
        ({"name": ""}, "name"),
    ],
)
def test_constructor_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {
        "w_correctness": 0.6,
        "w_latency": 0.3,
        "w_cost": 0.1,
        "latency_budget_ms": 1000.0,
        "cost_budget_usd": 0.01,
        **kwargs,
    }
    with pytest.raises(ConfigError) as info:
        Scalarizer(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("fastest", "preset"),
        ({"preset": "nope"}, "preset"),
        ({"preset": "balanced", "speed": 1.0}, "speed"),
        ({"preset": "balanced", "weights": {"speed": 1.0}}, "weights.speed"),
        ({"preset": "balanced", "weights": {"latency": -1.0}}, "weights.latency"),
        ({"preset": "balanced", "w_latency": -1.0}, "w_latency"),
        ({"preset": "balanced", "weights": [1, 2, 3]}, "weights"),
        ({"preset": "balanced", "weights": {"cost": 1.0}, "w_cost": 1.0}, "w_cost"),
        ({"preset": "balanced", "type": "linear"}, "type"),
        ({"preset": "balanced", "latency_budget_ms": "fast"}, "latency_budget_ms"),
        ({"weights": {"correctness": 1, "latency": 0, "cost": 0}}, "latency_budget_ms"),
        ({"latency_budget_ms": 1, "cost_budget_usd": 1}, "w_correctness"),
        ({"preset": "balanced", "weights": {"correctness": 0, "latency": 0, "cost": 0}}, "weights"),
        (42, "reward"),
    ],
)
def test_get_reward_errors_name_the_field(spec: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_reward(spec)
    assert info.value.field == field


def test_from_dict_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError) as info:
        Scalarizer.from_dict([("w_correctness", 1.0)])  # type: ignore[arg-type]
    assert info.value.field == "reward"
