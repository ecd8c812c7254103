"""What one simulated run produced: per-round results (:class:`RoundLog`) summarized into a
:class:`RunRecord` (totals and curves binned for plots).

Examples
--------
>>> import numpy as np
>>> log = RoundLog(rounds=4, k_arms=2)
>>> mu = np.array([[0.9, 0.1], [0.9, 0.1]])
>>> log.add_chunk(0, mu, picks=[0, 1], rewards=[1.0, 0.0], latency_ms=[100.0, 200.0])
>>> log.add_chunk(2, mu, picks=[0, 0], rewards=[1.0, 1.0], latency_ms=[100.0, 100.0])
>>> rec = log.record(policy="p", seed=0, elapsed_s=1.0, bins=2, guardian_events=[])
>>> rec.regret_curve, rec.arm_counts
([0.8, 0.8], [[1, 1], [2, 0]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.simulations.outcomes import FloatArray

__all__ = ["RoundLog", "RunRecord"]


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


def _bin_edges(rounds: int, bins: int) -> npt.NDArray[np.int64]:
    edges = np.unique(np.linspace(0, rounds, min(bins, rounds) + 1).round().astype(np.int64))
    return edges


class RoundLog:
    """Per-round results of one run, filled a chunk of rounds at a time (see the module
    docstring for an example); :meth:`record` bins them into a :class:`RunRecord`.

    ``valid``, ``errors`` and ``cost_sum`` are running totals the caller adds to round by
    round (in round order, so the float sum does not depend on the chunking).
    """

    def __init__(self, rounds: int, k_arms: int) -> None:
        self.chosen = np.empty(rounds, dtype=np.int64)
        self.got = np.empty(rounds)
        self.inst_regret = np.empty(rounds)
        self.inst_expected = np.empty(rounds)
        self.inst_oracle = np.empty(rounds)
        self.latency = np.empty(rounds)
        self.arm_expected = np.zeros(k_arms)
        self.mu_all = np.empty((rounds, k_arms))
        self.valid = 0
        self.errors = 0
        self.cost_sum = 0.0

    def add_chunk(
        self,
        lo: int,
        mu: FloatArray,
        picks: Sequence[int],
        rewards: Sequence[float],
        latency_ms: Sequence[float],
    ) -> None:
        """Rounds ``lo, lo + 1, …``: every arm's expected reward ``mu`` (n × K), the arms
        picked, the rewards received and the latencies."""
        n = len(picks)
        self.got[lo : lo + n] = rewards
        self.latency[lo : lo + n] = latency_ms
        chosen = np.array(picks, dtype=np.int64)
        rows = np.arange(n)
        best = mu.max(axis=1)
        self.chosen[lo : lo + n] = chosen
        self.inst_expected[lo : lo + n] = mu[rows, chosen]
        self.inst_oracle[lo : lo + n] = best
        self.inst_regret[lo : lo + n] = best - mu[rows, chosen]
        self.arm_expected += mu.sum(axis=0)
        self.mu_all[lo : lo + n] = mu

    def record(
        self,
        *,
        policy: str,
        seed: int,
        elapsed_s: float,
        bins: int,
        guardian_events: list[dict[str, Any]],
    ) -> RunRecord:
        """The run's totals, with its curves in (at most) ``bins`` bins."""
        rounds, k_arms = self.mu_all.shape
        edges = _bin_edges(rounds, bins)
        cum = np.cumsum(self.inst_regret)
        counts = np.zeros((len(edges) - 1, k_arms), dtype=np.int64)
        which = np.searchsorted(edges, np.arange(rounds), side="right") - 1
        np.add.at(counts, (which, self.chosen), 1)
        sizes = np.diff(edges).astype(np.float64)
        exp_bin = np.bincount(which, weights=self.inst_expected, minlength=len(sizes)) / sizes
        ora_bin = np.bincount(which, weights=self.inst_oracle, minlength=len(sizes)) / sizes
        arm_bin = np.add.reduceat(self.mu_all, edges[:-1], axis=0) / sizes[:, None]
        oracle_counts = np.zeros((len(sizes), k_arms), dtype=np.int64)
        np.add.at(oracle_counts, (which, self.mu_all.argmax(axis=1)), 1)
        return RunRecord(
            policy=policy,
            seed=seed,
            rounds=rounds,
            elapsed_s=elapsed_s,
            bin_edges=edges.tolist(),
            regret_curve=cum[edges[1:] - 1].tolist(),
            arm_counts=counts.tolist(),
            expected_per_bin=exp_bin.tolist(),
            oracle_per_bin=ora_bin.tolist(),
            arm_expected_per_bin=arm_bin.tolist(),
            oracle_counts=oracle_counts.tolist(),
            reward_sum=float(self.got.sum()),
            expected_sum=float(self.inst_expected.sum()),
            oracle_sum=float(self.inst_oracle.sum()),
            valid=self.valid,
            errors=self.errors,
            cost_sum=self.cost_sum,
            latency_p50_ms=float(np.percentile(self.latency, 50)),
            latency_p95_ms=float(np.percentile(self.latency, 95)),
            arm_expected_sum=self.arm_expected.tolist(),
            guardian_events=guardian_events,
        )
