"""Bounded memory as a contract (issue 13, D1 and D8): every structure that grows with input
has a bound, a defined behaviour past it, and each hit is counted (``Controller.bound_hits``,
``/metrics``) and logged once.

D1: one context carrying tens of thousands of new keys made the featurizer keep a record per
key forever (and the store a copy of the context). D8: decisions that never get feedback were
kept in memory forever."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

import routewise as rw
from routewise.config import RoutewiseSettings
from routewise.controller.features import Featurizer
from routewise.server import create_app
from routewise.state.memory import MemoryStore

ARMS = ["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"]
OK = rw.Outcome(valid=True, latency_ms=300.0, cost_usd=0.0)
STATE_BYTES = 1_000_000  # a to_state JSON bound that a few thousand keys stay far below
# the defaults (checked against routewise.controller.bounds below; the D1 and D8 tests import
# nothing new, so they also run — and fail — on the version before the bounds)
DEFAULT_MAX_CONTEXT_KEYS = 256
DEFAULT_MAX_VALUE_CHARS = 1_024
DEFAULT_MAX_FEATURE_KEYS = 4_096
DEFAULT_MAX_PENDING = 100_000
BOUNDS = ["max_context_keys", "max_value_chars", "max_feature_keys", "max_dim", "max_pending"]


def _new_keys(n: int, tag: str) -> dict[str, Any]:
    """``n`` keys never seen before, mixed numeric / categorical / boolean values."""
    out: dict[str, Any] = {}
    for i in range(n):
        key = f"{tag}_{i}_{secrets.token_hex(4)}"
        out[key] = (i, f"v{i}", i % 2 == 0)[i % 3]
    return out


def _state_bytes(f: Featurizer) -> int:
    return len(json.dumps(f.to_state()))


# ------------------------------------------------------------------------ D1: the featurizer
def test_d1_contexts_of_thousands_of_new_keys_leave_the_featurizer_bounded() -> None:
    """Defaults: 50 contexts of 5,000 new keys each. Before: every key got a record (250,000
    of them, a state of many MB); now each such context is refused, and the state is as
    small as it was."""
    f = Featurizer()
    for n in range(50):
        try:
            f.learn(_new_keys(5_000, f"c{n}"))
        except rw.InvalidContext as exc:
            assert exc.key == "<context>" and "max_context_keys" in exc.reason
    assert len(f.to_state()["features"]) <= DEFAULT_MAX_FEATURE_KEYS
    assert _state_bytes(f) < STATE_BYTES


def test_d1_remembered_keys_stay_under_max_feature_keys() -> None:
    """With contexts of 5,000 keys allowed, the featurizer still remembers at most
    ``max_feature_keys`` keys; the rest are validated, ignored and counted."""
    f = Featurizer(max_context_keys=5_000)
    for n in range(50):
        x = f.transform(_new_keys(5_000, f"c{n}"))
        assert len(x) <= f.max_dim
    assert f.keys == DEFAULT_MAX_FEATURE_KEYS
    assert len(f.to_state()["features"]) == DEFAULT_MAX_FEATURE_KEYS
    assert _state_bytes(f) < STATE_BYTES
    hits = f.hits.as_dict()
    assert hits["max_feature_keys"] == 50 * 5_000 - DEFAULT_MAX_FEATURE_KEYS
    assert hits["max_dim"] > 0


def test_ignored_keys_are_still_validated() -> None:
    f = Featurizer(max_feature_keys=1)
    f.learn({"a": 1.0})
    with pytest.raises(rw.InvalidContext, match="must be finite"):
        f.learn({"b": float("nan")})
    with pytest.raises(rw.InvalidContext, match="nested"):
        f.learn({"b": [1, 2]})
    assert f.keys == 1 and f.hits.as_dict()["max_feature_keys"] == 0  # refused: not counted


def test_too_many_keys_is_refused_before_any_state_changes() -> None:
    f = Featurizer(max_context_keys=3)
    f.learn({"a": 1.0, "b": "x"})
    before = f.to_state()
    with pytest.raises(rw.InvalidContext) as info:
        f.transform({"a": 2.0, "b": "y", "c": True, "d": 4})
    assert info.value.key == "<context>"
    assert info.value.reason == "has 4 keys; at most 3 are allowed (max_context_keys)"
    assert f.to_state() == before
    assert f.hits.as_dict()["max_context_keys"] == 1


@pytest.mark.parametrize(
    ("context", "what"),
    [
        ({"ok": 1, "k" * 2_000: 1}, "key"),  # a new key
        ({"ok": 1, "new": "v" * 2_000}, "value"),  # a new key's string value
        ({"ok": 1, "lang": "v" * 2_000}, "value"),  # a known categorical key
    ],
)
def test_long_keys_and_values_are_refused(context: dict[str, Any], what: str) -> None:
    f = Featurizer(max_value_chars=1_000)
    f.learn({"lang": "en"})
    before = f.to_state()
    with pytest.raises(rw.InvalidContext) as info:
        f.learn(context)
    assert info.value.reason == (
        f"the {what} has 2000 characters; at most 1000 are allowed (max_value_chars)"
    )
    assert len(info.value.key) <= 60  # a long key is shortened in the error
    assert f.to_state() == before
    assert f.hits.as_dict()["max_value_chars"] == 1


def test_categorical_values_past_max_dim_keep_no_record() -> None:
    f = Featurizer(max_dim=4)
    for i in range(1_000):
        f.learn({"user": f"u{i}"})
    state = f.to_state()
    (user,) = state["features"]
    assert len(user["values"]) == 2  # bias, user=__other__, 2 values: the vector is full
    assert f.dim == 4
    assert f.transform({"user": "u999"}, learn=False)[1] == 1.0  # __other__
    assert f.hits.as_dict()["max_dim"] == 1_000 - 2


def test_bounded_featurizer_is_deterministic_and_round_trips() -> None:
    contexts = [
        {"n": float(i), "cat": f"c{i % 7}", f"k{i}": i % 3 == 0, "big": i * 1e3} for i in range(300)
    ]
    kw: dict[str, Any] = {"max_feature_keys": 40, "max_dim": 24}
    a, b = Featurizer(**kw), Featurizer(**kw)
    for ctx in contexts:
        a.transform(ctx)
        b.learn(ctx)
    assert a.to_state() == b.to_state()
    assert a.keys == 40 and a.hits.as_dict() == b.hits.as_dict()
    c = Featurizer.from_state(json.loads(json.dumps(a.to_state())), max_feature_keys=40)
    assert c.to_state() == a.to_state()
    probe = {"n": 3.5, "cat": "c2", "k3": True, "never": 1}
    assert (c.transform(probe) == a.transform(probe)).all()


def test_a_bloated_state_from_an_older_version_is_trimmed_on_restore() -> None:
    """A state holding more keys than ``max_feature_keys`` (as the featurizer wrote before
    the bound) loads: every key with a column stays, the vector is unchanged."""
    loose = Featurizer(max_feature_keys=100_000, max_context_keys=10_000)
    loose.learn(_new_keys(6_000, "old"))
    state = json.loads(json.dumps(loose.to_state()))
    f = Featurizer.from_state(state)
    assert f.keys == DEFAULT_MAX_FEATURE_KEYS
    assert f.feature_names == loose.feature_names
    assert f.hits.as_dict()["max_feature_keys"] == 6_000 - DEFAULT_MAX_FEATURE_KEYS
    probe = {k: v for k, v in list(state_keys(loose).items())[:50]}
    assert (f.transform(probe, learn=False) == loose.transform(probe, learn=False)).all()


def state_keys(f: Featurizer) -> dict[str, Any]:
    """A context that sets every remembered key with a column to a value of its type."""
    out: dict[str, Any] = {}
    for rec in f.to_state()["features"]:
        if rec["kind"] == "numeric" and rec["col"] is not None:
            out[rec["key"]] = 1.0
        elif rec["kind"] == "boolean" and rec["col"] is not None:
            out[rec["key"]] = True
        elif rec["kind"] == "categorical" and rec["values"]:
            out[rec["key"]] = next(iter(rec["values"]))
    return out


def test_bad_bounds_are_config_errors() -> None:
    for name in ("max_feature_keys", "max_context_keys", "max_value_chars"):
        with pytest.raises(rw.ConfigError, match=name):
            Featurizer(**{name: 0})
    with pytest.raises(rw.ConfigError, match="max_feature_keys: 1 is less than the 2 declared"):
        Featurizer({"features": {"a": "numeric", "b": "boolean"}}, max_feature_keys=1)
    with pytest.raises(rw.ConfigError, match="max_pending: must be an integer >= 1, got 0"):
        rw.Controller(arms=ARMS, max_pending=0)


# ------------------------------------------------------------------------ D1: the controller
def test_d1_a_huge_context_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    with rw.Controller(arms=ARMS, store=tmp_path / "s.db", seed=0) as ctl:
        ctl.decide({"task": "qa"})
        seq, state = ctl.store.max_seq(), ctl.featurizer.to_state()
        with pytest.raises(rw.InvalidContext, match="has 70000 keys"):
            ctl.decide(_new_keys(70_000, "hostile"))
        assert ctl.store.max_seq() == seq and ctl.featurizer.to_state() == state
        assert ctl.bound_hits()["max_context_keys"] == 1


def test_decisions_logged_before_the_bounds_still_replay(tmp_path: Path) -> None:
    """A store whose log holds a context over today's bounds (written by an older version, or
    under looser settings) opens; that context is not learned, its refusal is counted."""
    store = MemoryStore()
    loose = rw.Controller(arms=ARMS, store=store, seed=0, max_context_keys=10_000)
    d = loose.decide(_new_keys(5_000, "old"))
    loose.decide({"task": "qa"})
    again = rw.Controller(store=store, read_only=True)  # replays the whole log
    assert again.bound_hits()["max_context_keys"] == 1
    assert again.featurizer.keys == 1
    assert loose.feedback(d.decision_id, OK).reward > 0


# ------------------------------------------------------------------------- D8: pending
def test_d8_decide_only_traffic_keeps_pending_bounded() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, max_pending=1_000, guardian=False)
    ids = [ctl.decide({"task": "qa", "n": i % 10}).decision_id for i in range(5_000)]
    assert len(ctl._pending) <= 1_000
    assert ctl.bound_hits()["max_pending"] == 4_000
    first = ctl.feedback(ids[0], OK)  # left memory: served from the store's record
    assert not first.duplicate and not first.defaulted
    assert ctl.status().feedbacks == 1
    assert ctl.feedback(ids[0], OK).duplicate
    assert ctl.status().pending == 4_999  # still awaiting feedback, if no longer in memory


def test_evicted_decisions_learn_the_default_reward() -> None:
    clock = [1_000.0]
    ctl = rw.Controller(
        arms=ARMS,
        seed=0,
        max_pending=10,
        reward_wait_s=3_600,
        default_reward=0.25,
        clock=lambda: clock[0],
        guardian=False,
    )
    ids = [ctl.decide({"task": "qa"}).decision_id for _ in range(30)]
    assert len(ctl._pending) == 10 and ctl.bound_hits()["max_pending"] == 20
    st = ctl.status()
    assert st.feedbacks == 20 and st.pending == 10
    assert [ctl.store.get_feedback(i).defaulted for i in ids[:20]] == [True] * 20  # type: ignore[union-attr]
    late = ctl.feedback(ids[0], OK)  # within the wait: the default was learned early
    assert late.duplicate and late.defaulted and late.reward == 0.25
    clock[0] += 7_200
    with pytest.raises(rw.FeedbackTooLate):
        ctl.feedback(ids[1], OK)  # past the wait: too late, as before


def test_restart_replay_keeps_the_bound_and_learns_the_same(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    kw: dict[str, Any] = {"max_pending": 50, "reward_wait_s": 3_600, "default_reward": 0.0}
    live = rw.Controller(arms=ARMS, store=db, seed=1, guardian=False, **kw)
    ids = [live.decide({"task": "qa", "n": i % 5}).decision_id for i in range(300)]
    for did in ids[-20:]:
        live.feedback(did, OK)
    live.store.flush()
    replayed = rw.Controller(store=db, read_only=True, **kw)  # no snapshot yet: full replay
    assert len(replayed._pending) <= 50 and len(live._pending) <= 50
    assert sorted(replayed._pending) == sorted(live._pending)
    learned = {k: v for k, v in live.policy.to_state().items() if k != "rng"}  # (draws)
    assert {k: v for k, v in replayed.policy.to_state().items() if k != "rng"} == learned
    assert replayed.status() == live.status()
    live.close()
    reopened = rw.Controller(store=db, max_pending=10)  # a lowered bound holds on restart
    assert len(reopened._pending) <= 10
    first = reopened.feedback(ids[0], OK)  # the live bound learned its default reward
    assert first.duplicate and first.defaulted
    dropped = reopened.feedback(ids[250], OK)  # pending, but out of memory after the restart
    assert not dropped.duplicate and not dropped.defaulted
    reopened.close()


def test_restart_without_default_reward_drops_from_memory_only() -> None:
    store = MemoryStore()
    live = rw.Controller(arms=ARMS, store=store, seed=0, max_pending=20, guardian=False)
    ids = [live.decide({"task": "qa"}).decision_id for _ in range(200)]
    again = rw.Controller(store=store, max_pending=20, guardian=False)
    assert len(again._pending) == 20 and again.bound_hits()["max_pending"] == 180
    r = again.feedback(ids[0], OK)
    assert not r.defaulted and again.status().feedbacks == 1


def test_shared_store_replicas_keep_the_bound(pg_url: str) -> None:
    """On a shared (PostgreSQL) store the follower applies decisions from the log: the bound
    holds there too, and the default reward of an evicted decision goes through the log."""
    from routewise.state.postgres import PostgresStore

    kw: dict[str, Any] = {"seed": 2, "log_events": False, "guardian": False}
    a = rw.Controller(arms=ARMS, store=PostgresStore(pg_url), max_pending=20, **kw)
    b = rw.Controller(
        arms=ARMS,
        store=PostgresStore(pg_url),
        max_pending=20,
        reward_wait_s=3_600,
        default_reward=0.0,
        **kw,
    )
    try:
        ids = [a.decide({"task": "qa"}).decision_id for _ in range(100)]
        for ctl in (a, b, a, b):
            ctl.catch_up()
        assert len(a._pending) <= 20 and len(b._pending) <= 20
        assert a.bound_hits()["max_pending"] >= 80
        # b appended the default reward of each decision it evicted; both learn it from the log
        assert a.status().feedbacks == b.status().feedbacks == 80
        assert a.feedback(ids[0], OK).duplicate
    finally:
        for ctl in (a, b):
            ctl.close()
            ctl.store.close()


# ------------------------------------------------------------------- counted, logged, exported
def test_each_bound_is_logged_once() -> None:
    with capture_logs() as logs:
        ctl = rw.Controller(arms=ARMS, seed=0, max_pending=2, max_context_keys=3)
        for _ in range(5):
            ctl.decide({"task": "qa"})
            with pytest.raises(rw.InvalidContext):
                ctl.decide({"a": 1, "b": 2, "c": 3, "d": 4})
    hits = [e for e in logs if e["event"] == "bound.hit"]
    assert sorted(e["bound"] for e in hits) == ["max_context_keys", "max_pending"]
    assert all(e["log_level"] == "warning" and "limit" in e for e in hits)
    assert ctl.bound_hits()["max_pending"] == 3 and ctl.bound_hits()["max_context_keys"] == 5
    assert set(ctl.bound_hits()) == set(BOUNDS)


@pytest.mark.anyio
async def test_metrics_export_the_bound_hits() -> None:
    ctl = rw.Controller(arms=ARMS, seed=0, max_context_keys=2)
    app = create_app(ctl)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rw") as api:
        r = await api.post("/v1/decide", json={"context": {"a": 1, "b": 2, "c": 3}})
        assert r.status_code == 422
        body = r.json()
        assert body["error"] == "InvalidContext" and body["field"] == "context"
        assert body["reason"] == "has 3 keys; at most 2 are allowed (max_context_keys)"
        text = (await api.get("/metrics")).text
    assert 'routewise_bound_hits_total{bound="max_context_keys"} 1.0' in text
    for bound in BOUNDS:
        assert f'routewise_bound_hits_total{{bound="{bound}"}}' in text
    ctl.close()


@pytest.fixture()
def env_bounds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ROUTEWISE_MAX_PENDING", "7")
    monkeypatch.setenv("ROUTEWISE_MAX_FEATURE_KEYS", "9")
    yield


def test_settings_carry_the_bounds(env_bounds: None) -> None:
    s = RoutewiseSettings(arms=ARMS, max_context_keys=5, max_value_chars=64)
    ctl = rw.Controller.from_settings(s)
    assert ctl.max_pending == 7 and ctl.featurizer.max_feature_keys == 9
    assert ctl.featurizer.max_context_keys == 5 and ctl.featurizer.max_value_chars == 64
    with pytest.raises(rw.ConfigError, match="max_pending"):
        rw.Controller.from_config(None, max_pending=0)


def test_settings_defaults_are_the_library_defaults() -> None:
    from routewise.controller import bounds

    assert list(bounds.BOUNDS) == BOUNDS
    assert (
        bounds.DEFAULT_MAX_CONTEXT_KEYS,
        bounds.DEFAULT_MAX_VALUE_CHARS,
        bounds.DEFAULT_MAX_FEATURE_KEYS,
        bounds.DEFAULT_MAX_PENDING,
    ) == (
        DEFAULT_MAX_CONTEXT_KEYS,
        DEFAULT_MAX_VALUE_CHARS,
        DEFAULT_MAX_FEATURE_KEYS,
        DEFAULT_MAX_PENDING,
    )
    d = RoutewiseSettings()
    assert (d.max_context_keys, d.max_value_chars, d.max_feature_keys, d.max_pending) == (
        DEFAULT_MAX_CONTEXT_KEYS,
        DEFAULT_MAX_VALUE_CHARS,
        DEFAULT_MAX_FEATURE_KEYS,
        DEFAULT_MAX_PENDING,
    )
