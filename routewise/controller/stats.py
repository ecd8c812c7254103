"""Per-arm running statistics for ``Controller.status()``.

Counts and sums are exact; latency percentiles come from a log-bucketed histogram (bucket
ratio 1.02, so a reported percentile is within ±1 % of the exact one). Everything is plain
JSON (snapshots) and mergeable by addition (replicas), which is why this is not a river
``stats.Quantile`` (P², not serializable to JSON nor mergeable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routewise.types import wire

__all__ = ["ArmStats", "LatencyHistogram"]

_RATIO = 1.02
_LOG_RATIO = math.log(_RATIO)
_MIN_MS = 0.01  # everything below lands in bucket 0
_LOG_MIN_MS = math.log(_MIN_MS)
_N_BUCKETS = (math.ceil(math.log(1e7 / _MIN_MS) / _LOG_RATIO)) + 1  # up to ~2.8 hours


class LatencyHistogram:
    """Log-bucketed latency histogram with approximate quantiles.

    Examples
    --------
    >>> h = LatencyHistogram()
    >>> for v in range(1, 1001):
    ...     h.add(float(v))
    >>> abs(h.quantile(0.5) - 500) / 500 < 0.02
    True
    >>> h.add(1.797693134862316e306)  # huge but finite: the top bucket, no overflow
    >>> h.count
    1001
    """

    __slots__ = ("_counts", "_n")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._n = 0

    def add(self, value_ms: float) -> None:
        if value_ms <= _MIN_MS:
            b = 0
        else:
            # log(v) - log(min), not log(v / min): the quotient overflows to inf near 1e306
            b = int((math.log(value_ms) - _LOG_MIN_MS) / _LOG_RATIO) + 1
            if b > _N_BUCKETS - 1:
                b = _N_BUCKETS - 1
        counts = self._counts
        counts[b] = counts.get(b, 0) + 1
        self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (geometric middle of its bucket), ``None`` when empty."""
        if self._n == 0:
            return None
        keys = sorted(self._counts)
        cum = np.cumsum([self._counts[k] for k in keys])
        pos = int(np.searchsorted(cum, q * self._n, side="left"))
        b = keys[min(pos, len(keys) - 1)]
        if b == 0:
            return _MIN_MS
        lo = _MIN_MS * _RATIO ** (b - 1)
        return lo * math.sqrt(_RATIO)

    def to_state(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(self._counts.items())}

    @classmethod
    def from_state(cls, state: dict[str, int]) -> LatencyHistogram:
        h = cls()
        h._counts = {int(k): int(v) for k, v in state.items()}
        h._n = sum(h._counts.values())
        return h


@dataclass
class ArmStats:
    """Running outcome statistics of one arm."""

    decisions: int = 0
    feedbacks: int = 0
    reward_sum: float = 0.0
    valid: int = 0
    errors: int = 0
    defaulted: int = 0
    cost_sum: float = 0.0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def observe(self, outcome: dict[str, Any] | None, reward: float) -> None:
        self.feedbacks += 1
        self.reward_sum += reward
        if outcome is None:
            self.defaulted += 1
            return
        if outcome.get("error") is not None:
            self.errors += 1
        elif outcome.get("valid"):
            self.valid += 1
        self.cost_sum += float(outcome["cost_usd"])
        self.latency.add(float(outcome["latency_ms"]))

    def summary(self) -> wire.ArmStats:
        """The arm's row of :class:`~routewise.types.Status` (without its health)."""
        n_out = self.feedbacks - self.defaulted
        return {
            "decisions": self.decisions,
            "feedbacks": self.feedbacks,
            "mean_reward": self.reward_sum / self.feedbacks if self.feedbacks else None,
            "validity": self.valid / n_out if n_out else None,
            "error_rate": self.errors / n_out if n_out else None,
            "latency_p50_ms": self.latency.quantile(0.50),
            "latency_p95_ms": self.latency.quantile(0.95),
            "latency_p99_ms": self.latency.quantile(0.99),
            "cost_usd_total": self.cost_sum,
            "cost_usd_mean": self.cost_sum / n_out if n_out else None,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "feedbacks": self.feedbacks,
            "reward_sum": self.reward_sum,
            "valid": self.valid,
            "errors": self.errors,
            "defaulted": self.defaulted,
            "cost_sum": self.cost_sum,
            "latency": self.latency.to_state(),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ArmStats:
        return cls(
            decisions=int(s["decisions"]),
            feedbacks=int(s["feedbacks"]),
            reward_sum=float(s["reward_sum"]),
            valid=int(s["valid"]),
            errors=int(s["errors"]),
            defaulted=int(s["defaulted"]),
            cost_sum=float(s["cost_sum"]),
            latency=LatencyHistogram.from_state(s["latency"]),
        )
