"""The Guardian's calibrated expectations: a confident but wrong per-request model cannot trip
an arm, a real change still does; calibration state round-trips; an arm that passes probing
is re-learned by the policy."""

from __future__ import annotations

import json

import numpy as np

import routewise as rw
from routewise.controller.guardian import ArmHealth
from routewise.controller.guardian import baseline as bl

ARM = "openai:gpt-5.4/direct_emit"


def request(rng: np.random.Generator, task: str) -> tuple[list[float], float]:
    """A request's features ``[1, tokens, is_c]`` and its true validity.

    Task a: long prompts, validity 0.99; task b: short prompts, 0.86. Task c (never seen while
    the models were fitted) has the longest prompts, and a validity of 0.90, ordinary for
    this arm (pooled 0.925), but the fitted model, which learned "longer prompt, more valid"
    from a and b, extrapolates it to certainty."""
    if task == "a":
        return [1.0, float(rng.normal(1.0, 0.3)), 0.0], 0.99
    if task == "b":
        return [1.0, float(rng.normal(-1.0, 0.3)), 0.0], 0.86
    return [1.0, float(rng.normal(2.5, 0.3)), 1.0], 0.90


def run(
    g: rw.Guardian, rng: np.random.Generator, tasks: str, n: int, t0: float, drop: float = 0.0
) -> list[rw.GuardianEvent]:
    events: list[rw.GuardianEvent] = []
    for i in range(n):
        x, p = request(rng, tasks[int(rng.integers(len(tasks)))])
        valid = bool(rng.random() < p - drop)
        lat = 400.0 * float(rng.lognormal(0.0, 0.2))
        events += g.observe(ARM, valid=valid, latency_ms=lat, error=None, ts=t0 + i, x=x)
    return events


def test_a_confident_but_wrong_model_does_not_trip_and_a_real_drop_still_does() -> None:
    """Fitted on tasks a and b, then served only task c, stationary: the raw model promises
    ≥ 0.99 validity where the arm gives 0.90. The calibrated expectation leans on the arm's
    pooled validity for a kind of request it has no support for, so 20 seeds × 6,000 requests
    trip nothing; a real 20-point drop on the same traffic is still caught within 150."""
    delays = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        g = rw.Guardian()
        g.add_arms([ARM])
        assert run(g, rng, "ab", 2000, 0.0) == []
        h = g.arm_health(ARM)
        x_c, _ = request(np.random.default_rng(99), "c")
        assert float(h.w[1].dot(x_c)) >= 0.99  # the model is confident, and wrong (0.90)
        assert run(g, rng, "c", 6000, 2000.0) == [], f"seed {seed}: false quarantine"
        events = run(g, rng, "c", 400, 8000.0, drop=0.20)
        trips = [e for e in events if e.to_state == "quarantined"]
        assert trips and trips[0].reason == "validity"
        delays.append(trips[0].ts - 8000.0 + 1)
    assert float(np.median(delays)) <= 150, delays


def test_calibration_state_round_trips_and_old_states_load() -> None:
    rng = np.random.default_rng(3)
    g = rw.Guardian()
    g.add_arms([ARM])
    run(g, rng, "ab", 700, 0.0)
    h = g.arm_health(ARM)
    assert h.base_ready and len(h.lag) > 0
    state = json.loads(json.dumps(h.to_state(), allow_nan=False))
    back = ArmHealth.from_state(state)
    assert back.to_state() == h.to_state()
    # a state written before calibration existed: no m2, cal_*, kappa_*, pl/pv in the lag
    old = dict(state)
    for key in (
        "m2",
        "cal_lat",
        "cal_val",
        "kappa_lat",
        "kappa_val",
        "val_sq",
        "val_pq",
        "val_disp",
        "d_eff",
        "base_loglat",
        "raw_loglat",
        "raw_valid",
        "recent_err_n",
    ):
        old.pop(key)
    old["lag"] = {k: v for k, v in state["lag"].items() if k not in ("pl", "pv")}
    old["w_cov"] = "ignored"
    restored = ArmHealth.from_state(old)
    assert restored.kappa_val == 1.0 and restored.d_eff == 3.0
    g2 = rw.Guardian()
    g2.set_state({"pinned": None, "arms": {ARM: old}})
    assert run(g2, rng, "ab", 500, 700.0) == []  # it keeps working (and learning) from there


def test_leave_one_out_calibration_at_the_fit() -> None:
    """At the fit, the calibration slope comes from leave-one-out predictions: a model that
    merely memorizes noise (many useless features, few observations) is shrunk (κ < 1)."""
    rng = np.random.default_rng(5)
    h = ArmHealth()
    d = 30
    for _ in range(10 * d):
        x = np.concatenate([[1.0], rng.normal(size=d - 1)])
        bl.collect(
            h, x, ll=float(rng.normal(6.0, 0.3)), y=float(rng.random() < 0.9), min_samples=50
        )
    assert h.base_ready
    assert h.kappa_val < 0.8 and h.kappa_lat < 0.8
    # the held-out residual variance exceeds the noise (0.09): the misfit of 30 weights is in it
    assert h.base_loglat_var > 0.09


def test_an_arm_that_passes_probing_is_relearned_by_the_policy() -> None:
    """``decay_on_recover``: when a probe passes, the policy's memory of the arm (the bad
    outcomes before the trip, the failed probes) shrinks, as on a trip."""
    calls: list[tuple[str, float]] = []
    g = rw.Guardian(min_samples=30, cooldown_s=10.0, probe_n=10, decay_on_recover=0.25)
    g.add_arms([ARM, "b:x/direct_emit"])
    g.on_trip = lambda arm, f: calls.append((arm, f))
    rng = np.random.default_rng(1)

    def feed(n: int, t0: float, latency: float) -> list[rw.GuardianEvent]:
        out: list[rw.GuardianEvent] = []
        for i in range(n):
            lat = latency * float(rng.lognormal(0.0, 0.2))
            out += g.observe(ARM, valid=True, latency_ms=lat, error=None, ts=t0 + i)
        return out

    feed(300, 0.0, 100.0)
    assert any(e.to_state == "quarantined" for e in feed(100, 300.0, 400.0))
    assert calls == [(ARM, 0.1)]
    g.tick(1000.0)
    events = feed(10, 1000.0, 100.0)
    assert [e.reason for e in events] == ["probe_passed"]
    assert calls == [(ARM, 0.1), (ARM, 0.25)]


def test_error_bursts_are_judged_against_the_arms_own_persistence() -> None:
    """An arm whose errors come in clusters as a matter of course (a 20 % error rate inside
    bursts, 1 % outside) learns its error persistence and is not quarantined for five errors in
    a row; an outage (every request failing) still trips it within 15 requests, and an arm with
    rare independent errors still trips on the fifth."""
    rng = np.random.default_rng(11)
    g = rw.Guardian()
    bursty, calm = ARM, "b:x/direct_emit"
    g.add_arms([bursty, calm, "c:y/direct_emit", "d:z/direct_emit"])  # room for two out
    in_burst, t, late_trips = False, 0.0, []
    for i in range(20_000):
        t += 1.0
        in_burst = rng.random() < (0.99 if in_burst else 0.005)
        err = rng.random() < (0.20 if in_burst else 0.01)
        lat = 300.0 * float(rng.lognormal(0.0, 0.2))
        kw = {"valid": True, "latency_ms": lat, "ts": t}
        trips = g.observe(bursty, error="http_500" if err else None, **kw)
        trips += g.observe(calm, error="http_500" if rng.random() < 0.01 else None, **kw)
        for e in trips:  # before the persistence is learned, a first burst may trip: go on
            g.release(e.arm, ts=t)
            if i >= 5_000:
                late_trips.append(e)
    assert late_trips == []  # once learned, the arm's usual bursts trip nothing
    assert g.arm_health(bursty).err_persist > 0.1 > g.arm_health(calm).err_persist
    run = [
        g.observe(bursty, valid=False, latency_ms=300.0, error="timeout", ts=t + i)
        for i in range(5)
    ]
    assert all(ev == [] for ev in run)  # an ordinary burst for this arm
    outage = []
    for i in range(5, 40):
        outage += g.observe(bursty, valid=False, latency_ms=300.0, error="timeout", ts=t + i)
        if outage:
            break
    assert outage and outage[0].reason in ("error_burst", "error_rate") and i < 5 + 15
    calm_run = []
    for i in range(5):
        calm_run += g.observe(calm, valid=False, latency_ms=300.0, error="timeout", ts=t + i)
    assert [e.reason for e in calm_run] == ["error_burst"]
    assert calm_run[0].evidence["consecutive_errors"] == 5
