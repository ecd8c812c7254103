"""Controller behaviour: decide/feedback contracts, idempotency, wait time, best policy, status."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import structlog

import routewise as rw
from routewise.bandits import LinUCB

ARMS = rw.make_arms(["openai:gpt-5.4", "gemini:flash", "ollama:llama3"])


class FakeClock:
    def __init__(self, t: float = 1_764_100_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def ok(latency: float = 500.0) -> rw.Outcome:
    return rw.Outcome(valid=True, latency_ms=latency, cost_usd=0.0004)


def test_decide_returns_contract_fields() -> None:
    ctl = rw.Controller(arms=ARMS, seed=1)
    d = ctl.decide(
        {
            "task": "extraction",
            "schema_depth": 3,
            "n_fields": 12,
            "input_tokens": 900,
            "language": "zh",
        }
    )
    assert d.arm.id == f"{d.arm.backend}/{d.arm.mode.value}"
    assert d.arm in ARMS
    assert 0 < d.propensity <= 1
    assert d.propensity == pytest.approx(d.probabilities[d.arm.id])
    assert sum(d.probabilities.values()) == pytest.approx(1.0)
    assert set(d.scores) == {a.id for a in ARMS}
    assert d.policy == ctl.policy.name
    assert isinstance(d.decision_id, str) and len(d.decision_id) >= 16


def test_feedback_learns_and_is_idempotent() -> None:
    ctl = rw.Controller(arms=ARMS, policy="linucb", seed=0)
    d = ctl.decide({"task": "qa"})
    r1 = ctl.feedback(d.decision_id, ok())
    assert not r1.duplicate
    assert r1.reward == pytest.approx(ctl.reward(ok()))
    state_before = json.dumps(ctl.policy.to_state())
    r2 = ctl.feedback(d.decision_id, rw.Outcome(valid=False, latency_ms=9000.0, cost_usd=1.0))
    assert r2.duplicate and r2.reward == r1.reward
    assert json.dumps(ctl.policy.to_state()) == state_before, "a duplicate must not learn twice"
    assert ctl.status().feedbacks == 1


def test_feedback_accepts_mapping_and_validates() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    d = ctl.decide({})
    with pytest.raises(rw.InvalidOutcome) as ei:
        ctl.feedback(d.decision_id, {"valid": True, "latency_ms": float("nan"), "cost_usd": 0.0})
    assert ei.value.field == "latency_ms"
    with pytest.raises(rw.InvalidOutcome) as ei:
        ctl.feedback(d.decision_id, {"valid": True, "latency_ms": 1.0})
    assert ei.value.field == "cost_usd"
    # the failed feedbacks did not consume the decision
    r = ctl.feedback(d.decision_id, {"valid": True, "latency_ms": 1.0, "cost_usd": 0.0})
    assert not r.duplicate


def test_unknown_decision() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    with pytest.raises(rw.UnknownDecision) as ei:
        ctl.feedback("nope", ok())
    assert ei.value.decision_id == "nope"
    assert "nope" in str(ei.value)


def test_eligible_subset_and_unknown_arm() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    sub = [ARMS[1].id, ARMS[4].id]
    for _ in range(20):
        d = ctl.decide({"task": "qa"}, arms=sub)
        assert d.arm.id in sub
        assert set(d.probabilities) == set(sub)
    with pytest.raises(rw.UnknownArm) as ei:
        ctl.decide({}, arms=["nope:x/direct_emit"])
    assert ei.value.arm_id == "nope:x/direct_emit"


def test_invalid_context_names_key_and_changes_nothing() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    ctl.decide({"task": "qa", "n_fields": 3})
    before = ctl.status().decisions
    with pytest.raises(rw.InvalidContext) as ei:
        ctl.decide({"task": "qa", "schema": {"depth": 3}})
    assert ei.value.key == "schema"
    with pytest.raises(rw.InvalidContext) as ei:
        ctl.decide({"n_fields": float("nan")})
    assert ei.value.key == "n_fields"
    assert ctl.status().decisions == before


def test_same_seed_same_decisions() -> None:
    def run(seed: int) -> list[str]:
        ctl = rw.Controller(arms=ARMS, policy="squarecb", seed=seed)
        rng = np.random.default_rng(0)
        out = []
        for i in range(300):
            d = ctl.decide({"task": ["qa", "extraction"][i % 2], "n": float(rng.normal())})
            out.append(d.arm.id)
            ctl.feedback(
                d.decision_id,
                rw.Outcome(valid=bool(rng.random() < 0.7), latency_ms=300.0, cost_usd=0.0),
            )
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_policy_object_and_name() -> None:
    pol = LinUCB(alpha=0.3, seed=3)
    ctl = rw.Controller(arms=ARMS, policy=pol)
    assert ctl.policy is pol
    assert rw.Controller(arms=ARMS, policy="lints", seed=0).policy.name == "lints"
    with pytest.raises(rw.PolicyError):
        rw.Controller(arms=ARMS, policy="nope")


def test_bad_arms_config() -> None:
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller(arms=[])
    assert ei.value.field == "arms"
    with pytest.raises(rw.ConfigError):
        rw.Controller(arms=["a:b/direct_emit", "a:b/direct_emit"])
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller(arms=["a:b/bogus_mode"])
    assert ei.value.field == "mode"
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller()
    assert ei.value.field == "arms"


def test_reward_wait_time_reject_and_default() -> None:
    clock = FakeClock()
    ctl = rw.Controller(arms=ARMS, seed=0, reward_wait_s=60, clock=clock)
    d = ctl.decide({})
    clock.t += 61
    with pytest.raises(rw.FeedbackTooLate) as ei:
        ctl.feedback(d.decision_id, ok())
    assert ei.value.decision_id == d.decision_id
    assert ctl.status().feedbacks == 0

    clock2 = FakeClock()
    ctl2 = rw.Controller(arms=ARMS, seed=0, reward_wait_s=60, default_reward=0.0, clock=clock2)
    d2 = ctl2.decide({})
    clock2.t += 120
    assert ctl2.expire() == 1
    st = ctl2.status()
    assert st.feedbacks == 1 and st.arms[d2.arm.id]["mean_reward"] == 0.0
    # the late real feedback is rejected, and the default stays
    with pytest.raises(rw.FeedbackTooLate):
        ctl2.feedback(d2.decision_id, ok())

    clock3 = FakeClock()
    ctl3 = rw.Controller(arms=ARMS, seed=0, reward_wait_s=60, late_feedback="accept", clock=clock3)
    d3 = ctl3.decide({})
    clock3.t += 600
    assert not ctl3.feedback(d3.decision_id, ok()).duplicate


def test_per_decision_reward_preset() -> None:
    ctl = rw.Controller(arms=ARMS, reward="balanced", seed=0)
    slow = rw.Outcome(valid=True, latency_ms=1800.0, cost_usd=0.0)
    d1 = ctl.decide({}, reward="low_latency")
    d2 = ctl.decide({})
    r1 = ctl.feedback(d1.decision_id, slow).reward
    r2 = ctl.feedback(d2.decision_id, slow).reward
    assert d1.reward == "low_latency" and d2.reward == "balanced"
    assert r1 < r2


def test_best_policy_ranks_learned_arm_first() -> None:
    ctl = rw.Controller(arms=ARMS, policy="linucb", seed=0)
    good = ARMS[2].id
    for i in range(600):
        ctx = {"task": ["qa", "extraction"][i % 2], "n_fields": float(i % 7)}
        d = ctl.decide(ctx)
        ctl.feedback(
            d.decision_id, rw.Outcome(valid=d.arm.id == good, latency_ms=400.0, cost_usd=0.0)
        )
    ranked = ctl.best_policy()
    assert ranked[0].arm.id == good
    assert [r.expected_reward for r in ranked] == sorted(
        (r.expected_reward for r in ranked), reverse=True
    )
    assert all(r.uncertainty >= 0 for r in ranked)
    assert ctl.best_policy({"task": "qa", "n_fields": 2.0})[0].arm.id == good
    assert sum(r.n for r in ranked) == 600


def test_status_fields() -> None:
    ctl = rw.Controller(arms=ARMS[:2], seed=0)
    for lat in (100.0, 200.0, 300.0, 400.0):
        d = ctl.decide({})
        ctl.feedback(d.decision_id, rw.Outcome(valid=lat < 350, latency_ms=lat, cost_usd=0.001))
    st = ctl.status()
    assert st.decisions == 4 and st.feedbacks == 4 and st.pending == 0
    total = sum(s["feedbacks"] for s in st.arms.values())
    assert total == 4
    for s in st.arms.values():
        if s["feedbacks"]:
            assert 0 <= s["validity"] <= 1
            assert 90 <= s["latency_p50_ms"] <= 410
            assert s["cost_usd_mean"] == pytest.approx(0.001)


def test_export_trace_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ctl = rw.Controller(arms=ARMS, seed=0)
    d1 = ctl.decide({"task": "extraction", "schema_depth": 3}, request_id="req-1")
    ctl.decide({"task": "qa"})
    ctl.feedback(d1.decision_id, ok(812.5))
    path = tmp_path / "trace.jsonl"
    assert ctl.export_trace(path) == 2
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    first, second = lines
    assert first["decision_id"] == d1.decision_id
    assert first["arm"] == d1.arm.id and first["propensity"] == d1.propensity
    assert first["context"] == {"task": "extraction", "schema_depth": 3}
    assert first["outcome"] == {
        "valid": True,
        "latency_ms": 812.5,
        "cost_usd": 0.0004,
        "error": None,
    }
    assert first["reward"] == pytest.approx(ctl.reward(ok(812.5)))
    assert first["request_id"] == "req-1"
    assert isinstance(first["ts"], float)
    assert "outcome" not in second and "reward" not in second
    buf = io.StringIO()
    assert ctl.export_trace(buf) == 2


def test_decision_logs_with_structlog() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, log_decisions=True)
    with structlog.testing.capture_logs() as logs:
        d = ctl.decide({"task": "qa"})
        ctl.feedback(d.decision_id, ok())
    events = [e["event"] for e in logs]
    assert events == ["decision", "feedback"]
    assert logs[0]["decision_id"] == d.decision_id and logs[0]["arm"] == d.arm.id
    assert logs[1]["reward"] == pytest.approx(ctl.reward(ok()), abs=1e-6)


def test_closed_controller_refuses() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0)
    ctl.close()
    with pytest.raises(rw.StateError):
        ctl.decide({})


def test_decision_to_dict_is_strict_json() -> None:
    ctl = rw.Controller(arms=ARMS, policy="ucb1", seed=0)
    d = ctl.decide({})
    text = json.dumps(d.to_dict(), allow_nan=False)
    body = json.loads(text)
    assert body["arm"] == {"id": d.arm.id, "backend": d.arm.backend, "mode": d.arm.mode.value}
    assert any(v is None for v in body["scores"].values())  # untried arms: unbounded index


def test_bad_reward_and_store_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(rw.ConfigError, match=r"^reward: unknown preset 'fastest'"):
        rw.Controller(arms=["a:b/direct_emit"], reward="fastest")
    with pytest.raises(rw.ConfigError, match=r"^reward\.preset: unknown preset"):
        rw.Controller(arms=["a:b/direct_emit"], reward={"preset": "fastest"})
    with pytest.raises(rw.ConfigError, match=r"^reward\.nope: unknown field"):
        rw.Controller(arms=["a:b/direct_emit"], reward={"preset": "balanced", "nope": 1})
    ctl = rw.Controller(arms=["a:b/direct_emit"])
    with pytest.raises(rw.ConfigError, match=r"^reward: unknown preset"):
        ctl.decide({}, reward="fastest")
    # (a store that fails validation must not leave an "Exception ignored in __del__" behind;
    # pytest's -W error turns that unraisable exception into a failure)
    with pytest.raises(rw.ConfigError, match=r"^durability: must be"):
        rw.Controller(arms=["a:b/direct_emit"], store=tmp_path / "s.db", durability="sometimes")  # type: ignore[arg-type]
    import gc

    gc.collect()


def test_export_trace_to_a_bad_path_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    ctl = rw.Controller(arms=["a:b/direct_emit"], seed=0)
    ctl.feedback(ctl.decide({}).decision_id, rw.Outcome(valid=True, latency_ms=1.0, cost_usd=0.0))
    with pytest.raises(rw.ConfigError, match=r"^file: .* is a directory"):
        ctl.export_trace(tmp_path)
    with pytest.raises(rw.ConfigError, match=r"^file: directory .* does not exist"):
        ctl.export_trace(tmp_path / "missing" / "t.jsonl")
    assert list(tmp_path.parent.glob(tmp_path.name + ".tmp")) == []
    assert ctl.export_trace(tmp_path / "t.jsonl") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


def test_policy_spec_strings(tmp_path: Path) -> None:
    """The ``name:key=value`` form the CLI takes works for the Controller (and its TOML)."""
    ctl = rw.Controller(arms=["a:b/direct_emit"], policy="linucb:alpha=0.3:discount=0.99")
    assert ctl.policy.name == "linucb"
    assert ctl.policy.params()["alpha"] == 0.3 and ctl.policy.params()["discount"] == 0.99
    tuned = rw.Controller(arms=["a:b/direct_emit"], policy="default").policy.params()
    assert tuned == {
        **rw.Controller(arms=["a:b/direct_emit"]).policy.params(),
        "seed": tuned["seed"],
    }
    with pytest.raises(rw.PolicyError, match=r"expected name:key=value, got 'alpha'"):
        rw.Controller(arms=["a:b/direct_emit"], policy="linucb:alpha")
    with pytest.raises(rw.PolicyError, match=r"gamma_scale: must be >= 0"):
        rw.Controller(arms=["a:b/direct_emit"], policy="squarecb:gamma_scale=-1")
    with pytest.raises(rw.ConfigError, match=r"^policy: 'default' takes no parameters"):
        rw.Controller(arms=["a:b/direct_emit"], policy="default:optimism=1")
    cfg = tmp_path / "routewise.toml"
    cfg.write_text('arms = ["a:b/direct_emit"]\npolicy = "epsilon_greedy:epsilon=0.2"\n')
    assert rw.Controller.from_config(cfg).policy.params()["epsilon"] == 0.2


def test_feature_spec_that_is_not_a_mapping_is_named() -> None:
    with pytest.raises(
        rw.ConfigError, match=r"^features: must be a feature spec mapping, got list"
    ):
        rw.Controller(arms=["a:b/direct_emit"], features=[1])  # type: ignore[arg-type]


def test_failed_construction_leaves_no_new_store_behind(tmp_path: Path) -> None:
    with pytest.raises(rw.ConfigError, match=r"^arms: required"):
        rw.Controller(store=tmp_path / "new.db")  # no arms for a new store
    with pytest.raises(rw.PolicyError):
        rw.Controller(arms=["a:b/direct_emit"], policy="nope", store=tmp_path / "new2.db")
    assert list(tmp_path.iterdir()) == []
    # an existing store is never removed, even when the arguments are wrong
    rw.Controller(arms=["a:b/direct_emit"], store=tmp_path / "old.db").close()
    with pytest.raises(rw.ConfigError, match=r"^policy: the store was learned with"):
        rw.Controller(store=tmp_path / "old.db", policy="linucb")
    assert (tmp_path / "old.db").is_file()
    assert rw.Controller(store=tmp_path / "old.db").status().decisions == 0


def test_from_settings_builds_what_the_settings_describe(tmp_path: Path) -> None:
    from routewise.config import RoutewiseSettings

    settings = RoutewiseSettings(
        arms=["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"],
        seed=3,
        policy={"name": "linucb", "alpha": 0.4},
        reward="low_latency",
        guardian={"cooldown_s": 30, "latency": False},
        db=str(tmp_path / "s.db"),
    )
    ctl = rw.Controller.from_settings(settings, log_events=False)
    assert (ctl.policy.name, ctl.policy.params()["alpha"], ctl.seed) == ("linucb", 0.4, 3)
    assert ctl.reward.name == "low_latency"
    assert ctl.guardian is not None and ctl.guardian.cooldown_s == 30
    assert not any(isinstance(c, rw.controller.LatencyCheck) for c in ctl.guardian.checks)
    ctl.close()
    again = rw.Controller.from_settings(settings, guardian=False, read_only=True)
    assert again.guardian is None and again.read_only and again.policy.name == "linucb"
    again.close()


def test_from_settings_names_a_bad_argument() -> None:
    from routewise.config import RoutewiseSettings

    with pytest.raises(rw.ConfigError, match="settings: expected a RoutewiseSettings"):
        rw.Controller.from_settings({"arms": ["a:x/direct_emit"]})  # type: ignore[arg-type]
    settings = RoutewiseSettings(arms=["a:x/direct_emit", "b:y/direct_emit"])
    with pytest.raises(rw.ConfigError, match="bogus: not a Controller argument"):
        rw.Controller.from_settings(settings, bogus=1)
