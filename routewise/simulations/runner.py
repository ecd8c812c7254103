"""Run policies through the real :class:`~routewise.Controller` in a simulated environment.

Every round of :func:`simulate` is one production request: ``Controller.decide(context)``,
the environment draws the chosen arm's outcome, ``Controller.feedback(decision_id,
outcome)``. The Controller runs with an in-memory store and an injected clock that advances
by ``1 / rate_per_s`` simulated seconds per round, so anything the Controller does with time
(reward wait, and the Guardian once it exists) sees simulated time.

Randomness: for seed ``s`` the contexts and outcome draws of every chunk of rounds come from
``numpy.random.default_rng((s, segment, chunk, stream))``, so every policy run with seed ``s``
sees the same requests and the same outcome noise (common random numbers — differences between
policies are not sampling luck), and the Controller's policy is seeded with ``s``.

Regret is the exact pseudo-regret against the per-request oracle:
``Σ_t max_k μ(x_t, k) − μ(x_t, a_t)`` with ``μ`` the closed-form expected reward under the
effects in force at round ``t``.

Examples
--------
>>> from routewise.simulations import load_scenario, simulate
>>> res = simulate(load_scenario("stationary"), ["squarecb", "uniform"], rounds=300, seeds=1)
>>> [row["policy"] for row in res.summary()]
['squarecb', 'uniform']
>>> res.runs["squarecb"][0].rounds
300
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from routewise.controller import Controller
from routewise.errors import ConfigError
from routewise.reward import Scalarizer, get_reward
from routewise.simulations.base import Environment
from routewise.simulations.outcomes import (
    FloatArray,
    OutcomeDraws,
    OutcomeParams,
    expected_reward,
    realize,
)
from routewise.simulations.policies import PolicySpec, parse_policy_spec
from routewise.simulations.records import RoundLog, RunRecord
from routewise.simulations.results import SimulationResult
from routewise.simulations.scenario import Scenario, Segment

__all__ = [
    "PolicySpec",
    "Progress",
    "RunRecord",
    "SimulationResult",
    "parse_policy_spec",
    "simulate",
]

#: ``progress(policy, seed, rounds_done_since_last_call)``.
Progress = Callable[[str, int, int], None]

SIM_EPOCH = 1_764_000_000.0  # simulated wall-clock time of round 0 (late Nov 2025)


def _realize_untracked(params: OutcomeParams, rng: np.random.Generator) -> OutcomeDraws:
    """:func:`~routewise.simulations.outcomes.realize`, with tuple rows.

    A chunk's outcome draws are 4 × 2048 row lists that live for the whole chunk. The garbage
    collector tracks lists for good, so they were promoted to its oldest generation and made
    it run full collections of the whole heap (~8 µs per simulated round, more than the
    Guardian costs). Tuples of plain numbers stop being tracked after one look; and with the
    collector paused while the rows are built and converted (no allocation-triggered
    collection can promote the short-lived row lists), no row reaches the old generation.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        draws = realize(params, rng)
        rows = cast(Any, tuple)  # (tuples stand in for the declared lists: read-only access)
        return OutcomeDraws(
            valid=list(map(rows, draws.valid)),
            latency_ms=list(map(rows, draws.latency_ms)),
            cost_usd=list(map(rows, draws.cost_usd)),
            error=list(map(rows, draws.error)),
        )
    finally:
        if paused:
            gc.enable()


class _Run:
    """One (policy, seed) run in progress: the Controller on a simulated clock that advances
    ``1 / rate_per_s`` seconds per round, and the :class:`RoundLog` of what it did."""

    def __init__(
        self,
        env: Environment,
        spec: PolicySpec,
        reward: Scalarizer,
        *,
        seed: int,
        rounds: int,
        rate_per_s: float,
        guardian: bool,
    ) -> None:
        self.arm_index = {a.id: k for k, a in enumerate(env.arms)}
        self.rate_per_s = rate_per_s
        self.guardian = guardian
        self.now = [SIM_EPOCH]
        now = self.now
        self.ctl = Controller(
            arms=env.arms,
            policy=spec.build(seed),
            reward=reward,
            store=None,
            seed=seed,
            features=env.features(),
            clock=lambda: now[0],
            log_events=False,
            guardian=guardian,
            # an in-memory store is never restored from: snapshot once, at close
            snapshot_every=rounds + 1,
        )
        self.log = RoundLog(rounds, len(env.arms))

    def play(
        self, lo: int, contexts: Sequence[Mapping[str, Any]], draws: OutcomeDraws, mu: FloatArray
    ) -> None:
        """Rounds ``lo, lo + 1, …``: decide on each context, feed back the drawn outcome."""
        log, now, arm_index = self.log, self.now, self.arm_index
        decide, feedback = self.ctl.decide, self.ctl.feedback
        dt = 1.0 / self.rate_per_s
        valid, errors, cost_sum = log.valid, log.errors, log.cost_sum
        # per-round results in lists, stored per chunk (numpy item stores are slower)
        picks: list[int] = []
        got: list[float] = []
        latency: list[float] = []
        for j in range(len(contexts)):
            now[0] = SIM_EPOCH + (lo + j) * dt
            d = decide(contexts[j])
            k = arm_index[d.arm.id]
            out = draws.outcome(j, k)
            got.append(feedback(d.decision_id, out).reward)
            picks.append(k)
            latency.append(out.latency_ms)
            if out.error is not None:
                errors += 1
            elif out.valid:
                valid += 1
            cost_sum += out.cost_usd
        log.valid, log.errors, log.cost_sum = valid, errors, cost_sum
        log.add_chunk(lo, mu, picks, got, latency)

    def guardian_events(self) -> list[dict[str, Any]]:
        """The Guardian's health transitions, timed in rounds."""
        if not self.guardian:
            return []
        return [
            {
                "round": round((ev.ts - SIM_EPOCH) * self.rate_per_s),
                "arm": ev.arm,
                "from": ev.from_state,
                "to": ev.to_state,
                "reason": ev.reason,
            }
            for ev in self.ctl.events()
        ]


def run_policy(
    env: Environment,
    segments: Sequence[Segment],
    spec: PolicySpec,
    reward: Scalarizer,
    *,
    seed: int,
    rate_per_s: float = 20.0,
    bins: int = 200,
    chunk: int = 2048,
    guardian: bool = True,
    progress: Progress | None = None,
) -> RunRecord:
    """One run of ``spec`` with ``seed`` over the ``segments`` of a scenario timeline."""
    run = _Run(
        env,
        spec,
        reward,
        seed=seed,
        rounds=segments[-1].stop,
        rate_per_s=rate_per_s,
        guardian=guardian,
    )
    t0 = time.perf_counter()
    try:
        for si, seg in enumerate(segments):
            for ci, lo in enumerate(range(seg.start, seg.stop, chunk)):
                n = min(chunk, seg.stop - lo)
                contexts, params = env.sample(n, np.random.default_rng((seed, si, ci, 0)), seg.mix)
                params = seg.effects.apply(params)
                draws = _realize_untracked(params, np.random.default_rng((seed, si, ci, 1)))
                run.play(lo, contexts, draws, expected_reward(params, reward))
                if progress is not None:
                    progress(spec.name, seed, n)
        health = run.guardian_events()
    finally:
        run.ctl.close()
    elapsed = time.perf_counter() - t0
    return run.log.record(
        policy=spec.name, seed=seed, elapsed_s=elapsed, bins=bins, guardian_events=health
    )


def _scalarizer(spec: str | Mapping[str, Any] | Scalarizer | None) -> Scalarizer:
    r = get_reward(spec)
    if not isinstance(r, Scalarizer):  # pragma: no cover - get_reward returns Scalarizers here
        raise ConfigError("reward", "the simulator needs a Scalarizer reward")
    return r


def _policy_specs(policies: Sequence[str | PolicySpec]) -> list[PolicySpec]:
    specs = [p if isinstance(p, PolicySpec) else parse_policy_spec(p) for p in policies]
    if not specs:
        raise ConfigError("policies", "at least one policy is required")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(
            "policies", f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    return specs


def _seed_list(seeds: int | Sequence[int], seed: int) -> list[int]:
    if isinstance(seeds, int):
        if isinstance(seeds, bool) or seeds < 1:
            raise ConfigError("seeds", f"must be >= 1, got {seeds!r}")
        if seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {seed!r}")
        return list(range(seed, seed + seeds))
    seed_list = [int(s) for s in seeds]
    if not seed_list or min(seed_list) < 0:
        raise ConfigError("seeds", "must be a non-empty list of integers >= 0")
    return seed_list


def _at_least_one(field: str, value: int) -> None:
    if value < 1:
        raise ConfigError(field, f"must be >= 1, got {value!r}")


def _segments(scenario: Scenario, rounds: int, env: Environment) -> list[Segment]:
    """The scenario's timeline, on the environment's default mix unless it sets one."""
    segments = scenario.timeline(rounds, env)
    if segments[0].mix is None and env.default_mix is not None:
        for seg in segments:
            if seg.mix is None:
                seg.mix = env.default_mix
    return segments


def simulate(
    scenario: Scenario,
    policies: Sequence[str | PolicySpec],
    *,
    rounds: int | None = None,
    seeds: int | Sequence[int] = 1,
    seed: int = 0,
    reward: str | Mapping[str, Any] | Scalarizer | None = None,
    environment: Environment | None = None,
    bins: int = 200,
    chunk: int = 2048,
    guardian: bool = True,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run every policy for every seed through the Controller on ``scenario``.

    Parameters
    ----------
    scenario
        From :func:`~routewise.simulations.load_scenario`.
    policies
        Policy specs (``"squarecb"``, ``"linucb:alpha=0.5"``, ``"default"``) or
        :class:`PolicySpec` objects.
    rounds
        Rounds per run (default: the scenario's).
    seeds, seed
        ``seeds`` runs per policy with seeds ``seed, seed + 1, …`` (or an explicit list).
    reward
        Reward preset/weights (default: the scenario's, else ``balanced``).
    environment
        Override the scenario's environment (e.g. one fitted to a trace).
    bins
        Resolution of the curves kept for plots.
    guardian
        Run the Controller with its Guardian (the production default) or without.
    progress
        Called as ``progress(policy, seed, rounds_done)`` after every chunk of rounds.
    """
    specs = _policy_specs(policies)
    n_rounds = scenario.rounds if rounds is None else rounds
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise ConfigError("rounds", f"must be an integer >= 1, got {n_rounds!r}")
    seed_list = _seed_list(seeds, seed)
    _at_least_one("chunk", chunk)
    _at_least_one("bins", bins)
    env = environment if environment is not None else scenario.build_environment()
    scal = _scalarizer(reward if reward is not None else scenario.reward)
    segments = _segments(scenario, n_rounds, env)
    runs = {
        spec.name: [
            run_policy(
                env,
                segments,
                spec,
                scal,
                seed=s,
                rate_per_s=scenario.rate_per_s,
                bins=bins,
                chunk=chunk,
                guardian=guardian,
                progress=progress,
            )
            for s in seed_list
        ]
        for spec in specs
    }
    return SimulationResult(
        scenario=scenario,
        environment=env.describe(),
        arms=[a.id for a in env.arms],
        reward=scal,
        rounds=n_rounds,
        seeds=seed_list,
        policies=specs,
        runs=runs,
        events=scenario.event_rounds(n_rounds),
        guardian=guardian,
    )


def exact_regret(mu: FloatArray, chosen: npt.NDArray[np.int64]) -> float:
    """``Σ_t max_k mu[t, k] − mu[t, chosen[t]]`` (the pseudo-regret used throughout)."""
    rows = np.arange(mu.shape[0])
    return float((mu.max(axis=1) - mu[rows, chosen]).sum())
