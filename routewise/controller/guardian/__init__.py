"""The Guardian: per-arm health, change detection, quarantine, probing and operator overrides.

A bandit's estimates average over the past, so it reacts slowly when a backend degrades. The
Guardian watches every arm's live feedback and acts at once, like a circuit breaker::

    healthy ──trip──► quarantined ──cooldown──► probing ──probe window ok──► healthy
                           ▲                        │
                           └──── probe window bad ──┘   (cooldown doubles: backoff)

    pinned: an operator forces all traffic to one arm (until released).

Checks are small composable objects with one signature (``check(health, obs) -> Trip | None``,
HOUSE_STYLE 8), configured with their thresholds in ``__init__``; the same thresholds judge a
probing arm's finished probe window (``check.probe_verdict(window) -> Trip | None``), so an
arm recovers exactly when every configured check would accept it. The defaults follow the
seed design — latency above 1.2× its baseline, correctness below 0.95× its baseline —
guarded against noise:

* :class:`LatencyCheck` — a one-sided CUSUM (Page 1954) on standardized log-latency residuals
  (observed − expected), designed for a shift of ``log(design_ratio)`` and confirmed by the
  practical rule (recent latency > ``ratio`` × expected).
* :class:`ValidityCheck` — a Bernoulli log-likelihood-ratio CUSUM for a drop of the validity
  rate from its expectation ``p0`` to ``p0 − design_drop``, confirmed by the practical rule
  (recent validity < ``ratio`` × expected).
* :class:`ErrorBurstCheck` — trips at once on ``consecutive`` failures in a row or an error rate
  of ``rate`` over the last ``window`` outcomes (circuit-breaker style).

Baselines are *per request* (:mod:`~routewise.controller.guardian.baseline`): with the
request's feature vector ``x``, the expected log-latency and validity are linear models of
the features, fitted by ridge least squares once an arm has ``max(min_samples, 10·len(x))``
observations and then tracked by normalized LMS, in mini-batches, on observations
``baseline_lag`` steps old (so a change is caught before it leaks into the baseline). A
policy that sends an arm more of the slow or hard requests is not a degradation. Without
``x`` the models reduce to per-arm means.

The expectations the checks use are *calibrated* on held-out evidence, because a linear
model of a nonlinear world can be confident and wrong: the model's predictions are pulled
toward the arm's pooled mean by their held-out calibration slope and, where they are
optimistic about a kind of request the arm has little support for, by that lack of support;
the latency check standardizes with the held-out residual variance (misfit included); the
validity check's evidence is divided by the model's held-out dispersion; no request may be
expected to fail less than half as often as the upper Wilson bound of the arm's pooled
failure rate; and errors are judged by the error checks against the arm's own learned
error persistence, not as invalid answers. The thresholds are set for fewer than
one false quarantine per 100,000 decisions; ``benchmarks/guardian.py --families`` measures
that, and the detection delay, on environment families the Guardian was not tuned on.
All state is plain JSON (snapshots, exact restore), which is why the detectors are written
here rather than taken from river (whose detectors are neither JSON-serializable nor
mergeable).

Modules: :mod:`~routewise.controller.guardian.base` (observation, trip, arm health, probe
window, the ``Check`` protocol), :mod:`~routewise.controller.guardian.checks` (the three
checks), :mod:`~routewise.controller.guardian.baseline` (the context models) and
:mod:`~routewise.controller.guardian.core` (the :class:`Guardian` state machine).

Examples
--------
>>> g = Guardian(min_samples=20)
>>> g.add_arms(["a/direct_emit", "b/direct_emit"])
>>> for i in range(60):
...     _ = g.observe("a/direct_emit", valid=True, latency_ms=100.0 + i % 7, error=None, ts=float(i))
>>> events = []
>>> for i in range(60, 120):
...     events += g.observe("a/direct_emit", valid=True, latency_ms=400.0, error=None, ts=float(i))
>>> events[0].to_state, events[0].reason
('quarantined', 'latency')
>>> g.state("a/direct_emit")
'quarantined'
"""

from routewise.controller.guardian.base import ArmHealth, Check, Observation, ProbeWindow, Trip
from routewise.controller.guardian.checks import (
    ErrorBurstCheck,
    LatencyCheck,
    ValidityCheck,
    default_checks,
)
from routewise.controller.guardian.core import Guardian
from routewise.types import GuardianEvent, HealthState

__all__ = [
    "ArmHealth",
    "Check",
    "ErrorBurstCheck",
    "Guardian",
    "GuardianEvent",
    "HealthState",
    "LatencyCheck",
    "Observation",
    "ProbeWindow",
    "Trip",
    "ValidityCheck",
    "default_checks",
]
