"""Acceptance (issue 14): a routing simulation served through three replicas round-robin
reaches a regret within 10% of one replica's, on the same seeds.

The environment is the ``stationary`` scenario of :mod:`routewise.simulations` (the one
tests/test_sim_regret.py uses), Guardian off as there. Every round: a context, a decision, the
chosen arm's drawn outcome, its feedback. The contexts and outcome draws of seed ``s`` are
exactly :func:`~routewise.simulations.simulate`'s (same generator keys), so every run with
seed ``s`` sees the same requests and the same noise (common random numbers), and the regret
is the same exact pseudo-regret against the per-request oracle.

* **one replica**: one Controller on an in-memory store (checked to reproduce ``simulate``'s
  regret to the last bit: the loop here is the simulator's);
* **three replicas**: three in-process Controllers, each with its own
  :class:`~routewise.state.postgres.PostgresStore` on one fresh database; round ``t`` is
  decided on replica ``t % 3`` and its feedback goes to replica ``(t + 1) % 3``. Each replica
  learns only from the shared log, on its follower thread (woken by LISTEN/NOTIFY), so it
  decides on a policy that may lag the log by a few records — the realistic condition; nothing
  forces a catch-up between rounds. At the end all three are caught up and must hold the same
  policy.

**Noise.** Even on the same requests, a run's regret depends on its exploration draws, and
replicas draw differently from one controller (three generators, a policy that lags by a
record or two), so two set-ups that learn equally well differ by luck. Measured at 3,000
rounds: one controller's regret over 8 policy seeds on the same requests has a standard
deviation of 5-8% of its mean with ``linucb``, 11-17% with ``squarecb``. A 10% bound on the
mean of three paired runs would then fail from luck alone ~20% of the time with ``squarecb``
and ~3% with ``linucb``. So the test uses ``linucb``, and the one-replica side is, per seed,
the mean over :data:`REFERENCE_POLICY_SEEDS` policy seeds (the same seed first; ~1 s each):
the ratio's standard deviation is then ~4%, a false failure ~0.5%. The same-seed one-replica
regret is reported too. ``benchmarks/replicas.py --learning`` prints the comparison as a
table (it runs :func:`compare`, for any policy).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pytest

import routewise as rw
from routewise.reward import Scalarizer, get_reward
from routewise.simulations import load_scenario, parse_policy_spec, simulate
from routewise.simulations.base import Environment
from routewise.simulations.outcomes import OutcomeDraws, expected_reward, realize
from routewise.state.postgres import PostgresStore

SCENARIO = "stationary"
POLICY = "linucb"
ROUNDS = 3_000
SEEDS = (0, 1, 2)
REFERENCE_POLICY_SEEDS = 8  # one-replica runs per seed: policy seeds s, s + 1000, …
REPLICAS = 3
CHUNK = 2048  # simulate()'s default: the generator keys depend on it
TOLERANCE = 1.10


@dataclass
class Round:
    """One request: its context, every arm's drawn outcome and expected reward ``mu``."""

    context: dict[str, Any]
    draws: OutcomeDraws
    index: int
    mu: np.ndarray

    def outcome(self, k: int) -> rw.Outcome:
        return self.draws.outcome(self.index, k)


def rounds_of(
    env: Environment, reward: Scalarizer, seed: int, rounds: int = ROUNDS
) -> Iterator[Round]:
    """The requests ``simulate(load_scenario(SCENARIO), …, seeds=[seed])`` plays, in order."""
    for si, seg in enumerate(load_scenario(SCENARIO).timeline(rounds, env)):
        mix = seg.mix if seg.mix is not None else env.default_mix
        for ci, lo in enumerate(range(seg.start, seg.stop, CHUNK)):
            n = min(CHUNK, seg.stop - lo)
            contexts, params = env.sample(n, np.random.default_rng((seed, si, ci, 0)), mix)
            params = seg.effects.apply(params)
            draws = realize(params, np.random.default_rng((seed, si, ci, 1)))
            mu = expected_reward(params, reward)
            for j in range(n):
                yield Round(contexts[j], draws, j, mu[j])


@dataclass
class RunResult:
    """A run's regret and duration, and, through replicas, how far behind the shared log the
    deciding replica was at each decision (records appended but not applied by it yet)."""

    regret: float
    seconds: float
    behind: list[int] = field(default_factory=list)

    @property
    def behind_mean(self) -> float:
        return float(np.mean(self.behind)) if self.behind else 0.0

    @property
    def behind_max(self) -> int:
        return max(self.behind, default=0)


def _world() -> tuple[Environment, Scalarizer]:
    scenario = load_scenario(SCENARIO)
    reward = get_reward(scenario.reward)
    assert isinstance(reward, Scalarizer)
    return scenario.build_environment(), reward


def _controller(
    env: Environment, reward: Scalarizer, policy: str, seed: int, store: Any
) -> rw.Controller:
    return rw.Controller(
        arms=env.arms,
        policy=parse_policy_spec(policy).build(seed),
        reward=reward,
        store=store,
        seed=seed,
        features=env.features(),
        log_events=False,
        guardian=False,
    )


def play(
    ctls: Sequence[rw.Controller], env: Environment, reward: Scalarizer, seed: int, rounds: int
) -> RunResult:
    """Round ``t``: decide on ``ctls[t % n]``, feed back on ``ctls[(t + 1) % n]``."""
    arm_index = {a.id: k for k, a in enumerate(env.arms)}
    n = len(ctls)
    regret, behind = 0.0, []
    t0 = time.perf_counter()
    for t, rnd in enumerate(rounds_of(env, reward, seed, rounds)):
        ctl = ctls[t % n]
        if n > 1:  # every round appended a decision and a feedback: seqs 1..2t so far
            behind.append(2 * t - int((ctl.replication() or {})["applied_seq"]))
        d = ctl.decide(rnd.context)
        k = arm_index[d.arm.id]
        ctls[(t + 1) % n].feedback(d.decision_id, rnd.outcome(k))
        regret += float(rnd.mu.max() - rnd.mu[k])
    return RunResult(regret, time.perf_counter() - t0, behind)


def one_replica(
    seed: int, rounds: int = ROUNDS, policy: str = POLICY, policy_seed: int | None = None
) -> RunResult:
    """One Controller on an in-memory store, on seed ``seed``'s requests (its policy seeded
    with ``policy_seed``, default ``seed``)."""
    env, reward = _world()
    ps = seed if policy_seed is None else policy_seed
    with _controller(env, reward, policy, ps, None) as ctl:
        return play([ctl], env, reward, seed, rounds)


def _scores(ctl: rw.Controller, contexts: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(r.arm.id, r.expected_reward) for c in contexts for r in ctl.best_policy(c)]


def _assert_same_policy(ctls: Sequence[rw.Controller], probe: Sequence[dict[str, Any]]) -> None:
    ref = _scores(ctls[0], probe)
    for ctl in ctls[1:]:
        for (arm_a, m_a), (arm_b, m_b) in zip(ref, _scores(ctl, probe), strict=True):
            assert arm_a == arm_b
            assert m_a == pytest.approx(m_b, rel=1e-9, abs=1e-12)


def replicas(pg_url: str, seed: int, rounds: int = ROUNDS, policy: str = POLICY) -> RunResult:
    """Three Controllers, each with its own PostgresStore on ``pg_url`` (an empty database):
    decisions round-robin, each feedback to the next replica. At the end every replica has
    applied the whole log and they hold the same policy."""
    env, reward = _world()
    stores = [PostgresStore(pg_url) for _ in range(REPLICAS)]
    ctls: list[rw.Controller] = []
    try:
        for store in stores:
            ctls.append(_controller(env, reward, policy, seed, store))
        result = play(ctls, env, reward, seed, rounds)
        for ctl in ctls:
            ctl.catch_up()
        applied = {int((c.replication() or {})["applied_seq"]) for c in ctls}
        assert applied == {2 * rounds}, applied
        probe = [r.context for r in islice(rounds_of(env, reward, seed + 1000, 20), 20)]
        _assert_same_policy(ctls, probe)
        return result
    finally:
        for ctl in ctls:
            ctl.close()
        for store in stores:
            store.close()


def compare(
    pg_url_for: Callable[[int], str],
    seeds: Sequence[int] = SEEDS,
    rounds: int = ROUNDS,
    policy: str = POLICY,
    reference_seeds: int = REFERENCE_POLICY_SEEDS,
) -> list[dict[str, Any]]:
    """Per seed ``s``: ``one`` (one replica, policy seed ``s``), ``reference`` (one replica
    with policy seeds ``s, s + 1000, …``: ``reference_seeds`` :class:`RunResult`) and
    ``three`` (three replicas on the empty database ``pg_url_for(s)``, policy seed ``s``)."""
    rows = []
    for s in seeds:
        ref = [one_replica(s, rounds, policy, s + 1000 * j) for j in range(reference_seeds)]
        three = replicas(pg_url_for(s), s, rounds, policy)
        rows.append({"seed": s, "one": ref[0], "reference": ref, "three": three})
    return rows


def test_the_loop_is_the_simulators() -> None:
    """The one-replica loop reproduces ``simulate``'s regret exactly (same requests, same
    draws, same Controller), so the comparison below is against the simulator's number."""
    res = simulate(load_scenario(SCENARIO), [POLICY], rounds=500, seeds=[0], guardian=False)
    assert one_replica(0, 500).regret == pytest.approx(res.runs[POLICY][0].regret, rel=1e-12)


@pytest.fixture()
def pg_urls(pg_url: str, pg_admin_url: str) -> Iterator[Callable[[int], str]]:
    """An empty database per seed: ``pg_url`` for the first, new ones (dropped after) for
    the others."""
    import psycopg

    server = pg_url.rsplit("/", 1)[0]
    made: list[str] = []

    def url_for(seed: int) -> str:
        if not made and seed == SEEDS[0]:
            made.append("")
            return pg_url
        name = f"rw_{secrets.token_hex(6)}"
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{server}/{name}"

    yield url_for
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        for name in filter(None, made):
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_three_replicas_round_robin_learn_as_well_as_one(
    pg_urls: Callable[[int], str],
) -> None:
    rows = compare(pg_urls)
    reference = float(np.mean([np.mean([r.regret for r in row["reference"]]) for row in rows]))
    three = float(np.mean([row["three"].regret for row in rows]))
    detail = [
        {
            "seed": row["seed"],
            "one (same seed)": round(row["one"].regret, 2),
            "one (policy seeds)": [round(r.regret, 1) for r in row["reference"]],
            "three": round(row["three"].regret, 2),
            "behind (mean, max)": (round(row["three"].behind_mean, 2), row["three"].behind_max),
        }
        for row in rows
    ]
    assert three <= TOLERANCE * reference, (three, reference, detail)
    # and each replicated run learned: within the range one replica reaches on its requests
    # (a uniform router's regret here is several times higher)
    for row in rows:
        worst = max(r.regret for r in row["reference"])
        assert row["three"].regret < 1.25 * worst, detail
