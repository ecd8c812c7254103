"""Settings: file format, precedence (overrides > file > env > defaults), clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import routewise as rw
from routewise.config import load_settings

CONFIG = """
backends = ["openai:gpt-5.4", "gemini:flash"]
modes = ["direct_emit", "local_reconstructed"]
exclude = ["gemini:flash/local_reconstructed"]
seed = 11
reward = "low_latency"
[policy]
name = "linucb"
alpha = 0.25
"""


def test_from_config_builds_controller(tmp_path: Path) -> None:
    cfg = tmp_path / "routewise.toml"
    cfg.write_text(f'db = "{tmp_path / "s.db"}"\n' + CONFIG)
    ctl = rw.Controller.from_config(cfg)
    assert [a.id for a in ctl.arms] == [
        "openai:gpt-5.4/direct_emit",
        "openai:gpt-5.4/local_reconstructed",
        "gemini:flash/direct_emit",
    ]
    assert ctl.policy.name == "linucb" and ctl.policy.alpha == 0.25  # type: ignore[attr-defined]
    assert ctl.reward.name == "low_latency"
    assert ctl.seed == 11
    ctl.close()
    assert (tmp_path / "s.db").is_file()


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "routewise.toml"
    cfg.write_text(CONFIG)
    monkeypatch.setenv("ROUTEWISE_SEED", "99")
    monkeypatch.setenv("ROUTEWISE_SNAPSHOT_EVERY", "42")
    s = load_settings(cfg)
    assert s.seed == 11  # file beats env
    assert s.snapshot_every == 42  # env beats default
    assert load_settings(cfg, seed=5).seed == 5  # override beats file
    assert load_settings(None).seed == 99


def test_backends_table_form(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text(
        '[backends."openai:gpt-4o-mini"]\napi_key_env = "OPENAI_API_KEY"\n[backends."ollama:llama3"]\n'
    )
    s = load_settings(cfg)
    arms = s.arm_list()
    assert arms is not None and len(arms) == 6


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("seed = 'abc'", "seed"),
        ("port = 70000", "port"),
        ("colour = 'red'", "colour"),
        ("arms = ['openai:x/json']", "mode"),
        ("durability = 'sometimes'", "durability"),
    ],
)
def test_bad_config_names_field(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text + "\n")
    with pytest.raises(rw.ConfigError) as ei:
        load_settings(cfg)
    assert field in ei.value.field or field in str(ei.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("seed = = 3\n")
    with pytest.raises(rw.ConfigError, match="invalid TOML"):
        load_settings(cfg)
    with pytest.raises(rw.ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_guardian_table(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(
        'arms = ["a:b/direct_emit", "c:d/direct_emit"]\n[guardian]\ncooldown_s = 300\nprobe_share = 0.1\n'
        "[guardian.latency]\nratio = 1.5\n[guardian.validity]\nratio = 0.9\n"
    )
    ctl = rw.Controller.from_config(cfg)
    g = ctl.guardian
    assert g is not None and g.cooldown_s == 300 and g.probe_share == 0.1
    ratios = sorted(getattr(c, "ratio", 0) for c in g.checks)
    assert ratios == [0, 0.9, 1.5]
    cfg.write_text('arms = ["a:b/direct_emit"]\nguardian = false\n')
    assert rw.Controller.from_config(cfg).guardian is None
    cfg.write_text('arms = ["a:b/direct_emit"]\n[guardian]\ncolour = "red"\n')
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller.from_config(cfg)
    assert ei.value.field == "guardian"


def test_a_seed_inside_the_policy_table_is_named(tmp_path: Path) -> None:
    """``[policy] seed = 3`` used to crash with a TypeError (make_policy got seed twice)."""
    cfg = tmp_path / "routewise.toml"
    cfg.write_text(
        'arms = ["a:x/direct_emit", "b:y/direct_emit"]\n[policy]\nname = "linucb"\nseed = 3\n'
    )
    with pytest.raises(rw.ConfigError) as ei:
        rw.Controller.from_config(cfg)
    assert ei.value.field == "policy.seed"
