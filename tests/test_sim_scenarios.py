"""Scenarios: named and user files (TOML/YAML), events on the timeline, errors naming the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from routewise.errors import ConfigError
from routewise.reward import get_reward
from routewise.simulations import SCENARIOS, Scenario, SyntheticEnvironment, load_scenario, simulate
from routewise.simulations.outcomes import expected_reward, realize

ENV = SyntheticEnvironment.default()
IDS = [a.id for a in ENV.arms]
GEMINI = "google_genai:gemini-2.5-flash-lite"
GEM = np.array([i.startswith(GEMINI) for i in IDS])


def segment_params(sc: Scenario, rounds: int, at: int, n: int = 2000, mix: bool = True) -> object:
    seg = next(s for s in sc.timeline(rounds, ENV) if s.start <= at < s.stop)
    rng = np.random.default_rng(0)
    _, params = ENV.sample(n, rng, seg.mix if mix else None)
    return seg.effects.apply(params)


def test_named_scenarios() -> None:
    kinds = {name: [e.kind for e in load_scenario(name).events] for name in SCENARIOS}
    assert kinds == {
        "stationary": [],
        "degradation": ["degrade", "recover"],
        "outage": ["outage", "recover"],
        "price-shock": ["price", "price"],
        "mix-shift": ["mix"],
    }
    for name in SCENARIOS:
        sc = load_scenario(name)
        assert sc.rounds == 50_000 and sc.description
        assert sc.timeline(50_000, ENV)[-1].stop == 50_000


def test_degradation_then_recovery_restores_the_environment_exactly() -> None:
    sc = load_scenario("degradation")
    segs = sc.timeline(1000, ENV)
    assert [(s.start, s.stop) for s in segs] == [(0, 400), (400, 750), (750, 1000)]
    before, during, after = (segment_params(sc, 1000, r) for r in (0, 500, 900))
    assert np.allclose(during.lat_mu[:, GEM] - before.lat_mu[:, GEM], np.log(3.0))  # type: ignore[attr-defined]
    drop = before.p_valid - during.p_valid  # type: ignore[attr-defined]
    assert np.all(drop[:, GEM] <= 0.25 + 1e-12) and drop[:, GEM].max() == pytest.approx(0.25)
    assert np.array_equal(drop[:, ~GEM], np.zeros_like(drop[:, ~GEM]))
    for name in ("p_valid", "lat_mu", "cost", "error_rate"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name
    r = get_reward()
    assert (
        expected_reward(during, r)[:, GEM].mean() < expected_reward(before, r)[:, GEM].mean() - 0.1
    )  # type: ignore[arg-type]


def test_outage_fails_calls_with_errors_and_timeouts() -> None:
    sc = load_scenario("outage")
    p = segment_params(sc, 100, 50)
    base = segment_params(sc, 100, 0)
    err = p.error_rate  # type: ignore[attr-defined]
    assert np.allclose(err[:, GEM], 1 - (1 - base.error_rate[:, GEM]) * 0.1)  # type: ignore[attr-defined]
    draws = realize(p, np.random.default_rng(1))  # type: ignore[arg-type]
    k = IDS.index(f"{GEMINI}/transport_compressed")
    kinds = [draws.outcome(i, k).error for i in range(2000)]
    assert 0.85 < np.mean([e is not None for e in kinds]) < 0.95
    assert 0.6 < kinds.count("timeout") / sum(e is not None for e in kinds) < 0.8
    assert {draws.outcome(i, k).latency_ms for i in range(2000) if kinds[i] == "timeout"} == {
        30_000.0
    }
    assert expected_reward(p, get_reward())[:, GEM].max() < 0.1  # type: ignore[arg-type]


def test_price_shock_multiplies_the_cost() -> None:
    sc = load_scenario("price-shock")
    a, b, c = (segment_params(sc, 100, r) for r in (0, 50, 90))
    assert np.allclose(b.cost[:, GEM], 15 * a.cost[:, GEM])  # type: ignore[attr-defined]
    gpt = np.array([i.startswith("openai:gpt-5.4/") for i in IDS])
    assert np.allclose(c.cost[:, gpt], 0.25 * a.cost[:, gpt])  # type: ignore[attr-defined]
    assert np.allclose(c.cost[:, GEM], 15 * a.cost[:, GEM])  # type: ignore[attr-defined]


def test_mix_shift_changes_the_traffic() -> None:
    segs = load_scenario("mix-shift").timeline(1000, ENV)
    assert [(s.start, s.mix) for s in segs] == [(0, "default"), (500, "enterprise")]


USER_TOML = """
name = "llama-flaky"
description = "mine"
rounds = 3000
rate_per_s = 50
reward = "low_latency"
environment = "env.toml"

[[events]]
at = 1000
kind = "degrade"
target = ["ollama:llama-3.3-70b/local_reconstructed", "ollama:llama-3.3-70b/direct_emit"]
latency_factor = 2.0

[[events]]
at = "50%"
kind = "outage"
target = "*"
error_rate = 0.2

[[events]]
at = "90%"
kind = "recover"
target = "*"
"""

USER_YAML = """
name: yaml-one
events:
  - at: "10%"
    kind: mix
    mix: consumer
  - at: 200
    kind: price
    target: openai:gpt-5.4-mini
    factor: 2
"""


def test_user_scenarios_in_toml_and_yaml(tmp_path: Path) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text(
        (Path(__file__).parents[1] / "routewise/simulations/data/environment.toml").read_text()
    )
    f = tmp_path / "mine.toml"
    f.write_text(USER_TOML)
    sc = load_scenario(f)
    assert (sc.name, sc.rounds, sc.rate_per_s, sc.reward) == (
        "llama-flaky",
        3000,
        50.0,
        "low_latency",
    )
    assert isinstance(sc.build_environment(), SyntheticEnvironment)
    segs = sc.timeline(3000, ENV)
    assert [s.start for s in segs] == [0, 1000, 1500, 2700]
    assert segs[2].effects.outage_rate.tolist() == [0.2] * len(IDS)
    assert segs[3].effects.neutral
    y = tmp_path / "mine.yaml"
    y.write_text(USER_YAML)
    sc = load_scenario(y)
    segs = sc.timeline(1000, ENV)
    assert [(s.start, s.mix) for s in segs] == [(0, None), (100, "consumer"), (200, "consumer")]
    res = simulate(sc, ["uniform"], rounds=300, seeds=1)
    assert res.rounds == 300 and [r for r, _ in res.events] == [30, 200]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[[events]]\nat = 10\nkind = 'explode'\ntarget = '*'", "bad.toml: events[0].kind"),
        ("[[events]]\nat = '140%'\nkind = 'recover'\ntarget = '*'", "bad.toml: events[0].at"),
        ("[[events]]\nat = -3\nkind = 'recover'\ntarget = '*'", "bad.toml: events[0].at"),
        (
            "[[events]]\nat = 1\nkind = 'degrade'\ntarget = '*'\nlatency_factor = 0",
            "bad.toml: events[0].latency_factor",
        ),
        (
            "[[events]]\nat = 1\nkind = 'degrade'\ntarget = '*'\nvalidity_drop = 2",
            "bad.toml: events[0].validity_drop",
        ),
        ("[[events]]\nat = 1\nkind = 'price'\ntarget = '*'", "bad.toml: events[0].factor"),
        (
            "[[events]]\nat = 1\nkind = 'outage'\ntarget = '*'\nerror_rate = 0",
            "bad.toml: events[0].error_rate",
        ),
        ("[[events]]\nat = 1\nkind = 'recover'", "bad.toml: events[0].target"),
        (
            "[[events]]\nat = 1\nkind = 'price'\ntarget = '*'\nfactor = 2\nspeed = 3",
            "bad.toml: events[0].speed",
        ),
        ("rounds = 0", "bad.toml: rounds"),
        ("colour = 'red'", "bad.toml: colour"),
    ],
)
def test_bad_scenario_files_name_the_field(tmp_path: Path, body: str, field: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_scenario(f)
    assert err.value.field == field


def test_targets_and_mixes_are_checked_against_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text("[[events]]\nat = 5\nkind = 'recover'\ntarget = 'anthropic:claude'")
    with pytest.raises(ConfigError) as err:
        simulate(load_scenario(f), ["uniform"], rounds=10)
    assert err.value.field == "events[0].target" and "anthropic:claude" in str(err.value)
    f.write_text("[[events]]\nat = 5\nkind = 'mix'\nmix = 'weekend'")
    with pytest.raises(ConfigError, match=r"events\[0\].mix: unknown traffic mix 'weekend'"):
        simulate(load_scenario(f), ["uniform"], rounds=10)
    with pytest.raises(ConfigError, match="neither a named scenario"):
        load_scenario("no-such-scenario")
