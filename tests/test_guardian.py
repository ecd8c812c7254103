"""The Guardian: every state transition, the cap, backoff, probing, operator overrides, and
exact propensities under filtering."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from scipy import stats

import routewise as rw
from routewise.controller.guardian import (
    ArmHealth,
    ErrorBurstCheck,
    LatencyCheck,
    ProbeWindow,
    ValidityCheck,
)

ARMS = rw.make_arms(["openai:gpt-5.4", "gemini:flash"], ["direct_emit", "local_reconstructed"])
IDS = [a.id for a in ARMS]


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def feed(
    g: rw.Guardian,
    arm: str,
    n: int,
    *,
    latency: float = 100.0,
    valid: bool = True,
    error: str | None = None,
    t0: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[rw.GuardianEvent]:
    out: list[rw.GuardianEvent] = []
    for i in range(n):
        lat = latency * (float(rng.lognormal(0, 0.2)) if rng is not None else 1.0)
        out += g.observe(arm, valid=valid, latency_ms=lat, error=error, ts=t0 + i)
    return out


def guardian(**kw: object) -> rw.Guardian:
    g = rw.Guardian(min_samples=30, cooldown_s=60.0, probe_n=10, **kw)  # type: ignore[arg-type]
    g.add_arms(IDS)
    return g


def test_latency_jump_quarantines_with_evidence() -> None:
    g = guardian()
    rng = np.random.default_rng(0)
    assert feed(g, IDS[0], 200, rng=rng) == []
    events = feed(g, IDS[0], 200, latency=200.0, t0=200, rng=rng)
    assert events[0].to_state == "quarantined" and events[0].reason == "latency"
    assert events[0].evidence["ratio"] > 1.2
    assert events[0].evidence["cooldown_s"] == 60.0
    assert g.state(IDS[0]) == "quarantined"


def test_validity_drop_quarantines() -> None:
    g = guardian()
    rng = np.random.default_rng(1)
    for i in range(300):
        g.observe(IDS[1], valid=bool(rng.random() < 0.9), latency_ms=100.0, error=None, ts=i)
    events: list[rw.GuardianEvent] = []
    for i in range(300, 600):
        events += g.observe(
            IDS[1], valid=bool(rng.random() < 0.6), latency_ms=100.0, error=None, ts=i
        )
    assert events and events[0].reason == "validity"
    ev = events[0].evidence
    assert ev["recent_validity_shortfall"] > 0.05 * ev["expected_validity"]


def test_error_burst_trips_at_once_even_without_baseline() -> None:
    g = guardian()
    events = feed(g, IDS[2], 5, error="timeout")
    assert [e.reason for e in events] == ["error_burst"]


def test_no_trip_on_noise() -> None:
    g = guardian()
    rng = np.random.default_rng(2)
    for i in range(20_000):
        assert (
            g.observe(
                IDS[0],
                valid=bool(rng.random() < 0.9),
                latency_ms=100 * float(rng.lognormal(0, 0.4)),
                error=None,
                ts=i,
            )
            == []
        )


def test_probe_cycle_recovery_and_backoff() -> None:
    g = guardian()
    arm = IDS[0]
    feed(g, arm, 100)
    feed(g, arm, 5, error="rate_limited", t0=100)
    assert g.state(arm) == "quarantined"
    t_trip = 104  # the 5th consecutive error (ts 100..104)
    assert g.tick(t_trip + 30) == []  # cooldown not over
    ev = g.tick(t_trip + 61)
    assert [(e.from_state, e.to_state) for e in ev] == [("quarantined", "probing")]
    # probe window still failing → back to quarantine with doubled cooldown (backoff)
    ev = feed(g, arm, 10, error="rate_limited", t0=200)
    failed = [e for e in ev if e.reason.startswith("probe_failed")]
    # fail fast: a check trips on the probe traffic well before the 10-probe window ends
    assert failed[0].reason in ("probe_failed:error_burst", "probe_failed:validity")
    assert failed[0].evidence["probe_n"] <= 5
    assert (
        failed and failed[0].to_state == "quarantined" and failed[0].evidence["cooldown_s"] == 120.0
    )
    g.tick(210 + 121)
    assert g.state(arm) == "probing"
    ev = feed(g, arm, 10, t0=400)
    assert [(e.from_state, e.to_state, e.reason) for e in ev] == [
        ("probing", "healthy", "probe_passed")
    ]
    assert g.state(arm) == "healthy"


def test_cap_never_quarantines_too_many() -> None:
    g = guardian(max_out_share=0.5)
    reasons = []
    for arm in IDS:
        reasons += [e.reason for e in feed(g, arm, 5, error="timeout")]
    assert sum(s == "quarantined" for s in g.health().values()) == 2
    assert reasons.count("error_burst:cap_reached") == 2
    serving, probing = g.split(IDS)
    assert serving and not probing


def test_split_serves_least_bad_when_all_requested_are_out() -> None:
    g = guardian()
    feed(g, IDS[0], 5, error="timeout")
    serving, _ = g.split([IDS[0]])
    assert serving == [IDS[0]]


def test_checks_validate_their_config() -> None:
    with pytest.raises(rw.ConfigError):
        LatencyCheck(ratio=0.9)
    with pytest.raises(rw.ConfigError):
        ValidityCheck(ratio=1.5)
    with pytest.raises(rw.ConfigError):
        ErrorBurstCheck(consecutive=0)
    with pytest.raises(rw.ConfigError) as ei:
        rw.Guardian(probe_share=1.5)
    assert ei.value.field == "guardian.probe_share"


# ------------------------------------------------------------------ through the Controller
def run_traffic(
    ctl: rw.Controller,
    clock: Clock,
    n: int,
    bad: str | None = None,
    rng: np.random.Generator | None = None,
) -> list[rw.Decision]:
    rng = rng or np.random.default_rng(0)
    out = []
    for _ in range(n):
        clock.t += 1.0
        d = ctl.decide({"task": "qa"})
        out.append(d)
        err = "timeout" if d.arm.id == bad else None
        ctl.feedback(
            d.decision_id,
            rw.Outcome(
                valid=err is None,
                latency_ms=100 * float(rng.lognormal(0, 0.2)),
                cost_usd=0.0,
                error=err,
            ),
        )
    return out


def test_forced_switch_and_logged_propensities_are_the_ones_used() -> None:
    clock = Clock()
    ctl = rw.Controller(
        arms=ARMS,
        policy="linucb",
        seed=0,
        clock=clock,
        guardian=rw.Guardian(min_samples=20, cooldown_s=50.0, probe_n=10),
        log_events=False,
    )
    run_traffic(ctl, clock, 300)
    preferred = ctl.best_policy({"task": "qa"})[0].arm.id
    ctl.quarantine(preferred)
    assert ctl.health()[preferred] == "quarantined"
    after = run_traffic(ctl, clock, 40)
    assert all(d.arm.id != preferred for d in after)
    for d in after:
        assert preferred not in d.probabilities
        assert sum(d.probabilities.values()) == pytest.approx(1.0)
        assert d.propensity == d.probabilities[d.arm.id]


def test_probe_mixture_propensities_are_exact() -> None:
    """With a probing arm, the decision distribution is (1-s)·policy + s·uniform(probing);
    the empirical arm frequencies match the logged probabilities (chi-square)."""
    clock = Clock()
    g = rw.Guardian(min_samples=20, cooldown_s=5.0, probe_n=10_000, probe_share=0.2)
    ctl = rw.Controller(
        arms=ARMS, policy="uniform", seed=3, clock=clock, guardian=g, log_events=False
    )
    run_traffic(ctl, clock, 100)
    ctl.quarantine(IDS[1])
    # operator quarantine lasts until release; make it a timed one to reach probing
    g.arm_health(IDS[1]).until = clock.t + 2
    clock.t += 10
    assert ctl.health()[IDS[1]] == "probing"
    counts = dict.fromkeys(IDS, 0)
    probs = None
    for _ in range(4000):
        d = ctl.decide({"task": "qa"})
        counts[d.arm.id] += 1
        probs = d.probabilities
        assert d.propensity == d.probabilities[d.arm.id]
    assert probs is not None
    assert probs[IDS[1]] == pytest.approx(0.2)
    expected = np.array([probs[a] for a in IDS]) * 4000
    observed = np.array([counts[a] for a in IDS])
    assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_pin_and_release() -> None:
    clock = Clock()
    ctl = rw.Controller(arms=ARMS, seed=0, clock=clock, log_events=False)
    ctl.pin(IDS[3])
    assert ctl.health()[IDS[3]] == "pinned"
    for d in run_traffic(ctl, clock, 20):
        assert d.arm.id == IDS[3] and d.propensity == 1.0
    ctl.release(IDS[3])
    assert ctl.health()[IDS[3]] == "healthy"
    seen = {d.arm.id for d in run_traffic(ctl, clock, 200)}
    assert len(seen) > 1
    kinds = [(e.reason, e.source) for e in ctl.events()]
    assert ("operator_pin", "operator") in kinds and ("operator_release", "operator") in kinds
    with pytest.raises(rw.UnknownArm):
        ctl.pin("nope:x/direct_emit")


def test_trip_decays_policy_memory_and_is_logged() -> None:
    clock = Clock()
    ctl = rw.Controller(
        arms=ARMS,
        policy="linucb",
        seed=0,
        clock=clock,
        guardian=rw.Guardian(min_samples=20, decay_on_trip=0.0),
    )
    bad = IDS[0]
    with structlog.testing.capture_logs() as logs:
        for _ in range(200):
            clock.t += 1
            d = ctl.decide({}, arms=[bad])
            ctl.feedback(
                d.decision_id,
                rw.Outcome(valid=False, latency_ms=10.0, cost_usd=0.0, error="timeout"),
            )
            if ctl.health()[bad] == "quarantined":
                break
    assert ctl.health()[bad] == "quarantined"
    (ev,) = [e for e in ctl.events() if e.to_state == "quarantined"]
    assert ev.reason == "error_burst" and ev.evidence["consecutive_errors"] == 5
    assert any(
        entry["event"] == "guardian.transition" and entry["to_state"] == "quarantined"
        for entry in logs
    )
    # decay_on_trip=0 resets the arm: its estimate is back to the prior
    mean = ctl.best_policy({}, arms=[bad])[0].expected_reward
    assert mean == 0.0


def test_guardian_off() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, guardian=False)
    assert ctl.guardian is None
    assert set(ctl.health().values()) == {"healthy"}
    with pytest.raises(rw.ConfigError) as ei:
        ctl.pin(IDS[0])
    assert ei.value.field == "guardian"


def test_restart_restores_health_and_operator_state(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    clock = Clock()
    ctl = rw.Controller(
        arms=ARMS,
        seed=0,
        store=db,
        clock=clock,
        snapshot_every=37,
        guardian=rw.Guardian(min_samples=20, cooldown_s=1e6, max_cooldown_s=1e6),
        log_events=False,
    )
    for _ in range(6):  # a burst of timeouts on one arm
        clock.t += 1
        d = ctl.decide({"task": "qa"}, arms=[IDS[2]])
        ctl.feedback(
            d.decision_id, rw.Outcome(valid=False, latency_ms=5.0, cost_usd=0.0, error="timeout")
        )
    run_traffic(ctl, clock, 150)
    ctl.quarantine(IDS[1])
    run_traffic(ctl, clock, 50)
    health = ctl.health()
    state = ctl.guardian.to_state() if ctl.guardian else None
    n_events = len(ctl.events())
    ctl.close()
    assert health[IDS[2]] == "quarantined" and health[IDS[1]] == "quarantined"
    again = rw.Controller(
        store=db,
        clock=clock,
        guardian=rw.Guardian(min_samples=20, cooldown_s=1e6, max_cooldown_s=1e6),
        log_events=False,
    )
    assert again.health() == health
    assert again.guardian is not None and again.guardian.to_state() == state
    assert len(again.events()) == n_events
    again.close()


def test_event_json_is_strict() -> None:
    g = guardian()
    (ev,) = g.quarantine(IDS[0], ts=1.0)
    import json

    json.dumps(g.to_state(), allow_nan=False)
    assert ev.to_dict()["to"] == "quarantined"
    assert math.isinf(g.arm_health(IDS[0]).until)


def test_traffic_mix_shift_is_not_a_degradation() -> None:
    """Latency and validity depend on the request: when the policy sends an arm more of the
    slow, hard requests, the arm has not degraded. With the request features the Guardian
    compares like with like; without them the same stream looks like a 3x slowdown."""
    rng = np.random.default_rng(7)

    def stream(
        g: rw.Guardian, share_long: float, n: int, t0: int, with_x: bool
    ) -> list[rw.GuardianEvent]:
        out: list[rw.GuardianEvent] = []
        for i in range(n):
            long = rng.random() < share_long
            x = [1.0, 1.0 if long else -1.0]
            lat = (1500.0 if long else 300.0) * float(rng.lognormal(0, 0.2))
            valid = bool(rng.random() < (0.8 if long else 0.97))
            out += g.observe(
                IDS[0], valid=valid, latency_ms=lat, error=None, ts=t0 + i, x=x if with_x else None
            )
        return out

    with_x, without_x = guardian(), guardian()
    assert stream(with_x, 0.2, 600, 0, True) == []
    assert stream(with_x, 0.9, 3000, 600, True) == []
    stream(without_x, 0.2, 600, 0, False)
    assert any(e.to_state == "quarantined" for e in stream(without_x, 0.9, 3000, 600, False))
    # and a real slowdown of the same arm is still caught, on the shifted mix
    events = []
    for i in range(400):
        long = rng.random() < 0.9
        lat = 2 * (1500.0 if long else 300.0) * float(rng.lognormal(0, 0.2))
        events += with_x.observe(
            IDS[0],
            valid=True,
            latency_ms=lat,
            error=None,
            ts=5000 + i,
            x=[1.0, 1.0 if long else -1.0],
        )
    assert events and events[0].reason == "latency"


def test_cap_reached_reports_each_error_burst_once() -> None:
    """With the quarantine cap reached, a burst is reported once (and the evidence starts
    over), not again on every following error."""
    g = rw.Guardian()
    g.add_arms(["a/direct_emit", "b/direct_emit"])
    events = []
    for i in range(5):
        events += g.observe(
            "a/direct_emit", valid=False, latency_ms=10.0, error="server_error", ts=float(i)
        )
    assert [e.to_state for e in events] == ["quarantined"]
    capped = []
    for i in range(12):
        capped += g.observe(
            "b/direct_emit", valid=False, latency_ms=10.0, error="timeout", ts=10.0 + i
        )
    assert [e.reason for e in capped] == ["error_burst:cap_reached"] * 2
    assert all(e.to_state == "healthy" for e in capped)


# ------------------------------------------------------------------ probe verdicts
def latency_tolerant_guardian(ratio: float, **kw: object) -> rw.Guardian:
    """An arm guarded by ``LatencyCheck(ratio=ratio)``, the other checks default."""
    checks = [ErrorBurstCheck(), LatencyCheck(ratio=ratio), ValidityCheck()]
    return guardian(checks=checks, **kw)


def degrade_then_probe(
    g: rw.Guardian, probe_latency: float, cycles: int
) -> tuple[rw.GuardianEvent, list[rw.GuardianEvent]]:
    """Baseline at 100 ms, degrade to 250 ms (2.5×) until quarantined, then up to ``cycles``
    probe windows (each opened by ``tick`` at the cooldown's end) at ``probe_latency``;
    stops once the arm is healthy. Returns the trip and every later transition."""
    arm = IDS[0]
    rng = np.random.default_rng(11)
    assert feed(g, arm, 300, rng=rng) == []
    trip, *rest = feed(g, arm, 300, latency=250.0, t0=300, rng=rng)
    assert rest == []  # a quarantined arm's outcomes move nothing
    events: list[rw.GuardianEvent] = []
    for _ in range(cycles):
        now = g.arm_health(arm).until
        events += g.tick(now)
        assert g.state(arm) == "probing"
        events += feed(g, arm, 10, latency=probe_latency, t0=now, rng=rng)  # probe_n = 10
        if g.state(arm) == "healthy":
            break
    return trip, events


def test_probe_window_judged_with_configured_latency_ratio() -> None:
    """With LatencyCheck(ratio=2.0) an arm that degraded to 2.5× and probes at 1.49× its
    baseline is back within the configured limit: it leaves quarantine through probing."""
    g = latency_tolerant_guardian(2.0)
    trip, events = degrade_then_probe(g, probe_latency=149.0, cycles=1)
    assert (trip.to_state, trip.reason) == ("quarantined", "latency")
    assert trip.evidence["ratio"] > 2.0
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        ("quarantined", "probing", "cooldown_elapsed"),
        ("probing", "healthy", "probe_passed"),
    ]
    assert 1.2 < events[-1].evidence["latency_ratio"] < 2.0
    assert g.state(IDS[0]) == "healthy"


def test_probe_window_still_degraded_under_configured_ratio_stays_out() -> None:
    """The same arm probing at 2.5× never comes back; every probe window fails (backoff,
    doubling up to the configured cap; the default cap is 300 s, see below)."""
    g = latency_tolerant_guardian(2.0, max_cooldown_s=3600.0)
    _, events = degrade_then_probe(g, probe_latency=250.0, cycles=5)
    assert all(e.to_state != "healthy" for e in events)
    failed = [e for e in events if e.from_state == "probing"]
    assert len(failed) == 5
    assert all(e.to_state == "quarantined" and "latency" in e.reason for e in failed)
    assert [e.evidence["cooldown_s"] for e in failed] == [120.0, 240.0, 480.0, 960.0, 1920.0]
    assert g.state(IDS[0]) == "quarantined"


def test_backoff_is_capped_at_300_s_by_default() -> None:
    """An arm that recovered during a long incident is probed again within 300 s (Envoy's
    default cap of outlier ejections), unless a longer cooldown or cap is configured."""
    g = latency_tolerant_guardian(2.0)
    _, events = degrade_then_probe(g, probe_latency=250.0, cycles=5)
    failed = [e for e in events if e.from_state == "probing"]
    assert [e.evidence["cooldown_s"] for e in failed] == [120.0, 240.0, 300.0, 300.0, 300.0]
    assert rw.Guardian(cooldown_s=900.0).max_cooldown_s == 900.0
    assert rw.Guardian().max_cooldown_s == 300.0


def test_probe_window_default_latency_ratio_unchanged() -> None:
    """With the default LatencyCheck (1.2×) a window at 1.49× still fails — at the window's
    end (no fail-fast trip), by the latency check's verdict."""
    g = guardian()
    _, events = degrade_then_probe(g, probe_latency=149.0, cycles=1)
    assert [(e.from_state, e.to_state, e.reason) for e in events] == [
        ("quarantined", "probing", "cooldown_elapsed"),
        ("probing", "quarantined", "probe_failed"),
    ]
    ev = events[-1].evidence
    assert ev["probe_n"] == 10 and ev["latency_ratio_limit"] == 1.2
    assert ev["latency_ratio"] > 1.2
    assert "validity_shortfall_limit" not in ev and "error_rate_limit" not in ev


def test_probe_verdict_of_each_check_uses_its_thresholds() -> None:
    def window(**kw: Any) -> ProbeWindow:
        return ProbeWindow.of(ArmHealth(base_ready=True, probe_n=20, **kw))

    slow = window(probe_valid=20, probe_loglat_sum=20 * math.log(1.5), probe_exp_valid_sum=18.0)
    assert LatencyCheck().probe_verdict(slow) is not None
    assert LatencyCheck(ratio=1.6).probe_verdict(slow) is None
    # expected 0.9, observed 0.7: a shortfall of 0.2
    worse = window(probe_valid=14, probe_valid_resid_sum=-4.0, probe_exp_valid_sum=18.0)
    assert ValidityCheck().probe_verdict(worse) is not None
    assert ValidityCheck(ratio=0.7).probe_verdict(worse) is None
    erring = window(probe_errors=6, probe_valid=14, probe_exp_valid_sum=18.0)
    assert ErrorBurstCheck().probe_verdict(erring) is None
    assert ErrorBurstCheck(rate=0.3).probe_verdict(erring) is not None
    all_errors = window(probe_errors=20, probe_exp_valid_sum=18.0)
    assert LatencyCheck(ratio=5.0).probe_verdict(all_errors) is not None  # no latency to judge


def test_only_configured_checks_judge_a_probe_window() -> None:
    """Without a latency check, latency does not keep an arm out."""
    g = guardian(checks=[ErrorBurstCheck()])
    arm = IDS[0]
    feed(g, arm, 100)
    feed(g, arm, 5, error="timeout", t0=100)
    g.tick(g.arm_health(arm).until)
    ev = feed(g, arm, 10, latency=300.0, t0=1000)
    assert [e.reason for e in ev] == ["probe_passed"] and ev[0].evidence["latency_ratio"] == 3.0


# ------------------------------------------------------------------ pure state queries
def test_state_at_predicts_tick_without_changing_anything() -> None:
    g = guardian()
    feed(g, IDS[0], 100)
    feed(g, IDS[0], 5, error="timeout", t0=100)  # tripped at ts 104: until 164
    g.quarantine(IDS[1], ts=110.0, until=200.0)
    g.quarantine(IDS[2], ts=110.0, until=150.0)
    g.pin(IDS[2], ts=111.0)  # pinned, its quarantine still running underneath
    g.quarantine(IDS[3], ts=112.0)  # until released
    expected = {
        120.0: ["quarantined", "quarantined", "pinned", "quarantined"],
        164.0: ["probing", "quarantined", "pinned", "quarantined"],
        1e9: ["probing", "probing", "pinned", "quarantined"],
    }
    for now, states in expected.items():
        before = json.dumps(g.to_state(), sort_keys=True)
        health_before = g.health()
        predicted = g.states(IDS, now)
        assert predicted == {a: g.state_at(a, now) for a in IDS}
        assert list(predicted.values()) == states
        assert json.dumps(g.to_state(), sort_keys=True) == before
        assert g.health() == health_before
        g.tick(now)
        assert {a: g.state(a) for a in IDS} == predicted
    with pytest.raises(rw.UnknownArm):
        g.state_at("nope:x/direct_emit", 0.0)


def test_an_arm_that_only_errs_keeps_a_bounded_warm_up_batch() -> None:
    g = rw.Guardian(min_samples=50, max_out_share=0.5)
    g.add_arms(["a/direct_emit", "b/direct_emit"])
    g.quarantine("b/direct_emit", 0.0)  # one arm of two out: the cap keeps "a" serving
    for i in range(20_000):
        g.observe("a/direct_emit", valid=False, latency_ms=100.0, error="timeout", ts=float(i))
    h = g._health["a/direct_emit"]
    assert h.state == "healthy"
    assert len(h.lag) <= 4 * 50
    assert len(json.dumps(g.to_state(), default=float)) < 200_000
