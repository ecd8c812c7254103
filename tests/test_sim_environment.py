"""The synthetic environment: exact expected rewards, backend × mode interactions, data file."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from routewise.errors import ConfigError
from routewise.reward import get_reward
from routewise.simulations import SyntheticEnvironment
from routewise.simulations.base import Effects
from routewise.simulations.outcomes import OutcomeParams, expected_reward, realize

ENV = SyntheticEnvironment.default()
IDS = [a.id for a in ENV.arms]
OPENAI, MINI = "openai:gpt-5.4", "openai:gpt-5.4-mini"
GEMINI, LLAMA = "google_genai:gemini-2.5-flash-lite", "ollama:llama-3.3-70b"


def col(backend: str, mode: str) -> int:
    return IDS.index(f"{backend}/{mode}")


def ctx(**kw: Any) -> dict[str, Any]:
    base = {
        "task": "extraction",
        "schema_depth": 3,
        "n_fields": 12,
        "input_tokens": 1500,
        "language": "en",
    }
    return {**base, **kw}


@pytest.fixture(scope="module")
def mix_sample() -> tuple[list[dict[str, Any]], OutcomeParams]:
    return ENV.sample(40_000, np.random.default_rng(11))


@pytest.mark.parametrize(
    "reward",
    [
        "balanced",
        "low_latency",
        {"preset": "balanced", "gate": False},  # the ungated formula, errors earn speed/thrift
    ],
)
def test_expected_reward_is_exact_against_monte_carlo_through_the_real_reward(reward: Any) -> None:
    scal = get_reward(reward)
    contexts = [ctx(), ctx(task="summarization", schema_depth=6, n_fields=40, language="zh")]
    params = ENV.params_for(contexts)
    fx = Effects(len(IDS))
    fx.outage_rate[col(GEMINI, "transport_compressed")] = 0.5  # include failures
    fx.outage_timeout_share[:] = 0.5
    params = fx.apply(params)
    exact = expected_reward(params, scal)
    m = 6000
    for i in range(len(contexts)):
        rep = params.select(np.full(m, i))
        draws = realize(rep, np.random.default_rng(i))
        for k in range(len(IDS)):
            rewards = np.array([scal(draws.outcome(j, k)) for j in range(m)])
            se = rewards.std() / np.sqrt(m) + 1e-9
            assert abs(rewards.mean() - exact[i, k]) < 4.5 * se, (i, IDS[k])


def test_no_universal_best_arm_or_mode(
    mix_sample: tuple[list[dict[str, Any]], OutcomeParams],
) -> None:
    _, params = mix_sample
    mu = expected_reward(params, get_reward("balanced"))
    best = mu.argmax(axis=1)
    shares = np.bincount(best, minlength=len(IDS)) / best.size
    assert shares.max() < 0.6
    winners = {IDS[k] for k in np.flatnonzero(shares > 0.02)}
    assert len({w.rpartition("/")[2] for w in winners}) >= 2
    assert len({w.rpartition("/")[0] for w in winners}) >= 3
    # the best fixed arm leaves clearly more on the table than contextual routing would
    assert (mu.max(axis=1) - mu[:, mu.mean(axis=0).argmax()]).mean() > 0.02


def test_llama_loses_much_correctness_in_compressed_mode_on_deep_schemas() -> None:
    shallow, deep = ENV.params_for([ctx(schema_depth=1), ctx(schema_depth=6)]).p_valid
    drop = shallow - deep
    assert drop[col(LLAMA, "transport_compressed")] > 0.4
    assert drop[col(LLAMA, "transport_compressed")] > 3 * drop[col(LLAMA, "local_reconstructed")]
    assert drop[col(LLAMA, "transport_compressed")] > 2 * drop[col(GEMINI, "transport_compressed")]
    assert deep[col(LLAMA, "transport_compressed")] < 0.5


def test_compression_pays_off_most_on_the_gemini_class_backend(
    mix_sample: tuple[list[dict[str, Any]], OutcomeParams],
) -> None:
    _, params = mix_sample
    mu = expected_reward(params, get_reward("balanced"))
    gain = {
        b: float((mu[:, col(b, "transport_compressed")] - mu[:, col(b, "direct_emit")]).mean())
        for b in (OPENAI, MINI, GEMINI, LLAMA)
    }
    assert max(gain, key=gain.__getitem__) == GEMINI and gain[GEMINI] > 0.05
    lat = np.exp(params.lat_mu)
    saved = {
        b: float(
            (1 - lat[:, col(b, "transport_compressed")] / lat[:, col(b, "direct_emit")]).mean()
        )
        for b in (OPENAI, MINI, GEMINI, LLAMA)
    }
    assert max(saved, key=saved.__getitem__) == GEMINI


def test_openai_class_is_strongest_in_direct_emit(
    mix_sample: tuple[list[dict[str, Any]], OutcomeParams],
) -> None:
    _, params = mix_sample
    pv = params.p_valid.mean(axis=0)
    for b in (OPENAI, MINI):
        modes = {
            m: pv[col(b, m)] for m in ("direct_emit", "transport_compressed", "local_reconstructed")
        }
        assert max(modes, key=modes.__getitem__) == "direct_emit"
    assert pv.argmax() == col(OPENAI, "direct_emit")


def test_sampling_is_seeded_and_follows_the_mix() -> None:
    a, pa = ENV.sample(500, np.random.default_rng(3))
    b, pb = ENV.sample(500, np.random.default_rng(3))
    assert a == b and np.array_equal(pa.p_valid, pb.p_valid)
    ent, _ = ENV.sample(5000, np.random.default_rng(3), "enterprise")
    dflt, _ = ENV.sample(5000, np.random.default_rng(3), "default")
    assert (
        np.mean([c["schema_depth"] for c in ent]) > np.mean([c["schema_depth"] for c in dflt]) + 1
    )
    assert set(ENV.mixes) == {"default", "enterprise", "consumer"}
    with pytest.raises(ConfigError, match="unknown traffic mix"):
        ENV.sample(1, np.random.default_rng(0), "nope")


def _spec() -> dict[str, Any]:
    ref = resources.files("routewise.simulations") / "data" / "environment.toml"
    return tomllib.loads(ref.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            lambda s: s["backends"][GEMINI].__setitem__("tokens_per_s", -1),
            f'backends."{GEMINI}".tokens_per_s',
        ),
        (
            lambda s: s["backends"][GEMINI].__setitem__("error_rate", 1.5),
            f'backends."{GEMINI}".error_rate',
        ),
        (lambda s: s["backends"][GEMINI].__setitem__("speed", 1), f'backends."{GEMINI}".speed'),
        (
            lambda s: s["backends"][LLAMA]["modes"].__setitem__("json_mode", {}),
            f'backends."{LLAMA}".modes.json_mode',
        ),
        (
            lambda s: s["backends"][LLAMA]["language"].__setitem__("fr", 0.1),
            f'backends."{LLAMA}".language.fr',
        ),
        (
            lambda s: s["mixes"]["default"]["tasks"].__setitem__("chat", 1.0),
            "mixes.default.tasks.chat",
        ),
        (
            lambda s: s["mixes"]["default"].__setitem__("schema_depth", []),
            "mixes.default.schema_depth",
        ),
        (lambda s: s["tasks"]["extraction"].pop("leaf_tokens"), "tasks.extraction.leaf_tokens"),
        (lambda s: s.__setitem__("colour", "blue"), "colour"),
    ],
)
def test_bad_parameter_files_name_the_field(edit: Any, field: str) -> None:
    spec = _spec()
    edit(spec)
    with pytest.raises(ConfigError) as err:
        SyntheticEnvironment(spec)
    assert err.value.field == field


def test_parameter_file_round_trips_through_yaml(tmp_path: Path) -> None:
    p = tmp_path / "env.yaml"
    p.write_text(yaml.safe_dump(_spec(), sort_keys=False))
    env = SyntheticEnvironment.from_file(p)
    assert [a.id for a in env.arms] == IDS
    c = [ctx(schema_depth=4)]
    assert np.allclose(env.expected_reward(c, get_reward()), ENV.expected_reward(c, get_reward()))
    bad = tmp_path / "env.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="invalid TOML"):
        SyntheticEnvironment.from_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        SyntheticEnvironment.from_file(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"contexts\[0\]"):
        ENV.params_for([{"task": "poetry", "language": "en"}])
