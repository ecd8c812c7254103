"""Arms, modes and outcomes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import routewise as rw


def test_arm_id_and_mode_coercion() -> None:
    a = rw.Arm("openai:gpt-5.4", "transport_compressed")
    b = rw.Arm("openai:gpt-5.4", rw.Mode.transport_compressed)
    assert a == b and hash(a) == hash(b)
    assert a.id == "openai:gpt-5.4/transport_compressed"
    assert rw.Arm.parse(a.id) == a
    assert rw.Arm.parse({"backend": "openai:gpt-5.4", "mode": "transport_compressed"}) == a


@pytest.mark.parametrize(
    ("backend", "mode", "field"),
    [
        ("", "direct_emit", "backend"),
        ("a/b", "direct_emit", "backend"),
        ("openai:x", "json", "mode"),
    ],
)
def test_arm_errors_name_the_field(backend: str, mode: str, field: str) -> None:
    with pytest.raises(rw.ConfigError) as ei:
        rw.Arm(backend, mode)
    assert ei.value.field == field


def test_make_arms_exclusions() -> None:
    arms = rw.make_arms(
        ["a:1", "b:2"], ["direct_emit", "local_reconstructed"], exclude=[("b:2", "direct_emit")]
    )
    assert [x.id for x in arms] == [
        "a:1/direct_emit",
        "a:1/local_reconstructed",
        "b:2/local_reconstructed",
    ]
    assert len(rw.make_arms(["a:1", "b:2"], exclude=["a:1"])) == 3
    with pytest.raises(rw.ConfigError):
        rw.make_arms(["a:1"], ["direct_emit"], exclude=["a:1/direct_emit"])
    with pytest.raises(rw.ConfigError):
        rw.make_arms([])
    # a typo in exclude would otherwise exclude nothing, silently
    with pytest.raises(rw.ConfigError, match=r"^exclude: \['a:l/direct_emit'\] not in"):
        rw.make_arms(["a:1"], exclude=["a:l/direct_emit"])
    with pytest.raises(rw.ConfigError, match=r"^exclude: \['c:3'\] not in"):
        rw.make_arms(["a:1", "b:2"], exclude=["c:3"])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": math.inf}, "latency_ms"),
        ({"cost_usd": math.nan}, "cost_usd"),
        ({"cost_usd": -0.1}, "cost_usd"),
        ({"score": 1.5}, "score"),
        ({"valid": "yes"}, "valid"),
        ({"latency_ms": "12"}, "latency_ms"),
    ],
)
def test_outcome_validation(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"valid": True, "latency_ms": 1.0, "cost_usd": 0.0}
    base.update(kwargs)
    with pytest.raises(rw.InvalidOutcome) as ei:
        rw.Outcome(**base)  # type: ignore[arg-type]
    assert ei.value.field == field


def test_outcome_from_dict_errors() -> None:
    with pytest.raises(rw.InvalidOutcome) as ei:
        rw.Outcome.from_dict({"valid": True, "latency_ms": 1.0, "cost_usd": 0.0, "colour": "red"})
    assert ei.value.field == "colour"
    with pytest.raises(rw.InvalidOutcome) as ei:
        rw.Outcome.from_dict({"latency_ms": 1.0, "cost_usd": 0.0})
    assert ei.value.field == "valid"


@given(
    valid=st.booleans(),
    latency=st.floats(0, 1e7),
    cost=st.floats(0, 100),
    score=st.one_of(st.none(), st.floats(0, 1)),
    error=st.one_of(st.none(), st.sampled_from(["timeout", "rate_limited"])),
)
def test_outcome_dict_roundtrip(
    valid: bool, latency: float, cost: float, score: float | None, error: str | None
) -> None:
    o = rw.Outcome(valid=valid, latency_ms=latency, cost_usd=cost, error=error, score=score)
    assert rw.Outcome.from_dict(o.to_dict()) == o
    assert 0.0 <= o.correctness <= 1.0
    if error is not None:
        assert o.correctness == 0.0


def test_outcome_rejects_implausibly_large_latency_and_cost() -> None:
    """Values past the bounds are unit/encoding bugs whose sums overflow to inf."""
    from routewise.types import MAX_COST_USD, MAX_LATENCY_MS

    rw.Outcome(valid=True, latency_ms=MAX_LATENCY_MS, cost_usd=MAX_COST_USD)
    with pytest.raises(rw.InvalidOutcome, match=r"outcome\.latency_ms: must be <= "):
        rw.Outcome(valid=True, latency_ms=1.797693134862316e306, cost_usd=0.0)
    with pytest.raises(rw.InvalidOutcome, match=r"outcome\.cost_usd: must be <= "):
        rw.Outcome(valid=True, latency_ms=1.0, cost_usd=1e300)
