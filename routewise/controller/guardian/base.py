"""The Guardian's vocabulary: an outcome (:class:`Observation`), a check's verdict
(:class:`Trip`), an arm's running health statistics (:class:`ArmHealth`), a finished probe
window (:class:`ProbeWindow`) and the :class:`Check` protocol every health check follows.

Examples
--------
>>> h = ArmHealth()
>>> h.state, h.base_ready
('healthy', False)
>>> ArmHealth.from_state(h.to_state()).to_state() == h.to_state()
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from routewise.bandits.ridge import pack_array, unpack_array

__all__ = ["ArmHealth", "Check", "Observation", "ProbeWindow", "Trip"]


@dataclass(slots=True)
class Observation:
    """One outcome as the Guardian sees it (``log_latency``: ``log(max(latency_ms, 0.01))``,
    computed once by the Guardian for every check)."""

    valid: bool
    latency_ms: float
    error: str | None
    ts: float
    log_latency: float = 0.0

    def __post_init__(self) -> None:
        if self.log_latency == 0.0:
            self.log_latency = math.log(max(self.latency_ms, 0.01))


@dataclass(slots=True, frozen=True)
class Trip:
    """A check's verdict that an arm degraded, with the numbers that tripped it."""

    reason: str
    evidence: dict[str, float]


@dataclass
class ArmHealth:
    """Running health statistics of one arm (plain JSON via :meth:`to_state`)."""

    state: str = "healthy"
    n: int = 0  # observations since the last (re)baseline
    # baselines (established after min_samples observations; see the baseline module)
    base_ready: bool = False
    base_loglat: float = 0.0  # the arm's pooled mean log-latency and validity
    base_valid: float = 0.0
    base_loglat_var: float = 0.0  # held-out variance of log-latency residuals (misfit included)
    lat_sd: float = 0.01  # its square root (at least 0.01), what the latency check divides by
    base_n: float = 0.0  # effective sample size behind the baseline (caps at 1/slow_alpha)
    # context models: expected log-latency and validity are linear in the request features,
    # so a policy that shifts which requests an arm gets does not look like a degradation
    # rows: expected log-latency, expected validity (float64; lists "w_lat"/"w_val" in JSON)
    w: Any = field(default_factory=lambda: np.zeros((2, 0)))
    # second moments of the features over the arm's recent traffic (support), their inverses
    m2: Any = field(default_factory=lambda: np.zeros(0))
    inv_m2: Any = field(default_factory=lambda: np.zeros(0))
    d_eff: float = 0.0  # features seen (the mean diagonal leverage of a typical request)
    # held-out calibration: [E[(pred − base)(outcome − base)], E[(pred − base)²]] per model,
    # the slopes they give, and E[(y − p)²], E[p(1 − p)] of the calibrated validity
    cal_lat: list[float] = field(default_factory=lambda: [0.0, 0.0])
    cal_val: list[float] = field(default_factory=lambda: [0.0, 0.0])
    kappa_lat: float = 1.0
    kappa_val: float = 1.0
    val_sq: float = 0.0
    val_pq: float = 0.0
    val_ceiling: float = 0.999  # the highest validity a request may be expected to have
    val_disp: float = 1.0  # their ratio, in [1, 4]: the validity model's held-out dispersion
    # the observation being checked: the models' raw predictions, the calibrated
    # expectations and their standard-error margins
    raw_loglat: float = 0.0
    raw_valid: float = 0.0
    exp_loglat: float = 0.0
    exp_valid: float = 0.0
    lat_margin: float = 0.0
    val_margin: float = 0.0
    fit_n: float = 0.0  # observations behind the warm-up fit
    # (features, log-latency | None, valid, raw log-latency and validity predictions); tuples
    # of numbers and an array, which the garbage collector stops tracking, so a long lag does
    # not feed full collections
    lag: list[tuple[Any, float | None, float, float, float]] = field(default_factory=list)
    # error-free observations collected for the warm-up fit (kept in `lag` until then)
    warm_n: int = 0
    # recent (fast EWMA) estimates; ewma_var: an EWMA's variance per unit of noise variance
    # (α / (2 − α) for the Guardian's fast_alpha α)
    ewma_var: float = 0.05 / 1.95
    recent_loglat: float = 0.0
    recent_valid: float = 1.0
    # change detectors
    cusum_lat: float = 0.0
    cusum_valid: float = 0.0
    # circuit breaker
    consecutive_errors: int = 0
    recent_errors: list[int] = field(default_factory=list)  # the last 64 outcomes: 1 = error
    recent_err_n: int = 0  # their sum
    # P(error | previous error), learned from the lagged healthy history (error persistence)
    err_persist: float = 0.0
    lag_last_err: bool = False  # whether the last lagged outcome learned from was an error
    # its decayed counts: errors and outcomes learned from, pairs after an error, and of those
    # pairs the ones that were errors again
    err_n: float = 0.0
    obs_n: float = 0.0
    pairs_n: float = 0.0
    persist_n: float = 0.0
    # quarantine / probing bookkeeping
    until: float = 0.0
    trips: int = 0
    probe_n: int = 0
    probe_valid: int = 0
    probe_errors: int = 0
    probe_loglat_sum: float = 0.0  # sum of log-latency residuals (observed − expected)
    probe_valid_resid_sum: float = 0.0
    probe_exp_valid_sum: float = 0.0

    def reset_detectors(self) -> None:
        """Start the change detectors' evidence over: both CUSUMs and the error counters
        (on a trip, a capped trip, a failed probe, the start of probing and a release)."""
        self.cusum_lat = self.cusum_valid = 0.0
        self.consecutive_errors = 0
        self.recent_errors = []
        self.recent_err_n = 0

    def start_probe(self) -> None:
        """Open a new probe window (empty counters, fresh detectors)."""
        self.probe_n = self.probe_valid = self.probe_errors = 0
        self.probe_loglat_sum = self.probe_valid_resid_sum = self.probe_exp_valid_sum = 0.0
        self.reset_detectors()

    def record_probe(self, ll: float, y: float, is_err: bool) -> None:
        """Add one probe outcome (log-latency ``ll``, validity ``y``) to the probe window,
        as residuals against the expectations of the current observation."""
        self.probe_n += 1
        self.probe_valid += int(y)
        self.probe_errors += int(is_err)
        if self.base_ready:
            if not is_err:
                self.probe_loglat_sum += ll - self.exp_loglat
            self.probe_valid_resid_sum += y - self.exp_valid
            self.probe_exp_valid_sum += self.exp_valid

    def to_state(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        del d["w"]
        d["w_lat"] = [float(v) for v in self.w[0]]
        d["w_val"] = [float(v) for v in self.w[1]]
        # arrays are packed (base64 float64: exact, and cheap to snapshot every 1000 feedbacks)
        d["m2"] = [float(v) for v in self.m2]
        del d["inv_m2"]
        d["cal_lat"] = list(self.cal_lat)
        d["cal_val"] = list(self.cal_val)
        width = max((len(r[0]) for r in self.lag), default=0)
        xs = np.zeros((len(self.lag), width))
        for i, r in enumerate(self.lag):
            xs[i, : len(r[0])] = r[0]
        d["lag"] = {
            "x": pack_array(xs),
            "len": [len(r[0]) for r in self.lag],
            "ll": [r[1] for r in self.lag],
            "y": [r[2] for r in self.lag],
            "pl": [r[3] for r in self.lag],
            "pv": [r[4] for r in self.lag],
        }
        d["recent_errors"] = list(self.recent_errors)
        if math.isinf(d["until"]):
            d["until"] = None  # strict JSON has no infinity: quarantined until released
        return d

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ArmHealth:
        """The inverse of :meth:`to_state`; also reads the states of older releases (whose
        baselines had no calibration: they start from "trust the model", ``κ = 1``)."""
        known = {f.name for f in fields(cls)} - {"w", "m2", "inv_m2", "lag"}
        h = cls(**{k: v for k, v in s.items() if k in known})
        h.recent_err_n = sum(h.recent_errors)
        h.lat_sd = math.sqrt(max(h.base_loglat_var, 1e-4))
        h.w = np.array([s["w_lat"], s["w_val"]], dtype=np.float64).reshape(2, -1)
        d = h.w.shape[1]
        if "m2" in s:
            h.m2 = np.array(s["m2"], dtype=np.float64)
        else:  # an older state: every feature typical
            h.m2 = np.ones(d)
            h.d_eff = float(d)
            h.base_loglat = float(h.w[0, 0]) if d else 0.0
        h.inv_m2 = 1.0 / h.m2 if len(h.m2) else h.m2.copy()
        lag = s["lag"]
        xs = unpack_array(lag["x"])
        n = len(lag["len"])
        pl = lag.get("pl") or [
            float(h.w[0, : lag["len"][i]].dot(xs[i, : lag["len"][i]])) if d else 0.0
            for i in range(n)
        ]
        pv = lag.get("pv") or [
            float(h.w[1, : lag["len"][i]].dot(xs[i, : lag["len"][i]])) if d else 0.0
            for i in range(n)
        ]
        h.lag = [
            (xs[i, :k].copy(), ll, y, a, b)
            for i, (k, ll, y, a, b) in enumerate(
                zip(lag["len"], lag["ll"], lag["y"], pl, pv, strict=True)
            )
        ]
        return h


@dataclass(slots=True, frozen=True)
class ProbeWindow:
    """A finished probe window of one arm, measured against the arm's (pre-change) baseline.

    ``loglat_excess`` is the mean log-latency residual (observed − expected) of the
    error-free probes (infinite when every probe failed), ``expected_validity`` the mean
    validity the baseline expects for the probed requests and ``validity_shortfall`` the mean
    validity residual, negated. Without a baseline (``base_ready`` false) the last two are 0.

    Examples
    --------
    >>> h = ArmHealth(probe_n=20, probe_valid=18, probe_errors=1, base_ready=True,
    ...               probe_loglat_sum=4.75, probe_valid_resid_sum=-0.2, probe_exp_valid_sum=19.0)
    >>> w = ProbeWindow.of(h)
    >>> w.loglat_excess, w.expected_validity, w.validity_shortfall, w.error_rate
    (0.25, 0.95, 0.01, 0.05)
    """

    n: int
    valid: int
    errors: int
    base_ready: bool
    loglat_excess: float
    expected_validity: float
    validity_shortfall: float

    @classmethod
    def of(cls, h: ArmHealth) -> ProbeWindow:
        """The window ``h`` collected (``h.probe_n >= 1``)."""
        ok_n = h.probe_n - h.probe_errors
        return cls(
            n=h.probe_n,
            valid=h.probe_valid,
            errors=h.probe_errors,
            base_ready=h.base_ready,
            loglat_excess=h.probe_loglat_sum / ok_n if ok_n else math.inf,
            expected_validity=h.probe_exp_valid_sum / h.probe_n if h.base_ready else 0.0,
            validity_shortfall=-h.probe_valid_resid_sum / h.probe_n if h.base_ready else 0.0,
        )

    @property
    def validity(self) -> float:
        return self.valid / self.n

    @property
    def error_rate(self) -> float:
        return self.errors / self.n

    def evidence(self) -> dict[str, Any]:
        """The window's numbers, as the probe events report them."""
        return {
            "probe_n": self.n,
            "validity": round(self.validity, 4),
            "expected_validity": round(self.expected_validity, 4),
            "error_rate": round(self.error_rate, 4),
            "latency_ratio": (
                round(math.exp(self.loglat_excess), 3) if self.n > self.errors else None
            ),
        }


class Check(Protocol):
    """A composable health check, configured in ``__init__`` with its own thresholds.

    ``__call__`` looks at an arm's health after each observation of a healthy or probing
    arm (updating its own detector in ``health``) and returns a :class:`Trip` when the arm
    degraded. ``probe_verdict`` judges a finished probe window of a recovering arm with the
    same thresholds: a :class:`Trip` keeps the arm out; the arm is healthy again when no
    configured check objects.
    """

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None: ...

    def probe_verdict(self, window: ProbeWindow) -> Trip | None: ...
