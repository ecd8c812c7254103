"""The Guardian: per-arm health, change detection, quarantine, probing and operator overrides.

A bandit's estimates average over the past, so it reacts slowly when a backend degrades. The
Guardian watches every arm's live feedback and acts at once, like a circuit breaker::

    healthy ──trip──► quarantined ──cooldown──► probing ──probe window ok──► healthy
                           ▲                        │
                           └──── probe window bad ──┘   (cooldown doubles: backoff)

    pinned: an operator forces all traffic to one arm (until released).

Checks are small composable callables with one signature (``check(health, obs) -> Trip | None``,
HOUSE_STYLE 8). The defaults follow the seed design — latency above 1.2× its baseline,
correctness below 0.95× its baseline — guarded against noise:

* :class:`LatencyCheck` — a one-sided CUSUM (Page 1954) on standardized log-latency residuals
  (observed − expected), designed for a shift of ``log(design_ratio)`` and confirmed by the
  practical rule (recent latency > ``ratio`` × expected).
* :class:`ValidityCheck` — a Bernoulli log-likelihood-ratio CUSUM for a drop of the validity
  rate from its expectation ``p0`` to ``p0 − design_drop``, confirmed by the practical rule
  (recent validity < ``ratio`` × expected).
* :class:`ErrorBurstCheck` — trips at once on ``consecutive`` failures in a row or an error rate
  of ``rate`` over the last ``window`` outcomes (circuit-breaker style).

Baselines are *per request*: with the request's feature vector ``x``, the expected
log-latency and validity are linear models of the features, fitted by least squares once an
arm has ``max(min_samples, 10·len(x))`` observations and then tracked by normalized LMS on
observations ``baseline_lag`` steps old (so a change is caught before it leaks into the
baseline). The checks compare each outcome with what *this* request should get, with a
margin for the models' prediction uncertainty — a policy that sends an arm more of the slow
or hard requests is not a degradation. Without ``x`` the models reduce to per-arm means. All
state is plain JSON (snapshots, exact restore), which is why the detectors are written here
rather than taken from river (whose detectors are neither JSON-serializable nor mergeable).

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

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from routewise.bandits.ridge import pack_array, unpack_array
from routewise.errors import ConfigError, UnknownArm
from routewise.types import GuardianEvent

__all__ = [
    "ArmHealth",
    "Check",
    "ErrorBurstCheck",
    "Guardian",
    "GuardianEvent",
    "HealthState",
    "LatencyCheck",
    "Observation",
    "Trip",
    "ValidityCheck",
]

HealthState = Literal["healthy", "quarantined", "probing", "pinned"]
_STATES = ("healthy", "quarantined", "probing", "pinned")


@dataclass(slots=True)
class Observation:
    """One outcome as the Guardian sees it."""

    valid: bool
    latency_ms: float
    error: str | None
    ts: float


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
    # baselines (established after min_samples observations)
    base_ready: bool = False
    base_loglat_var: float = 0.0
    base_valid: float = 0.0
    base_n: float = 0.0  # effective sample size behind the baseline (caps at 1/slow_alpha)
    # context models: expected log-latency and validity are linear in the request features,
    # so a policy that shifts which requests an arm gets does not look like a degradation
    # rows: expected log-latency, expected validity (float64; lists "w_lat"/"w_val" in JSON)
    w: Any = field(default_factory=lambda: np.zeros((2, 0)))
    exp_loglat: float = 0.0  # expectations for the observation being checked
    exp_valid: float = 0.0
    # prediction uncertainty of the context models: margin = sqrt(var · xᵀ(XᵀX+λI)⁻¹x)
    w_cov: Any = field(default_factory=lambda: np.zeros((0, 0)))
    lat_margin: float = 0.0
    val_margin: float = 0.0
    fit_n: float = 0.0  # observations behind the warm-up fit
    # (features, log-latency | None, valid); tuples of numbers and an array, which the garbage
    # collector stops tracking, so a long lag does not feed full collections
    lag: list[tuple[Any, float | None, float]] = field(default_factory=list)
    # error-free observations collected for the warm-up fit (kept in `lag` until then)
    warm_n: int = 0
    # recent (fast EWMA) estimates
    recent_loglat: float = 0.0
    recent_valid: float = 1.0
    # change detectors
    cusum_lat: float = 0.0
    cusum_valid: float = 0.0
    # circuit breaker
    consecutive_errors: int = 0
    recent_errors: list[int] = field(default_factory=list)
    # quarantine / probing bookkeeping
    until: float = 0.0
    trips: int = 0
    probe_n: int = 0
    probe_valid: int = 0
    probe_errors: int = 0
    probe_loglat_sum: float = 0.0  # sum of log-latency residuals (observed − expected)
    probe_valid_resid_sum: float = 0.0
    probe_exp_valid_sum: float = 0.0

    def to_state(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        del d["w"]
        d["w_lat"] = [float(v) for v in self.w[0]]
        d["w_val"] = [float(v) for v in self.w[1]]
        # arrays are packed (base64 float64: exact, and cheap to snapshot every 1000 feedbacks)
        d["w_cov"] = pack_array(self.w_cov)
        width = max((len(r[0]) for r in self.lag), default=0)
        xs = np.zeros((len(self.lag), width))
        for i, r in enumerate(self.lag):
            xs[i, : len(r[0])] = r[0]
        d["lag"] = {
            "x": pack_array(xs),
            "len": [len(r[0]) for r in self.lag],
            "ll": [r[1] for r in self.lag],
            "y": [r[2] for r in self.lag],
        }
        d["recent_errors"] = list(self.recent_errors)
        if math.isinf(d["until"]):
            d["until"] = None  # strict JSON has no infinity: quarantined until released
        return d

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ArmHealth:
        fields_ = {k: v for k, v in s.items() if k not in ("w_lat", "w_val")}
        h = cls(**fields_)
        h.w = np.array([s["w_lat"], s["w_val"]], dtype=np.float64).reshape(2, -1)
        h.w_cov = unpack_array(s["w_cov"])
        lag = s["lag"]
        xs = unpack_array(lag["x"])
        h.lag = [
            (xs[i, :n].copy(), ll, y)
            for i, (n, ll, y) in enumerate(zip(lag["len"], lag["ll"], lag["y"], strict=True))
        ]
        return h


_BIAS = np.ones(1)


class Check(Protocol):
    """A composable health check: look at an arm's health after an observation."""

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None: ...


def _log_latency(ms: float) -> float:
    return math.log(max(ms, 0.01))


def _fit_to(h: ArmHealth, x: Any) -> Any:
    """``x`` with the models' length: pad a short (older) vector with zeros; for a longer one
    (a feature first seen after the fit) grow the models with zero weights."""
    d = h.w.shape[1]
    if len(x) == d:
        return x
    if len(x) < d:
        return np.concatenate([x, np.zeros(d - len(x))])
    h.w = np.hstack([h.w, np.zeros((2, len(x) - d))])
    return x


class LatencyCheck:
    """Trip when log-latency rose: CUSUM for a ``design_ratio`` shift, confirmed by the
    recent geometric-mean latency exceeding ``ratio`` × baseline.

    Examples
    --------
    >>> LatencyCheck().ratio
    1.2
    """

    def __init__(
        self, ratio: float = 1.2, design_ratio: float = 1.5, threshold: float = 24.0
    ) -> None:
        if not ratio > 1.0 or not design_ratio > 1.0:
            raise ConfigError("guardian.latency", "ratio and design_ratio must be > 1")
        if not threshold > 0:
            raise ConfigError("guardian.latency.threshold", f"must be > 0, got {threshold!r}")
        self.ratio = ratio
        self.design_ratio = design_ratio
        self.threshold = threshold

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        if not health.base_ready or obs.error is not None:
            return None
        sd = math.sqrt(max(health.base_loglat_var, 1e-4))
        # conservative baseline: one standard error above the expectation, so a baseline
        # learned from few samples does not make ordinary noise look like a shift
        base = health.exp_loglat + health.lat_margin
        shift = math.log(self.design_ratio) / sd
        z = (_log_latency(obs.latency_ms) - base) / sd
        health.cusum_lat = max(0.0, health.cusum_lat + z - shift / 2.0)
        excess = health.recent_loglat  # EWMA of log-latency residuals (observed − expected)
        if health.cusum_lat > self.threshold and excess > math.log(self.ratio):
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


class ValidityCheck:
    """Trip when the validity rate fell: Bernoulli CUSUM for a drop to ``p0 − design_drop``,
    confirmed by recent validity below ``ratio`` × baseline.

    Examples
    --------
    >>> ValidityCheck().ratio
    0.95
    """

    def __init__(
        self, ratio: float = 0.95, design_drop: float = 0.15, threshold: float = 13.0
    ) -> None:
        if not 0 < ratio < 1:
            raise ConfigError("guardian.validity.ratio", f"must be in (0, 1), got {ratio!r}")
        if not 0 < design_drop < 1:
            raise ConfigError(
                "guardian.validity.design_drop", f"must be in (0, 1), got {design_drop!r}"
            )
        if not threshold > 0:
            raise ConfigError("guardian.validity.threshold", f"must be > 0, got {threshold!r}")
        self.ratio = ratio
        self.design_drop = design_drop
        self.threshold = threshold

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        if not health.base_ready:
            return None
        # this request's expected validity, conservatively one standard error low
        pb = health.exp_valid
        p0 = pb - health.val_margin
        p0 = min(max(p0, 0.02), 0.995)
        p1 = max(p0 - self.design_drop, 0.005)
        y = obs.valid and obs.error is None
        llr = math.log(p1 / p0) if y else math.log((1.0 - p1) / (1.0 - p0))
        health.cusum_valid = max(0.0, health.cusum_valid + llr)
        # recent_valid: EWMA of validity residuals (observed − expected)
        if health.cusum_valid > self.threshold and health.recent_valid < -(1.0 - self.ratio) * pb:
            return Trip(
                "validity",
                {
                    "cusum_llr": round(health.cusum_valid, 3),
                    "recent_validity_shortfall": round(-health.recent_valid, 4),
                    "expected_validity": round(pb, 4),
                },
            )
        return None


class ErrorBurstCheck:
    """Trip at once on ``consecutive`` errors in a row, or ``rate`` errors over ``window``.

    Examples
    --------
    >>> ErrorBurstCheck().consecutive
    5
    """

    def __init__(self, consecutive: int = 5, window: int = 20, rate: float = 0.5) -> None:
        if consecutive < 1 or window < 1 or not 0 < rate <= 1:
            raise ConfigError("guardian.errors", "consecutive, window >= 1 and rate in (0, 1]")
        self.consecutive = consecutive
        self.window = window
        self.rate = rate

    def __call__(self, health: ArmHealth, obs: Observation) -> Trip | None:
        if health.consecutive_errors >= self.consecutive:
            return Trip("error_burst", {"consecutive_errors": health.consecutive_errors})
        w = health.recent_errors[-self.window :]
        if len(w) >= self.window and sum(w) / len(w) >= self.rate:
            return Trip("error_rate", {"error_rate": round(sum(w) / len(w), 4), "window": len(w)})
        return None


def default_checks() -> list[Check]:
    """The default rule set: latency, validity and error-burst checks."""
    return [ErrorBurstCheck(), LatencyCheck(), ValidityCheck()]


class Guardian:
    """Watches every arm and excludes degraded ones from selection.

    Parameters
    ----------
    checks
        The health checks (default: :func:`default_checks`).
    min_samples
        Observations needed before an arm's baseline exists (and checks other than error
        bursts can trip).
    cooldown_s
        Quarantine duration before probing; doubles with every repeated trip (backoff), up to
        ``max_cooldown_s``.
    probe_share
        Share of decisions that go to probing arms.
    probe_n
        Probe observations needed to decide whether a probing arm recovered.
    max_out_share
        At most this share of the arms may be quarantined at once (never all of them).
    decay_on_trip
        Factor ∈ [0, 1] the policy's memory of a tripped arm is scaled by (0 resets it), so it
        re-learns the arm after the change.
    fast_alpha, slow_alpha
        EWMA weights of the recent estimates and of the baseline tracking.
    baseline_lag
        The baseline learns from observations this many steps old (a change is caught before
        it leaks into the baseline).
    """

    def __init__(
        self,
        checks: Sequence[Check] | None = None,
        *,
        min_samples: int = 50,
        cooldown_s: float = 120.0,
        max_cooldown_s: float = 3600.0,
        probe_share: float = 0.05,
        probe_n: int = 20,
        max_out_share: float = 0.5,
        decay_on_trip: float = 0.1,
        fast_alpha: float = 0.05,
        slow_alpha: float = 0.002,
        baseline_lag: int = 100,
    ) -> None:
        if min_samples < 2:
            raise ConfigError("guardian.min_samples", f"must be >= 2, got {min_samples!r}")
        if not cooldown_s > 0 or not max_cooldown_s >= cooldown_s:
            raise ConfigError("guardian.cooldown_s", "must be > 0 and <= max_cooldown_s")
        if not 0 < probe_share < 1:
            raise ConfigError("guardian.probe_share", f"must be in (0, 1), got {probe_share!r}")
        if probe_n < 1:
            raise ConfigError("guardian.probe_n", f"must be >= 1, got {probe_n!r}")
        if not 0 < max_out_share < 1:
            raise ConfigError("guardian.max_out_share", f"must be in (0, 1), got {max_out_share!r}")
        if not 0 <= decay_on_trip <= 1:
            raise ConfigError("guardian.decay_on_trip", f"must be in [0, 1], got {decay_on_trip!r}")
        self.checks: list[Check] = list(checks) if checks is not None else default_checks()
        self.min_samples = min_samples
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.probe_share = probe_share
        self.probe_n = probe_n
        self.max_out_share = max_out_share
        self.decay_on_trip = decay_on_trip
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.baseline_lag = baseline_lag
        self._health: dict[str, ArmHealth] = {}
        self._pinned: str | None = None
        self._n_out = 0
        #: called with (arm, factor) when a trip should shrink the policy's memory of an arm
        self.on_trip: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ arms
    def add_arms(self, arms: Iterable[str]) -> None:
        health = self._health
        for a in arms:
            if a not in health:  # (setdefault would build a throwaway ArmHealth every call)
                health[a] = ArmHealth()

    def _h(self, arm: str) -> ArmHealth:
        h = self._health.get(arm)
        if h is None:
            raise UnknownArm(arm, list(self._health))
        return h

    def state(self, arm: str) -> str:
        """``"healthy"``, ``"quarantined"``, ``"probing"`` or ``"pinned"``."""
        if self._pinned == arm:
            return "pinned"
        return self._h(arm).state

    def health(self) -> dict[str, str]:
        return {a: self.state(a) for a in self._health}

    def arm_health(self, arm: str) -> ArmHealth:
        """The live statistics of one arm (read-only use)."""
        return self._h(arm)

    @property
    def pinned(self) -> str | None:
        return self._pinned

    @property
    def quiet(self) -> bool:
        """Every arm healthy and none pinned: :meth:`tick` has nothing to move and
        :meth:`split` serves every requested arm (the controller's fast path)."""
        if self._n_out < 0:
            self._count_out()
        return self._n_out == 0 and self._pinned is None

    # ------------------------------------------------------------- routing
    def _count_out(self) -> None:
        # arms not healthy; the hot paths (tick, split) skip all work while this is 0
        self._n_out = sum(1 for h in self._health.values() if h.state != "healthy")

    def tick(self, now: float) -> list[GuardianEvent]:
        """Move quarantined arms whose cooldown ended to probing."""
        events: list[GuardianEvent] = []
        if self._n_out < 0:
            self._count_out()
        if self._n_out == 0:
            return events
        for arm, h in self._health.items():
            if h.state == "quarantined" and now >= h.until:
                h.state = "probing"
                h.probe_n = h.probe_valid = h.probe_errors = 0
                h.probe_loglat_sum = h.probe_valid_resid_sum = h.probe_exp_valid_sum = 0.0
                h.consecutive_errors = 0
                h.recent_errors = []
                h.cusum_lat = h.cusum_valid = 0.0
                events.append(
                    GuardianEvent(
                        now, arm, "quarantined", "probing", "cooldown_elapsed", {"trips": h.trips}
                    )
                )
        return events

    def split(self, arms: Sequence[str]) -> tuple[list[str], list[str]]:
        """(serving arms, probing arms) among ``arms``; never leaves nothing to serve."""
        if self._n_out < 0:
            self._count_out()
        if self._n_out == 0:
            return list(arms), []
        serving = (
            [a for a in arms if self._health[a].state == "healthy"] if self._health else list(arms)
        )
        probing = [a for a in arms if self._health[a].state == "probing"]
        if not serving:
            # everything requested is out: serve the least bad (probing first, then all)
            return (probing or list(arms)), []
        return serving, probing

    # ------------------------------------------------------------ learning
    def observe(
        self,
        arm: str,
        *,
        valid: bool,
        latency_ms: float,
        error: str | None,
        ts: float,
        x: Sequence[float] | npt.NDArray[np.float64] | None = None,
    ) -> list[GuardianEvent]:
        """Feed one outcome of ``arm`` (with the request's feature vector ``x``, if any);
        returns the transitions it caused.

        With ``x`` the expected log-latency and validity are per request (linear models of
        the features), so checks compare like with like when the traffic mix an arm receives
        changes; without it they are per arm."""
        h = self._health.get(arm)
        if h is None:
            h = self._h(arm)  # raises UnknownArm
        obs = Observation(valid, latency_ms, error, ts)
        xs = np.asarray(x, dtype=np.float64) if x is not None else _BIAS
        y = 1.0 if (valid and error is None) else 0.0
        is_err = error is not None
        h.consecutive_errors = h.consecutive_errors + 1 if is_err else 0
        h.recent_errors.append(1 if is_err else 0)
        if len(h.recent_errors) > 64:
            del h.recent_errors[: len(h.recent_errors) - 64]
        ll = math.log(max(latency_ms, 0.01))  # _log_latency, inlined
        h.n += 1
        if h.base_ready:
            if len(xs) != h.w.shape[1]:
                xs = _fit_to(h, xs)
            # (plain floats from here on: the same IEEE operations as on numpy scalars,
            # without their per-operation overhead)
            exp_loglat, exp_valid = h.w.dot(xs).tolist()  # .dot: same gemv as @, cheaper
            h.exp_loglat = exp_loglat
            h.exp_valid = min(max(exp_valid, 0.01), 0.999)
            kc = h.w_cov.shape[0]
            xc = xs if len(xs) == kc else xs[:kc]
            # leverage of this request, shrinking as the models keep learning after the fit
            q = float(xc.dot(h.w_cov.dot(xc))) * h.fit_n / max(h.base_n, h.fit_n, 1.0)
            h.lat_margin = math.sqrt(max(h.base_loglat_var * q, 0.0))
            h.val_margin = math.sqrt(max(h.exp_valid * (1.0 - h.exp_valid), 1e-4) * q)
            a = self.fast_alpha
            if not is_err:
                h.recent_loglat += a * ((ll - h.exp_loglat) - h.recent_loglat)
            h.recent_valid += a * ((y - h.exp_valid) - h.recent_valid)

        if h.state == "probing":
            return self._probe(arm, h, obs, ll, y, is_err)
        if h.state != "healthy":
            return []

        if not h.base_ready:
            # warm-up: collect, then fit both models by least squares on the batch
            h.lag.append((xs, None if is_err else ll, y))
            h.warm_n += 0 if is_err else 1
            # enough data for the context models: at least 10 observations per feature
            if h.warm_n >= max(self.min_samples, 10 * len(xs)):
                self._fit_baseline(h)
            for check in self.checks:  # error bursts trip even before a baseline exists
                trip = check(h, obs)
                if trip is not None:
                    return self._trip(arm, h, trip, ts)
            return []
        for check in self.checks:
            trip = check(h, obs)
            if trip is not None:
                return self._trip(arm, h, trip, ts)
        # The baseline learns from observations `baseline_lag` steps old, so a change is
        # detected before it can leak into the baseline (and there is no selection bias: every
        # observation of a healthy arm eventually counts). Step 1/n while the baseline is young,
        # then slow exponential tracking (normalized LMS on the context models).
        h.lag.append((xs, None if is_err else ll, y))
        if len(h.lag) > self.baseline_lag:
            old_x, old_ll, old_y = h.lag.pop(0)
            if len(old_x) != h.w.shape[1]:
                old_x = _fit_to(h, old_x)
            h.base_n = min(h.base_n + 1.0, 1.0 / self.slow_alpha)
            step = 1.0 / h.base_n
            norm = float(old_x.dot(old_x)) or 1.0
            pred_ll, pred_v = h.w.dot(old_x).tolist()
            err = (old_ll if old_ll is not None else pred_ll) - pred_ll
            err_v = old_y - pred_v
            # w += outer(c·[err, err_v], x), written without np.outer's temporaries; every
            # element is still the product (c·e_i)·x_j added once, so the bits are the same
            c = step / norm
            h.w += np.array([[c * err], [c * err_v]]) * old_x
            if old_ll is not None:
                h.base_loglat_var = (1 - step) * (h.base_loglat_var + step * err * err)
            h.base_valid += step * (old_y - h.base_valid)
        return []

    def _fit_baseline(self, h: ArmHealth) -> None:
        """Least-squares fit of the context models on the warm-up batch (ridge-stabilized)."""
        d = max(len(r[0]) for r in h.lag)
        X = np.zeros((len(h.lag), d))
        for i, r in enumerate(h.lag):
            X[i, : len(r[0])] = r[0]
        yv = np.array([r[2] for r in h.lag], dtype=np.float64)
        ok = np.array([r[1] is not None for r in h.lag])
        ll = np.array([r[1] if r[1] is not None else 0.0 for r in h.lag], dtype=np.float64)
        reg = 1.0 * np.eye(d)
        reg[0, 0] = 1e-6  # do not shrink the intercept
        # one Gram matrix for both models when no observation is an error (the same product
        # on the same data: the same bits), so the large BLAS calls happen once, not thrice
        gram = X.T @ X + reg
        if ok.all():
            Xl, ll_ok, gram_l = X, ll, gram
        else:
            Xl, ll_ok = X[ok], ll[ok]
            gram_l = Xl.T @ Xl + reg
        w_lat = np.linalg.solve(gram_l, Xl.T @ ll_ok)
        w_val = np.linalg.solve(gram, X.T @ yv)
        h.w_cov = np.linalg.inv(gram)
        resid = ll_ok - Xl @ w_lat
        h.w = np.vstack([w_lat, w_val])
        h.base_loglat_var = float(resid @ resid / max(len(resid) - 1, 1))
        h.base_valid = float((yv.sum() + 0.5) / (len(yv) + 1.0))  # Jeffreys-smoothed
        h.base_n = float(len(yv))
        h.fit_n = float(len(yv))
        h.base_ready = True
        h.recent_loglat = 0.0
        h.recent_valid = 0.0
        h.lag = []

    def _out_count(self) -> int:
        return sum(1 for h in self._health.values() if h.state in ("quarantined", "probing"))

    def _trip(self, arm: str, h: ArmHealth, trip: Trip, ts: float) -> list[GuardianEvent]:
        cap = max(1, math.floor(self.max_out_share * len(self._health)))
        if self._out_count() >= cap:
            # start the evidence over (as a trip would), so one burst is reported once and
            # not again on every following error
            h.cusum_lat = h.cusum_valid = 0.0
            h.consecutive_errors = 0
            h.recent_errors = []
            return [
                GuardianEvent(
                    ts,
                    arm,
                    "healthy",
                    "healthy",
                    f"{trip.reason}:cap_reached",
                    {**trip.evidence, "cap": cap},
                )
            ]
        cooldown = min(self.cooldown_s * 2.0**h.trips, self.max_cooldown_s)
        h.trips += 1
        h.state = "quarantined"
        self._n_out = -1
        h.until = ts + cooldown
        h.cusum_lat = h.cusum_valid = 0.0
        h.consecutive_errors = 0
        h.recent_errors = []
        h.lag = []  # what led to the trip must not become the baseline
        if self.on_trip is not None:
            self.on_trip(arm, self.decay_on_trip)
        return [
            GuardianEvent(
                ts,
                arm,
                "healthy",
                "quarantined",
                trip.reason,
                {**trip.evidence, "cooldown_s": cooldown},
            )
        ]

    def _probe(
        self, arm: str, h: ArmHealth, obs: Observation, ll: float, y: float, is_err: bool
    ) -> list[GuardianEvent]:
        ts = obs.ts
        h.probe_n += 1
        h.probe_valid += int(y)
        h.probe_errors += int(is_err)
        if h.base_ready:
            if not is_err:
                h.probe_loglat_sum += ll - h.exp_loglat
            h.probe_valid_resid_sum += y - h.exp_valid
            h.probe_exp_valid_sum += h.exp_valid
        # fail fast: the same checks run on probe traffic, so a still-broken arm goes back to
        # quarantine after a handful of probes instead of a whole probe window
        for check in self.checks:
            trip = check(h, obs)
            if trip is not None:
                return self._probe_failed(arm, h, ts, f"probe_failed:{trip.reason}", trip.evidence)
        if h.probe_n < self.probe_n:
            return []
        ok_n = h.probe_n - h.probe_errors
        validity = h.probe_valid / h.probe_n
        error_rate = h.probe_errors / h.probe_n
        # mean residuals against what the (pre-change) models expect for these requests
        excess_ll = h.probe_loglat_sum / ok_n if ok_n else float("inf")
        lat_ok = (not h.base_ready) or excess_ll <= math.log(1.2)
        p0 = h.probe_exp_valid_sum / h.probe_n if h.base_ready else 0.0
        shortfall = -h.probe_valid_resid_sum / h.probe_n if h.base_ready else 0.0
        # validity: allow the sampling noise of the probe window (2 standard errors)
        se = math.sqrt(max(p0 * (1 - p0), 1e-6) / h.probe_n)
        valid_ok = (not h.base_ready) or shortfall <= 0.05 * p0 + 2 * se
        evidence = {
            "probe_n": h.probe_n,
            "validity": round(validity, 4),
            "expected_validity": round(p0, 4),
            "error_rate": round(error_rate, 4),
            "latency_ratio": round(math.exp(excess_ll), 3) if ok_n else None,
        }
        if lat_ok and valid_ok and error_rate < 0.5:
            h.state = "healthy"
            self._n_out = -1
            h.trips = max(h.trips - 1, 0)
            h.cusum_lat = h.cusum_valid = 0.0
            h.recent_loglat = h.recent_valid = 0.0
            return [GuardianEvent(ts, arm, "probing", "healthy", "probe_passed", evidence)]
        return self._probe_failed(arm, h, ts, "probe_failed", evidence)

    def _probe_failed(
        self, arm: str, h: ArmHealth, ts: float, reason: str, evidence: dict[str, Any]
    ) -> list[GuardianEvent]:
        cooldown = min(self.cooldown_s * 2.0**h.trips, self.max_cooldown_s)
        h.trips += 1
        h.state = "quarantined"
        self._n_out = -1
        h.until = ts + cooldown
        h.cusum_lat = h.cusum_valid = 0.0
        h.consecutive_errors = 0
        h.recent_errors = []
        return [
            GuardianEvent(
                ts,
                arm,
                "probing",
                "quarantined",
                reason,
                {**evidence, "probe_n": h.probe_n, "cooldown_s": cooldown},
            )
        ]

    # ------------------------------------------------------------ operator
    def pin(self, arm: str, ts: float) -> list[GuardianEvent]:
        """Send all traffic to ``arm`` until released."""
        prev = self.state(arm)
        old = self._pinned
        events = []
        if old is not None and old != arm:
            events.append(
                GuardianEvent(ts, old, "pinned", self._h(old).state, "unpinned", {}, "operator")
            )
        self._pinned = arm
        events.append(GuardianEvent(ts, arm, prev, "pinned", "operator_pin", {}, "operator"))
        return events

    def quarantine(self, arm: str, ts: float, until: float | None = None) -> list[GuardianEvent]:
        """Exclude ``arm`` (until released, or until ``until``)."""
        h = self._h(arm)
        prev = self.state(arm)
        if self._pinned == arm:
            self._pinned = None
        h.state = "quarantined"
        self._n_out = -1
        h.until = until if until is not None else math.inf
        return [GuardianEvent(ts, arm, prev, "quarantined", "operator_quarantine", {}, "operator")]

    def release(self, arm: str, ts: float) -> list[GuardianEvent]:
        """Return ``arm`` to healthy (unpin / unquarantine) and forget its detectors' history."""
        h = self._h(arm)
        prev = self.state(arm)
        if self._pinned == arm:
            self._pinned = None
        h.state = "healthy"
        self._n_out = -1
        h.until = 0.0
        h.cusum_lat = h.cusum_valid = 0.0
        h.consecutive_errors = 0
        h.recent_errors = []
        return [GuardianEvent(ts, arm, prev, "healthy", "operator_release", {}, "operator")]

    def apply_operator(self, event: GuardianEvent) -> None:
        """Re-apply a logged operator event (restart replay)."""
        if event.reason == "operator_pin":
            self.pin(event.arm, event.ts)
        elif event.reason == "operator_quarantine":
            self.quarantine(event.arm, event.ts, until=None)
        elif event.reason == "operator_release":
            self.release(event.arm, event.ts)

    # --------------------------------------------------------------- state
    def params(self) -> dict[str, Any]:
        return {
            "min_samples": self.min_samples,
            "cooldown_s": self.cooldown_s,
            "max_cooldown_s": self.max_cooldown_s,
            "probe_share": self.probe_share,
            "probe_n": self.probe_n,
            "max_out_share": self.max_out_share,
            "decay_on_trip": self.decay_on_trip,
            "fast_alpha": self.fast_alpha,
            "slow_alpha": self.slow_alpha,
            "baseline_lag": self.baseline_lag,
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "pinned": self._pinned,
            "arms": {a: h.to_state() for a, h in self._health.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._pinned = state.get("pinned")
        for a, s in state["arms"].items():
            hs = dict(s)
            if hs.get("until") is None:
                hs["until"] = math.inf
            self._health[a] = ArmHealth.from_state(hs)
        self._n_out = -1
