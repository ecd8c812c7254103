"""The Guardian's health checks: latency, validity and error bursts.

Each check is configured with its thresholds in ``__init__`` and uses them twice: on every
observation (``__call__``: a change detector confirmed by a practical rule) and on a
finished probe window (``probe_verdict``: did the recovering arm get back within the same
limits?). See :class:`~routewise.controller.guardian.base.Check`.

Examples
--------
>>> from routewise.controller.guardian.base import ArmHealth, ProbeWindow
>>> w = ProbeWindow.of(ArmHealth(probe_n=20, base_ready=True, probe_loglat_sum=20 * 0.4,
...                              probe_valid=20, probe_exp_valid_sum=18.0))
>>> round(w.loglat_excess, 3)  # the probes ran at exp(0.4) ≈ 1.49× their baseline latency
0.4
>>> LatencyCheck().probe_verdict(w).reason  # above the default 1.2×: still degraded
'latency'
>>> LatencyCheck(ratio=2.0).probe_verdict(w) is None  # within a configured 2×: recovered
True
"""

from __future__ import annotations

import math

from routewise.controller.guardian.base import ArmHealth, Check, Observation, ProbeWindow, Trip
from routewise.errors import ConfigError

__all__ = ["ErrorBurstCheck", "LatencyCheck", "ValidityCheck", "default_checks"]


_STEP_MAX = 5.0  # the most one observation may add to the latency CUSUM (threshold 30)


class LatencyCheck:
    """Trip when log-latency rose: CUSUM for a ``design_ratio`` shift, confirmed by the
    recent geometric-mean latency exceeding ``ratio`` × baseline. A probe window passes when
    its geometric-mean latency is at most ``ratio`` × what the baseline expects.

    Examples
    --------
    >>> LatencyCheck().ratio
    1.2
    """

    def __init__(
        self, ratio: float = 1.2, design_ratio: float = 1.5, threshold: float = 30.0
    ) -> None:
        if not ratio > 1.0 or not design_ratio > 1.0:
            raise ConfigError("guardian.latency", "ratio and design_ratio must be > 1")
        if not threshold > 0:
            raise ConfigError("guardian.latency.threshold", f"must be > 0, got {threshold!r}")
        self.ratio = ratio
        self.design_ratio = design_ratio
        self.threshold = threshold
        self._half_shift = math.log(design_ratio) / 2.0  # (the thresholds are fixed at init)
        self._log_ratio = math.log(ratio)

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        if not health.base_ready or obs.error is not None:
            return None
        sd = health.lat_sd
        # conservative baseline: one standard error above the expectation, so a baseline
        # learned from few samples does not make ordinary noise look like a shift; the
        # step is (z − shift/2) in standard deviations, for a design shift log(design_ratio)
        step = (obs.log_latency - health.exp_loglat - health.lat_margin - self._half_shift) / sd
        # winsorized: one heavy-tailed outlier adds at most _STEP_MAX to the evidence
        cusum = health.cusum_lat + (step if step < _STEP_MAX else _STEP_MAX)
        health.cusum_lat = cusum = cusum if cusum > 0.0 else 0.0
        excess = health.recent_loglat  # EWMA of log-latency residuals (observed − expected)
        if cusum > self.threshold and excess > self._log_ratio:
            return Trip(
                "latency",
                {
                    "cusum": round(health.cusum_lat, 3),
                    "latency_ms": round(obs.latency_ms, 3),
                    "expected_latency_ms": round(math.exp(health.exp_loglat), 3),
                    "ratio": round(math.exp(excess), 3),
                },
            )
        return None

    def probe_verdict(self, window: ProbeWindow) -> Trip | None:
        # mean residual against what the (pre-change) models expect for these requests; a
        # window without one error-free probe has no latency to speak for it (excess = inf)
        if not window.base_ready or window.loglat_excess <= self._log_ratio:
            return None
        return Trip(
            "latency",
            {
                "latency_ratio": round(math.exp(window.loglat_excess), 3),
                "latency_ratio_limit": self.ratio,
            },
        )


class ValidityCheck:
    """Trip when the validity rate of answered requests fell: a Bernoulli CUSUM (its
    log-likelihood ratios divided by the model's held-out dispersion) for a drop from the
    calibrated expectation ``p0`` to ``p0 − design_drop``, confirmed by recent validity below
    ``ratio`` × expected and below it by ``confirm_sd`` standard deviations of the recent
    estimate. Errors are not answers; the error checks judge them. A probe window passes when its
    validity is at least ``ratio`` × what the baseline expects, less the window's sampling
    noise (2 standard errors).

    Examples
    --------
    >>> ValidityCheck().ratio
    0.95
    """

    def __init__(
        self,
        ratio: float = 0.95,
        design_drop: float = 0.20,
        threshold: float = 10.0,
        confirm_sd: float = 2.0,
    ) -> None:
        if not 0 < ratio < 1:
            raise ConfigError("guardian.validity.ratio", f"must be in (0, 1), got {ratio!r}")
        if not 0 < design_drop < 1:
            raise ConfigError(
                "guardian.validity.design_drop", f"must be in (0, 1), got {design_drop!r}"
            )
        if not threshold > 0:
            raise ConfigError("guardian.validity.threshold", f"must be > 0, got {threshold!r}")
        if not confirm_sd >= 0:
            raise ConfigError("guardian.validity.confirm_sd", f"must be >= 0, got {confirm_sd!r}")
        self.ratio = ratio
        self.design_drop = design_drop
        self.threshold = threshold
        self.confirm_sd = confirm_sd

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        # an error is not an answer: errors are the error checks' business
        if not health.base_ready or obs.error is not None:
            return None
        # this request's calibrated expected validity (see the baseline module)
        pb = health.exp_valid
        p0 = pb - health.val_margin  # one standard error low
        p0 = 0.02 if p0 < 0.02 else 0.995 if p0 > 0.995 else p0
        p1 = p0 - self.design_drop
        if p1 < 0.005:
            p1 = 0.005
        llr = math.log(p1 / p0) if obs.valid else math.log((1.0 - p1) / (1.0 - p0))
        # quasi-likelihood: a model whose held-out errors exceed Bernoulli noise weighs less
        cusum = health.cusum_valid + llr / health.val_disp
        health.cusum_valid = cusum = cusum if cusum > 0.0 else 0.0
        if cusum <= self.threshold:
            return None
        # recent_valid: EWMA of validity residuals (observed − expected); it must fall short
        # by the practical margin and by `confirm_sd` of its own noise
        limit = (1.0 - self.ratio) * pb
        noise = self.confirm_sd * math.sqrt(pb * (1.0 - pb) * health.ewma_var)
        if -health.recent_valid > max(limit, noise):
            return Trip(
                "validity",
                {
                    "cusum_llr": round(health.cusum_valid, 3),
                    "recent_validity_shortfall": round(-health.recent_valid, 4),
                    "expected_validity": round(pb, 4),
                },
            )
        return None

    def probe_verdict(self, window: ProbeWindow) -> Trip | None:
        if not window.base_ready:
            return None
        p0 = window.expected_validity
        se = math.sqrt(max(p0 * (1 - p0), 1e-6) / window.n)
        limit = (1.0 - self.ratio) * p0 + 2 * se
        if window.validity_shortfall <= limit:
            return None
        return Trip(
            "validity",
            {
                "validity_shortfall": round(window.validity_shortfall, 4),
                "validity_shortfall_limit": round(limit, 4),
            },
        )


class ErrorBurstCheck:
    """Trip at once on ``consecutive`` errors in a row, or ``rate`` errors over ``window`` —
    when that is improbable for *this* arm. A probe window passes when its error rate is below
    ``rate``.

    Some backends fail in clusters as a matter of course (a provider's brief 5xx bursts). The
    arm's error *persistence* ``π = P(error | previous error)`` is learned from its healthy,
    lagged history (see the baseline module), and a run or a window trips only when its
    probability under that persistence is below ``alpha``: a run of ``c`` errors has
    probability ``π^(c−1)`` once one error happened, a window of ``k`` errors in ``n`` the
    binomial tail at ``π``. For an arm whose errors are rare and independent this changes
    nothing (``π`` ≈ its error rate); for a bursty one, its usual bursts do not trip it, and an
    outage (every request failing) still does within a few requests more.

    Examples
    --------
    >>> ErrorBurstCheck().consecutive
    5
    >>> from routewise.controller.guardian.base import ArmHealth
    >>> h = ArmHealth(consecutive_errors=5)
    >>> ErrorBurstCheck()(h, Observation(False, 100.0, "timeout", 0.0)).reason
    'error_burst'
    >>> h.err_persist = 0.2  # this arm's errors cluster: 5 in a row is ordinary for it
    >>> ErrorBurstCheck()(h, Observation(False, 100.0, "timeout", 0.0)) is None
    True
    """

    def __init__(
        self, consecutive: int = 5, window: int = 20, rate: float = 0.5, alpha: float = 1e-4
    ) -> None:
        if consecutive < 1 or window < 1 or not 0 < rate <= 1:
            raise ConfigError("guardian.errors", "consecutive, window >= 1 and rate in (0, 1]")
        if not 0 < alpha < 1:
            raise ConfigError("guardian.errors.alpha", f"must be in (0, 1), got {alpha!r}")
        self.consecutive = consecutive
        self.window = window
        self.rate = rate
        self.alpha = alpha

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        run = health.consecutive_errors
        pi = health.err_persist
        if run >= self.consecutive and pi ** (run - 1) < self.alpha:
            evidence = {"consecutive_errors": run, "error_persistence": round(pi, 4)}
            return Trip("error_burst", evidence)
        if health.recent_err_n < self.rate * min(self.window, 64):
            return None  # too few errors among the last 64 outcomes for any window to trip
        w = health.recent_errors[-self.window :]
        k, n = sum(w), len(w)
        if n >= self.window and k / n >= self.rate and _binomial_tail(k, n, pi) < self.alpha:
            return Trip(
                "error_rate",
                {"error_rate": round(k / n, 4), "window": n, "error_persistence": round(pi, 4)},
            )
        return None

    def probe_verdict(self, window: ProbeWindow) -> Trip | None:
        if window.error_rate < self.rate:
            return None
        return Trip(
            "error_rate",
            {"error_rate": round(window.error_rate, 4), "error_rate_limit": self.rate},
        )


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p) (n ≤ 64 here: a direct sum is exact and cheap)."""
    if p <= 0.0:
        return 0.0 if k > 0 else 1.0
    if p >= 1.0:
        return 1.0
    return sum(math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(k, n + 1))


def default_checks() -> list[Check]:
    """The default rule set: latency, validity and error-burst checks."""
    return [ErrorBurstCheck(), LatencyCheck(), ValidityCheck()]
