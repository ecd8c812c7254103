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
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from routewise.bandits import REGISTRY, Policy, make_policy, split_policy_spec
from routewise.controller import DEFAULT_POLICY, Controller
from routewise.errors import ConfigError, PolicyError
from routewise.reward import Scalarizer, get_reward
from routewise.simulations.base import Environment
from routewise.simulations.outcomes import (
    FloatArray,
    OutcomeDraws,
    OutcomeParams,
    expected_reward,
    realize,
)
from routewise.simulations.scenario import Event, Scenario, Segment

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


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy to simulate: a display name, a registry name and parameters.

    Examples
    --------
    >>> PolicySpec("greedy-ish", "epsilon_greedy", {"epsilon": 0.05}).build(seed=1).epsilon
    0.05
    """

    name: str
    policy: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int) -> Policy:
        return make_policy(self.policy, seed=seed, **self.params)


def parse_policy_spec(spec: str) -> PolicySpec:
    """``"squarecb"``, ``"linucb:alpha=0.3"``, ``"default"`` (the Controller's tuned default).

    Values are read as JSON when they parse (numbers, booleans), else kept as strings.

    Examples
    --------
    >>> parse_policy_spec("linucb:alpha=0.3")
    PolicySpec(name='linucb:alpha=0.3', policy='linucb', params={'alpha': 0.3})
    >>> parse_policy_spec("default").policy
    'squarecb'
    >>> parse_policy_spec("bogus")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: policies: unknown policy 'bogus'; one of default, epsilon_greedy, ...
    """
    text = spec.strip()
    try:
        name, params = split_policy_spec(text)
    except PolicyError as exc:
        raise ConfigError("policies", str(exc).removeprefix("policy: ")) from None
    if name == "default":
        if params:
            raise ConfigError("policies", "'default' takes no parameters (it is the tuned default)")
        return PolicySpec("default", DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1]))
    if name not in REGISTRY:
        raise ConfigError(
            "policies",
            f"unknown policy {name!r}; one of {', '.join(['default', *sorted(REGISTRY)])}",
        )
    if "seed" in params:
        raise ConfigError("policies", f"{text!r}: the seed comes from --seed/--seeds, not the spec")
    try:
        make_policy(name, **params)
    except PolicyError as exc:
        raise ConfigError("policies", f"{text!r}: {exc}") from None
    return PolicySpec(text, name, params)


@dataclass(slots=True)
class RunRecord:
    """What one (policy, seed) run produced: totals and binned curves.

    Examples
    --------
    >>> from routewise.simulations import load_scenario, simulate
    >>> run = simulate(load_scenario("stationary"), ["uniform"], rounds=100, bins=10).runs["uniform"][0]
    >>> len(run.regret_curve), run.best_fixed_regret <= run.uniform_regret
    (10, True)
    """

    policy: str
    seed: int
    rounds: int
    elapsed_s: float
    bin_edges: list[int]
    regret_curve: list[float]
    """Cumulative pseudo-regret at the end of each bin."""
    arm_counts: list[list[int]]
    """Decisions per bin per arm."""
    expected_per_bin: list[float]
    """Mean expected reward of the chosen arms, per bin."""
    oracle_per_bin: list[float]
    """Mean oracle expected reward, per bin."""
    arm_expected_per_bin: list[list[float]]
    """Mean expected reward of every arm, per bin (the fixed-arm baselines over time)."""
    oracle_counts: list[list[int]]
    """How often each arm is the oracle's choice, per bin."""
    reward_sum: float
    expected_sum: float
    oracle_sum: float
    valid: int
    errors: int
    cost_sum: float
    latency_p50_ms: float
    latency_p95_ms: float
    arm_expected_sum: list[float]
    """Σ_t μ(x_t, k) for every arm k (the fixed-arm baselines)."""
    guardian_events: list[dict[str, Any]] = field(default_factory=list)
    """The Guardian's health transitions (``round``, ``arm``, ``from``, ``to``, ``reason``)."""

    @property
    def quarantines(self) -> int:
        return sum(1 for e in self.guardian_events if e["to"] == "quarantined")

    @property
    def regret(self) -> float:
        return self.regret_curve[-1] if self.regret_curve else 0.0

    @property
    def rounds_per_s(self) -> float:
        return self.rounds / self.elapsed_s if self.elapsed_s > 0 else math.inf

    @property
    def best_fixed_arm(self) -> int:
        return int(np.argmax(self.arm_expected_sum))

    @property
    def best_fixed_regret(self) -> float:
        return self.oracle_sum - max(self.arm_expected_sum)

    @property
    def uniform_regret(self) -> float:
        return self.oracle_sum - float(np.mean(self.arm_expected_sum))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "rounds": self.rounds,
            "elapsed_s": self.elapsed_s,
            "rounds_per_s": self.rounds_per_s,
            "regret": self.regret,
            "mean_reward": self.reward_sum / self.rounds,
            "mean_expected_reward": self.expected_sum / self.rounds,
            "oracle_mean_reward": self.oracle_sum / self.rounds,
            "validity_rate": self.valid / self.rounds,
            "error_rate": self.errors / self.rounds,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "cost_per_1k_usd": 1000.0 * self.cost_sum / self.rounds,
            "best_fixed_regret": self.best_fixed_regret,
            "uniform_expected_regret": self.uniform_regret,
            "arm_expected_sum": self.arm_expected_sum,
            "quarantines": self.quarantines,
            "guardian_events": self.guardian_events,
            "curves": {
                "bin_edges": self.bin_edges,
                "regret": self.regret_curve,
                "arm_counts": self.arm_counts,
                "expected_reward": self.expected_per_bin,
                "oracle_reward": self.oracle_per_bin,
                "arm_expected_reward": self.arm_expected_per_bin,
                "oracle_counts": self.oracle_counts,
            },
        }


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


def _bin_edges(rounds: int, bins: int) -> npt.NDArray[np.int64]:
    edges = np.unique(np.linspace(0, rounds, min(bins, rounds) + 1).round().astype(np.int64))
    return edges


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
    arms = env.arms
    arm_index = {a.id: k for k, a in enumerate(arms)}
    k_arms = len(arms)
    rounds = segments[-1].stop
    now = [SIM_EPOCH]
    ctl = Controller(
        arms=arms,
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
    chosen = np.empty(rounds, dtype=np.int64)
    got = np.empty(rounds)
    inst_regret = np.empty(rounds)
    inst_expected = np.empty(rounds)
    inst_oracle = np.empty(rounds)
    latency = np.empty(rounds)
    valid = 0
    errors = 0
    cost_sum = 0.0
    arm_expected = np.zeros(k_arms)
    mu_all = np.empty((rounds, k_arms))
    dt = 1.0 / rate_per_s
    decide, feedback = ctl.decide, ctl.feedback
    t0 = time.perf_counter()
    try:
        for si, seg in enumerate(segments):
            for ci, lo in enumerate(range(seg.start, seg.stop, chunk)):
                n = min(chunk, seg.stop - lo)
                contexts, params = env.sample(n, np.random.default_rng((seed, si, ci, 0)), seg.mix)
                params = seg.effects.apply(params)
                draws = _realize_untracked(params, np.random.default_rng((seed, si, ci, 1)))
                mu = expected_reward(params, reward)
                # per-round results in lists, stored per chunk (numpy item stores are slower)
                picks_l: list[int] = []
                got_l: list[float] = []
                latency_l: list[float] = []
                for j in range(n):
                    now[0] = SIM_EPOCH + (lo + j) * dt
                    d = decide(contexts[j])
                    k = arm_index[d.arm.id]
                    out = draws.outcome(j, k)
                    got_l.append(feedback(d.decision_id, out).reward)
                    picks_l.append(k)
                    latency_l.append(out.latency_ms)
                    if out.error is not None:
                        errors += 1
                    elif out.valid:
                        valid += 1
                    cost_sum += out.cost_usd
                got[lo : lo + n] = got_l
                latency[lo : lo + n] = latency_l
                picks = np.array(picks_l, dtype=np.int64)
                rows = np.arange(n)
                best = mu.max(axis=1)
                chosen[lo : lo + n] = picks
                inst_expected[lo : lo + n] = mu[rows, picks]
                inst_oracle[lo : lo + n] = best
                inst_regret[lo : lo + n] = best - mu[rows, picks]
                arm_expected += mu.sum(axis=0)
                mu_all[lo : lo + n] = mu
                if progress is not None:
                    progress(spec.name, seed, n)
        health = [
            {
                "round": round((ev.ts - SIM_EPOCH) * rate_per_s),
                "arm": ev.arm,
                "from": ev.from_state,
                "to": ev.to_state,
                "reason": ev.reason,
            }
            for ev in (ctl.events() if guardian else [])
        ]
    finally:
        ctl.close()
    elapsed = time.perf_counter() - t0
    edges = _bin_edges(rounds, bins)
    cum = np.cumsum(inst_regret)
    counts = np.zeros((len(edges) - 1, k_arms), dtype=np.int64)
    which = np.searchsorted(edges, np.arange(rounds), side="right") - 1
    np.add.at(counts, (which, chosen), 1)
    sizes = np.diff(edges).astype(np.float64)
    exp_bin = np.bincount(which, weights=inst_expected, minlength=len(sizes)) / sizes
    ora_bin = np.bincount(which, weights=inst_oracle, minlength=len(sizes)) / sizes
    arm_bin = np.add.reduceat(mu_all, edges[:-1], axis=0) / sizes[:, None]
    oracle_counts = np.zeros((len(sizes), k_arms), dtype=np.int64)
    np.add.at(oracle_counts, (which, mu_all.argmax(axis=1)), 1)
    return RunRecord(
        policy=spec.name,
        seed=seed,
        rounds=rounds,
        elapsed_s=elapsed,
        bin_edges=edges.tolist(),
        regret_curve=cum[edges[1:] - 1].tolist(),
        arm_counts=counts.tolist(),
        expected_per_bin=exp_bin.tolist(),
        oracle_per_bin=ora_bin.tolist(),
        arm_expected_per_bin=arm_bin.tolist(),
        oracle_counts=oracle_counts.tolist(),
        reward_sum=float(got.sum()),
        expected_sum=float(inst_expected.sum()),
        oracle_sum=float(inst_oracle.sum()),
        valid=valid,
        errors=errors,
        cost_sum=cost_sum,
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p95_ms=float(np.percentile(latency, 95)),
        arm_expected_sum=arm_expected.tolist(),
        guardian_events=health,
    )


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    sd = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"mean": float(a.mean()), "sd": sd}


@dataclass(slots=True)
class SimulationResult:
    """Every run of a :func:`simulate` call, with summaries, plots and a JSON form.

    Examples
    --------
    >>> from routewise.simulations import load_scenario, simulate
    >>> res = simulate(load_scenario("outage"), ["uniform"], rounds=200, seeds=2)
    >>> res.seeds, [(r, e.kind) for r, e in res.events]
    ([0, 1], [(80, 'outage'), (120, 'recover')])
    >>> sorted(res.to_dict())  # doctest: +NORMALIZE_WHITESPACE
    ['arms', 'baselines', 'environment', 'events', 'guardian', 'policies', 'reward', 'rounds',
     'scenario', 'seeds', 'summary']
    """

    scenario: Scenario
    environment: dict[str, Any]
    arms: list[str]
    reward: Scalarizer
    rounds: int
    seeds: list[int]
    policies: list[PolicySpec]
    runs: dict[str, list[RunRecord]]
    events: list[tuple[int, Event]]
    guardian: bool = True

    def summary(self) -> list[dict[str, Any]]:
        """One row per policy: means (and sd over seeds) of the headline metrics."""
        rows = []
        for spec in self.policies:
            runs = self.runs[spec.name]
            n = self.rounds
            rows.append(
                {
                    "policy": spec.name,
                    "mean_reward": _mean_sd([r.reward_sum / n for r in runs]),
                    "mean_expected_reward": _mean_sd([r.expected_sum / n for r in runs]),
                    "regret": _mean_sd([r.regret for r in runs]),
                    "validity_rate": _mean_sd([r.valid / n for r in runs]),
                    "error_rate": _mean_sd([r.errors / n for r in runs]),
                    "latency_p95_ms": _mean_sd([r.latency_p95_ms for r in runs]),
                    "cost_per_1k_usd": _mean_sd([1000.0 * r.cost_sum / n for r in runs]),
                    "rounds_per_s": _mean_sd([r.rounds_per_s for r in runs]),
                    "quarantines": _mean_sd([float(r.quarantines) for r in runs]),
                }
            )
        return rows

    def baselines(self) -> dict[str, Any]:
        """The oracle's mean reward and the best fixed arm in hindsight (exact, per seed)."""
        first = self.runs[self.policies[0].name]
        best = [r.best_fixed_arm for r in first]
        ids, counts = np.unique(best, return_counts=True)
        return {
            "oracle_mean_reward": _mean_sd([r.oracle_sum / self.rounds for r in first]),
            "best_fixed_arm": self.arms[int(ids[np.argmax(counts)])],
            "best_fixed_arm_per_seed": [self.arms[b] for b in best],
            "best_fixed_regret": _mean_sd([r.best_fixed_regret for r in first]),
            "uniform_expected_regret": _mean_sd([r.uniform_regret for r in first]),
        }

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable results (what ``results.json`` holds)."""
        return {
            "scenario": self.scenario.to_dict(),
            "environment": self.environment,
            "arms": self.arms,
            "reward": self.reward.to_dict(),
            "rounds": self.rounds,
            "seeds": self.seeds,
            "guardian": self.guardian,
            "events": [{"round": r, **e.to_dict()} for r, e in self.events],
            "baselines": self.baselines(),
            "summary": self.summary(),
            "policies": [
                {
                    "name": s.name,
                    "policy": s.policy,
                    "params": s.params,
                    "runs": [r.to_dict() for r in self.runs[s.name]],
                }
                for s in self.policies
            ],
        }

    def write(self, out: str | Path) -> dict[str, Path]:
        """Write ``results.json`` and the PNG plots into directory ``out``; returns the paths."""
        from routewise.simulations.report import write_report

        return write_report(self, Path(out))


def _scalarizer(spec: str | Mapping[str, Any] | Scalarizer | None) -> Scalarizer:
    r = get_reward(spec)
    if not isinstance(r, Scalarizer):  # pragma: no cover - get_reward returns Scalarizers here
        raise ConfigError("reward", "the simulator needs a Scalarizer reward")
    return r


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
    specs = [p if isinstance(p, PolicySpec) else parse_policy_spec(p) for p in policies]
    if not specs:
        raise ConfigError("policies", "at least one policy is required")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(
            "policies", f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    n_rounds = scenario.rounds if rounds is None else rounds
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
        raise ConfigError("rounds", f"must be an integer >= 1, got {n_rounds!r}")
    if isinstance(seeds, int):
        if isinstance(seeds, bool) or seeds < 1:
            raise ConfigError("seeds", f"must be >= 1, got {seeds!r}")
        if seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {seed!r}")
        seed_list = list(range(seed, seed + seeds))
    else:
        seed_list = [int(s) for s in seeds]
        if not seed_list or min(seed_list) < 0:
            raise ConfigError("seeds", "must be a non-empty list of integers >= 0")
    if chunk < 1:
        raise ConfigError("chunk", f"must be >= 1, got {chunk!r}")
    if bins < 1:
        raise ConfigError("bins", f"must be >= 1, got {bins!r}")
    env = environment if environment is not None else scenario.build_environment()
    scal = _scalarizer(reward if reward is not None else scenario.reward)
    segments = scenario.timeline(n_rounds, env)
    if segments[0].mix is None and env.default_mix is not None:
        for seg in segments:
            if seg.mix is None:
                seg.mix = env.default_mix
    runs: dict[str, list[RunRecord]] = {}
    for spec in specs:
        runs[spec.name] = [
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
