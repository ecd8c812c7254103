"""What :func:`~routewise.simulations.replay` found: per candidate, the estimates with their
bootstrap intervals (and Li et al.'s rejection replay when asked for), and the trace's own
diagnostics.

Examples
--------
>>> from routewise.simulations.ope import Estimate
>>> e = Estimate(0.5, 0.4, 0.6)
>>> res = CandidateResult("half", "static", 950.0, dict.fromkeys(ESTIMATORS, e))
>>> res.to_dict()["estimates"]["dr"]
{'value': 0.5, 'ci_low': 0.4, 'ci_high': 0.6}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from routewise.simulations.ope import ESTIMATORS, Estimate
from routewise.simulations.trace import TraceStats

__all__ = ["CandidateResult", "RejectionResult", "ReplayResult"]


@dataclass(frozen=True, slots=True)
class RejectionResult:
    """Li et al. (2011) replay of a learning policy on a uniformly logged trace: the mean
    reward over the ``accepted`` rounds (those where the policy picked the logged arm).

    Examples
    --------
    >>> RejectionResult(Estimate(0.8, 0.75, 0.85), 120).to_dict()
    {'value': 0.8, 'ci_low': 0.75, 'ci_high': 0.85, 'accepted': 120}
    """

    estimate: Estimate
    accepted: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "accepted": self.accepted}


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """One candidate's estimates (see :func:`~routewise.simulations.replay` for an example)."""

    name: str
    kind: str
    ess: float
    estimates: dict[str, Estimate]
    rejection: RejectionResult | None = None
    unsupported_mass: float = 0.0
    """Static candidates: probability mass on arms the trace never logged (IPS and SNIPS
    count them as reward 0; DM and DR value them with the reward model's pooled fallback)."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "ess": self.ess,
            "estimates": {k: self.estimates[k].to_dict() for k in ESTIMATORS},
        }
        if self.rejection is not None:
            d["rejection"] = self.rejection.to_dict()
        return d


@dataclass(slots=True)
class ReplayResult:
    """What :func:`~routewise.simulations.replay` found; :meth:`to_dict` is the ``--json``
    output (see :mod:`~routewise.simulations.replay` for an example)."""

    n: int
    candidates: list[CandidateResult]
    logged: Estimate
    """Mean reward of the logging policy itself (on-policy, with its bootstrap interval)."""
    reward: str
    arms: list[str]
    uniform: bool
    stats: TraceStats
    skipped: int = 0
    skip_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``{"n": …, "candidates": [{"name", "ess", "estimates": {ips, snips, dm, dr,
        switch_dr: {value, ci_low, ci_high}}}]}`` (plus ``rejection`` when it was asked for)."""
        return {"n": self.n, "candidates": [c.to_dict() for c in self.candidates]}

    def diagnostics(self) -> dict[str, Any]:
        """Reading counts and the first bad lines (for stderr)."""
        return {
            **self.stats.to_dict(),
            "skipped": self.skipped,
            "skip_errors": list(self.skip_errors),
            "reward": self.reward,
            "arms": list(self.arms),
            "uniform_logging": self.uniform,
            "logged": self.logged.to_dict(),
        }
