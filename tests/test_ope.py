"""Off-policy estimators: brute-force agreement (Hypothesis), interval coverage, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routewise.errors import ConfigError
from routewise.simulations import ope


# ----------------------------------------------------------------------- brute force
def brute(
    reward: list[float],
    action: list[int],
    pscore: list[float],
    action_dist: list[list[float]],
    q_hat: list[list[float]],
    tau: float,
    clip: float,
) -> dict[str, float]:
    """The OBP definitions, written out round by round with the full distributions."""
    n = len(reward)
    ips = snips_num = snips_den = dm = dr = sdr = 0.0
    for i in range(n):
        a = action[i]
        w = action_dist[i][a] / pscore[i]
        wc = min(w, clip)
        value = sum(action_dist[i][k] * q_hat[i][k] for k in range(len(q_hat[i])))
        ips += wc * reward[i]
        snips_num += w * reward[i]
        snips_den += w
        dm += value
        dr += value + wc * (reward[i] - q_hat[i][a])
        sdr += value + (w if w <= tau else 0.0) * (reward[i] - q_hat[i][a])
    return {
        "ips": ips / n,
        "snips": snips_num / snips_den if snips_den > 0 else 0.0,
        "dm": dm / n,
        "dr": dr / n,
        "switch_dr": sdr / n,
    }


@st.composite
def logged_data(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 25))
    k = draw(st.integers(1, 5))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    positive = st.floats(0.01, 1.0, allow_nan=False)

    def dist() -> list[float]:
        w = draw(st.lists(positive, min_size=k, max_size=k))
        s = sum(w)
        return [x / s for x in w]

    logging = [dist() for _ in range(n)]
    target = []
    for _ in range(n):
        if draw(st.booleans()):
            target.append(dist())
        else:  # a deterministic target policy: mostly zero weights
            one = [0.0] * k
            one[draw(st.integers(0, k - 1))] = 1.0
            target.append(one)
    action = [draw(st.integers(0, k - 1)) for _ in range(n)]
    return {
        "reward": draw(st.lists(unit, min_size=n, max_size=n)),
        "action": action,
        "pscore": [logging[i][action[i]] for i in range(n)],
        "action_dist": target,
        "q_hat": [draw(st.lists(unit, min_size=k, max_size=k)) for _ in range(n)],
        "tau": draw(st.floats(0.5, 50.0)),
        "clip": draw(st.sampled_from([math.inf, 1.0, 3.0, 20.0])),
    }


@settings(max_examples=200, deadline=None)
@given(logged_data())
def test_estimators_match_brute_force(data: dict[str, object]) -> None:
    reward = np.asarray(data["reward"])
    action = np.asarray(data["action"])
    pscore = np.asarray(data["pscore"])
    dist = np.asarray(data["action_dist"])
    q = np.asarray(data["q_hat"])
    tau, clip = float(data["tau"]), float(data["clip"])  # type: ignore[arg-type]
    rows = np.arange(reward.shape[0])
    target_prob = dist[rows, action]
    q_logged = q[rows, action]
    target_value = (dist * q).sum(axis=1)
    want = brute(
        data["reward"],
        data["action"],
        data["pscore"],
        data["action_dist"],
        data["q_hat"],
        tau,
        clip,  # type: ignore[arg-type]
    )
    got = {
        "ips": ope.ips(reward, pscore, target_prob, clip=clip),
        "snips": ope.snips(reward, pscore, target_prob),
        "dm": ope.dm(target_value),
        "dr": ope.dr(reward, pscore, target_prob, q_logged, target_value, clip=clip),
        "switch_dr": ope.switch_dr(reward, pscore, target_prob, q_logged, target_value, tau=tau),
    }
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    # evaluate() shares the same definitions (clip applies to IPS and DR only)
    out = ope.evaluate(
        reward, pscore, target_prob, q_logged, target_value, tau=tau, clip=clip, n_boot=20
    )
    for k, v in want.items():
        assert out["estimates"][k].value == pytest.approx(v, rel=1e-9, abs=1e-12), k
    w = target_prob / pscore
    kish = w.sum() ** 2 / (w * w).sum() if (w * w).sum() > 0 else 0.0
    assert out["ess"] == pytest.approx(kish) == pytest.approx(ope.ess(pscore, target_prob))


@settings(max_examples=50, deadline=None)
@given(logged_data(), st.integers(0, 2**32 - 1))
def test_intervals_bracket_the_estimate_and_are_seeded(data: dict[str, object], seed: int) -> None:
    reward = np.asarray(data["reward"])
    pscore = np.asarray(data["pscore"])
    rows = np.arange(reward.shape[0])
    target_prob = np.asarray(data["action_dist"])[rows, np.asarray(data["action"])]
    a = ope.ips_interval(reward, pscore, target_prob, n_boot=50, seed=seed)
    b = ope.ips_interval(reward, pscore, target_prob, n_boot=50, seed=seed)
    assert a == b
    assert a.value == pytest.approx(ope.ips(reward, pscore, target_prob))
    assert a.ci_low <= a.ci_high
    assert min(a.ci_low, a.value) >= -1e-9 and a.ci_high >= -1e-9


# --------------------------------------------------------------------------- coverage
K, X = 4, 5
Q_TRUE = np.array(
    [
        [0.9, 0.5, 0.2, 0.6],
        [0.3, 0.8, 0.4, 0.5],
        [0.6, 0.6, 0.7, 0.1],
        [0.2, 0.3, 0.9, 0.4],
        [0.5, 0.1, 0.5, 0.8],
    ]
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


PI_B = _softmax(
    np.array(
        [
            [0.5, 0.0, -0.5, 0.2],
            [0.0, 0.3, 0.0, -0.2],
            [0.1, -0.4, 0.6, 0.0],
            [-0.3, 0.2, 0.4, 0.0],
            [0.2, 0.0, -0.1, 0.5],
        ]
    )
)
PI_E = _softmax(3.0 * Q_TRUE)  # a better-than-logging target policy
V_TRUE = float((PI_E * Q_TRUE).sum(axis=1).mean())  # contexts are uniform over the 5 values


def _simulated_log(seed: int, n: int = 3000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, X, n)
    u = rng.random(n)[:, None]
    a = (u > np.cumsum(PI_B[x], axis=1)).sum(axis=1)
    r = (rng.random(n) < Q_TRUE[x, a]).astype(float)
    q_hat = Q_TRUE[x] + 0.15  # a biased reward model: DM is off, DR must not be
    return r, PI_B[x, a], PI_E[x, a], q_hat[np.arange(n), a], (PI_E[x] * q_hat).sum(axis=1)


def test_dr_and_snips_intervals_cover_the_true_value_in_90_percent_of_seeds() -> None:
    seeds = range(200)
    hits = {"dr": 0, "snips": 0, "ips": 0, "dm": 0}
    for s in seeds:
        r, p, t, q, v = _simulated_log(s)
        out = ope.evaluate(r, p, t, q, v, n_boot=400, seed=s)["estimates"]
        for k in hits:
            e = out[k]
            hits[k] += e.ci_low <= V_TRUE <= e.ci_high
    # nominal 95%; measured on seeds 100–599: DR 96.4%, SNIPS 96.0%, IPS 96.6%
    assert hits["dr"] >= 180, hits
    assert hits["snips"] >= 180, hits
    assert hits["ips"] >= 180, hits
    assert hits["dm"] <= 20, hits  # the biased model: DM's interval does not cover


def test_m_out_of_n_interval_matches_the_full_bootstrap() -> None:
    r, p, t, q, v = _simulated_log(7, n=20_000)
    full = ope.dr_interval(r, p, t, q, v, n_boot=300, seed=1, max_draws=10**9)
    sub = ope.dr_interval(r, p, t, q, v, n_boot=300, seed=1, max_draws=300 * 4000)
    assert sub.value == full.value
    width_full = full.ci_high - full.ci_low
    assert sub.ci_high - sub.ci_low == pytest.approx(width_full, rel=0.25)
    assert sub.ci_low < full.value < sub.ci_high


def test_ess_extremes() -> None:
    n = 50
    assert ope.ess(np.full(n, 0.5), np.full(n, 0.5)) == pytest.approx(n)
    t = np.zeros(n)
    t[3] = 1.0
    assert ope.ess(np.full(n, 0.5), t) == pytest.approx(1.0)
    assert ope.ess(np.full(n, 0.5), np.zeros(n)) == 0.0


# -------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pscore": [0.5, 0.0]}, "pscore[1]"),
        ({"pscore": [0.5, 1.5]}, "pscore[1]"),
        ({"target_prob": [0.5, -0.1]}, "target_prob[1]"),
        ({"reward": [1.0, float("nan")]}, "reward[1]"),
        ({"reward": [1.0]}, "reward"),
        ({"reward": [[1.0, 0.0]]}, "reward"),
        ({"reward": []}, "reward"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "reward": [1.0, 0.0],
        "pscore": [0.5, 0.5],
        "target_prob": [1.0, 0.0],
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        ope.ips(**args)  # type: ignore[arg-type]
    assert err.value.field in (field, "pscore", "target_prob")
    assert err.value.field == field or field == "reward"


def test_bad_settings() -> None:
    r, p, t = [1.0, 0.0], [0.5, 0.5], [1.0, 0.0]
    with pytest.raises(ConfigError, match="tau"):
        ope.switch_dr(r, p, t, [0.5, 0.5], [0.5, 0.5], tau=0)
    with pytest.raises(ConfigError, match="clip"):
        ope.ips(r, p, t, clip=-1)
    with pytest.raises(ConfigError, match="n_boot"):
        ope.ips_interval(r, p, t, n_boot=1)
    with pytest.raises(ConfigError, match="alpha"):
        ope.snips_interval(r, p, t, alpha=1.5)
    with pytest.raises(ConfigError, match="q_logged"):
        ope.evaluate(r, p, t, q_logged=[0.1, 0.2])


def test_companions_agree_with_point_estimates() -> None:
    r, p, t, q, v = _simulated_log(3, n=500)
    assert ope.snips_interval(r, p, t, n_boot=50).value == pytest.approx(ope.snips(r, p, t))
    assert ope.dm_interval(v, n_boot=50).value == pytest.approx(ope.dm(v))
    assert ope.switch_dr_interval(r, p, t, q, v, tau=2.0, n_boot=50).value == pytest.approx(
        ope.switch_dr(r, p, t, q, v, tau=2.0)
    )
    # Switch-DR interpolates: tau → ∞ is DR, tau below every weight is DM
    assert ope.switch_dr(r, p, t, q, v, tau=1e9) == pytest.approx(ope.dr(r, p, t, q, v))
    assert ope.switch_dr(r, p, t, q, v, tau=1e-9) == pytest.approx(ope.dm(v))
