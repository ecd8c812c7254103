"""The result of :func:`~routewise.simulations.simulate`: every run, with summaries, the exact
baselines, a JSON form and (through :mod:`~routewise.simulations.report`) plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routewise.reward import Scalarizer
from routewise.simulations.policies import PolicySpec
from routewise.simulations.records import RunRecord
from routewise.simulations.report import write_report
from routewise.simulations.scenario import Event, Scenario

__all__ = ["SimulationResult"]


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
        return write_report(self, Path(out))
