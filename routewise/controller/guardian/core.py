"""The :class:`Guardian`: per-arm state machine (healthy, quarantined, probing, pinned) over
the health checks and baselines (see the package docstring for the design)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.controller.guardian import baseline
from routewise.controller.guardian.base import ArmHealth, Check, Observation, ProbeWindow, Trip
from routewise.controller.guardian.checks import default_checks
from routewise.errors import ConfigError, UnknownArm
from routewise.types import GuardianEvent

__all__ = ["Guardian"]

_BIAS = np.ones(1)
#: the default cap of the backed-off cooldown (Envoy's outlier detection caps its ejections at
#: 300 s by default): an arm that recovered waits at most this long for its next probe
MAX_COOLDOWN_S = 300.0


class Guardian:
    """Watches every arm and excludes degraded ones from selection.

    Parameters
    ----------
    checks
        The health checks (default: :func:`~routewise.controller.guardian.checks.default_checks`).
        They trip healthy arms and judge the probe windows of recovering ones, each with
        its own thresholds.
    min_samples
        Observations needed before an arm's baseline exists (and checks other than error
        bursts can trip).
    cooldown_s
        Quarantine duration before probing; doubles with every repeated trip (backoff), up to
        ``max_cooldown_s`` (default: :data:`MAX_COOLDOWN_S`, 300 s, or ``cooldown_s`` if
        longer), so an arm that recovered during a long incident is probed again soon.
    probe_share
        Share of decisions that go to probing arms.
    probe_n
        Probe observations needed to decide whether a probing arm recovered.
    max_out_share
        At most this share of the arms may be quarantined at once (never all of them).
    decay_on_trip
        Factor ∈ [0, 1] the policy's memory of a tripped arm is scaled by (0 resets it), so it
        re-learns the arm after the change.
    decay_on_recover
        Factor ∈ [0, 1] the policy's memory of an arm is scaled by when it passes probing:
        what the policy learned from the arm during the incident (the outcomes before the trip
        and the failed probes) no longer describes it, and must not keep the policy away.
    fast_alpha, slow_alpha
        EWMA weights of the recent estimates and of the baseline tracking.
    baseline_lag
        The baseline learns from observations this many steps old (a change is caught before
        it leaks into the baseline).

    Time is whatever the caller passes as ``ts`` / ``now`` (the Controller's clock). Queries
    (:meth:`state`, :meth:`health`, :meth:`state_at`, :meth:`states`, :meth:`to_state`) change
    nothing; :meth:`tick` is what moves quarantined arms whose cooldown ended to probing.

    Examples
    --------
    >>> g = Guardian(cooldown_s=60.0)
    >>> g.add_arms(["a/direct_emit", "b/direct_emit"])
    >>> [e.reason for e in g.quarantine("a/direct_emit", ts=0.0, until=60.0)]
    ['operator_quarantine']
    >>> g.state("a/direct_emit"), g.state_at("a/direct_emit", now=61.0)
    ('quarantined', 'probing')
    >>> g.state("a/direct_emit")  # state_at is a pure read; tick(61.0) makes the move
    'quarantined'
    >>> [(e.arm, e.to_state) for e in g.tick(61.0)]
    [('a/direct_emit', 'probing')]
    """

    def __init__(
        self,
        checks: Sequence[Check] | None = None,
        *,
        min_samples: int = 50,
        cooldown_s: float = 120.0,
        max_cooldown_s: float | None = None,
        probe_share: float = 0.05,
        probe_n: int = 20,
        max_out_share: float = 0.5,
        decay_on_trip: float = 0.1,
        decay_on_recover: float = 0.1,
        fast_alpha: float = 0.05,
        slow_alpha: float = 0.002,
        baseline_lag: int = 100,
    ) -> None:
        if min_samples < 2:
            raise ConfigError("guardian.min_samples", f"must be >= 2, got {min_samples!r}")
        if max_cooldown_s is None:
            max_cooldown_s = max(MAX_COOLDOWN_S, cooldown_s)
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
        if not 0 <= decay_on_recover <= 1:
            raise ConfigError(
                "guardian.decay_on_recover", f"must be in [0, 1], got {decay_on_recover!r}"
            )
        self.checks: list[Check] = list(checks) if checks is not None else default_checks()
        self.min_samples = min_samples
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.probe_share = probe_share
        self.probe_n = probe_n
        self.max_out_share = max_out_share
        self.decay_on_trip = decay_on_trip
        self.decay_on_recover = decay_on_recover
        self.fast_alpha = fast_alpha
        self.slow_alpha = slow_alpha
        self.baseline_lag = baseline_lag
        self._health: dict[str, ArmHealth] = {}
        self._pinned: str | None = None
        self._n_out = 0
        #: called with (arm, factor) when a transition should shrink the policy's memory of an
        #: arm: a trip (``decay_on_trip``) and a passed probe (``decay_on_recover``)
        self.on_trip: Callable[[str, float], None] | None = None

    # ------------------------------------------------------------------ arms
    def add_arms(self, arms: Iterable[str]) -> None:
        health = self._health
        for a in arms:
            if a not in health:  # (setdefault would build a throwaway ArmHealth every call)
                health[a] = ArmHealth(ewma_var=self.fast_alpha / (2.0 - self.fast_alpha))

    def _h(self, arm: str) -> ArmHealth:
        h = self._health.get(arm)
        if h is None:
            raise UnknownArm(arm, list(self._health))
        return h

    def state(self, arm: str) -> str:
        """``"healthy"``, ``"quarantined"``, ``"probing"`` or ``"pinned"`` (as of the last
        :meth:`tick`)."""
        if self._pinned == arm:
            return "pinned"
        return self._h(arm).state

    def state_at(self, arm: str, now: float) -> str:
        """The state :meth:`state` would report after ``tick(now)``, computed without
        changing anything: a quarantine whose cooldown ended by ``now`` reads ``"probing"``.

        A pure query for read-only callers (health and status reports); the transition
        itself — its event, the fresh probe window — still happens only in :meth:`tick`."""
        if self._pinned == arm:
            return "pinned"
        h = self._h(arm)
        return "probing" if _cooldown_over(h, now) else h.state

    def states(self, arms: Iterable[str], now: float) -> dict[str, str]:
        """``{arm: state_at(arm, now)}`` for ``arms`` (pure, like :meth:`state_at`)."""
        return {a: self.state_at(a, now) for a in arms}

    def health(self) -> dict[str, str]:
        """Every arm's :meth:`state` (as of the last :meth:`tick`)."""
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
            if _cooldown_over(h, now):
                h.state = "probing"
                h.start_probe()
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
        xs = np.asarray(x, dtype=np.float64) if x is not None else _BIAS
        y = 1.0 if (valid and error is None) else 0.0
        is_err = error is not None
        # circuit breaker counters
        recent = h.recent_errors
        if is_err:
            h.consecutive_errors += 1
            h.recent_err_n += 1
            recent.append(1)
        else:
            h.consecutive_errors = 0
            recent.append(0)
        if len(recent) > 64:
            h.recent_err_n -= recent[0]
            del recent[0]
        ll = math.log(max(latency_ms, 0.01))
        obs = Observation(valid, latency_ms, error, ts, ll)
        h.n += 1
        if h.base_ready:
            xs = baseline.expect(h, xs, ll, y, is_err, self.fast_alpha)

        if h.state == "probing":
            return self._probe(arm, h, obs, ll, y, is_err)
        if h.state != "healthy":
            return []
        if not h.base_ready:
            baseline.collect(h, xs, None if is_err else ll, y, self.min_samples)
            # error bursts trip even before a baseline exists
            trip = self._first_trip(h, obs)
            return self._trip(arm, h, trip, ts) if trip is not None else []
        trip = self._first_trip(h, obs)
        if trip is not None:
            return self._trip(arm, h, trip, ts)
        baseline.learn(h, xs, None if is_err else ll, y, self.baseline_lag, self.slow_alpha)
        return []

    def _first_trip(self, h: ArmHealth, obs: Observation) -> Trip | None:
        """Run the checks in order on the observation; the first trip, if any."""
        for check in self.checks:
            trip = check(h, obs)
            if trip is not None:
                return trip
        return None

    def _out_count(self) -> int:
        return sum(1 for h in self._health.values() if h.state in ("quarantined", "probing"))

    def _quarantine(self, h: ArmHealth, ts: float) -> float:
        """Quarantine ``h`` for its backed-off cooldown (returned), counting the trip."""
        cooldown = min(self.cooldown_s * 2.0**h.trips, self.max_cooldown_s)
        h.trips += 1
        h.state = "quarantined"
        self._n_out = -1
        h.until = ts + cooldown
        h.reset_detectors()
        return cooldown

    def _trip(self, arm: str, h: ArmHealth, trip: Trip, ts: float) -> list[GuardianEvent]:
        cap = max(1, math.floor(self.max_out_share * len(self._health)))
        if self._out_count() >= cap:
            # start the evidence over (as a trip would), so one burst is reported once and
            # not again on every following error
            h.reset_detectors()
            evidence = {**trip.evidence, "cap": cap}
            return [
                GuardianEvent(ts, arm, "healthy", "healthy", f"{trip.reason}:cap_reached", evidence)
            ]
        cooldown = self._quarantine(h, ts)
        h.lag = []  # what led to the trip must not become the baseline
        if self.on_trip is not None:
            self.on_trip(arm, self.decay_on_trip)
        evidence = {**trip.evidence, "cooldown_s": cooldown}
        return [GuardianEvent(ts, arm, "healthy", "quarantined", trip.reason, evidence)]

    def _probe(
        self, arm: str, h: ArmHealth, obs: Observation, ll: float, y: float, is_err: bool
    ) -> list[GuardianEvent]:
        ts = obs.ts
        h.record_probe(ll, y, is_err)
        # fail fast: the same checks run on probe traffic, so a still-broken arm goes back to
        # quarantine after a handful of probes instead of a whole probe window
        trip = self._first_trip(h, obs)
        if trip is not None:
            return self._probe_failed(arm, h, ts, f"probe_failed:{trip.reason}", trip.evidence)
        if h.probe_n < self.probe_n:
            return []
        # the window's verdict: every check judges it with its own thresholds
        window = ProbeWindow.of(h)
        evidence = window.evidence()
        failed = False
        for check in self.checks:
            verdict = check.probe_verdict(window)
            if verdict is not None:
                failed = True
                for key, value in verdict.evidence.items():
                    evidence.setdefault(key, value)
        if failed:
            return self._probe_failed(arm, h, ts, "probe_failed", evidence)
        h.state = "healthy"
        self._n_out = -1
        h.trips = max(h.trips - 1, 0)
        h.cusum_lat = h.cusum_valid = 0.0
        h.recent_loglat = h.recent_valid = 0.0
        if self.on_trip is not None and self.decay_on_recover < 1.0:
            self.on_trip(arm, self.decay_on_recover)
        return [GuardianEvent(ts, arm, "probing", "healthy", "probe_passed", evidence)]

    def _probe_failed(
        self, arm: str, h: ArmHealth, ts: float, reason: str, evidence: dict[str, Any]
    ) -> list[GuardianEvent]:
        cooldown = self._quarantine(h, ts)
        evidence = {**evidence, "probe_n": h.probe_n, "cooldown_s": cooldown}
        return [GuardianEvent(ts, arm, "probing", "quarantined", reason, evidence)]

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
        h.reset_detectors()
        return [GuardianEvent(ts, arm, prev, "healthy", "operator_release", {}, "operator")]

    def apply_operator(self, event: GuardianEvent) -> None:
        """Re-apply a logged operator event (restart replay)."""
        if event.reason == "operator_pin":
            self.pin(event.arm, event.ts)
        elif event.reason == "operator_quarantine":
            self.quarantine(event.arm, event.ts, until=None)
        elif event.reason == "operator_release":
            self.release(event.arm, event.ts)

    def adopt(self, event: GuardianEvent) -> bool:
        """Take a transition another replica's Guardian made (a shared store): when this
        arm's state here differs from the event's target, move it there — a quarantine with
        the event's cooldown, a probe that passed back to healthy. Returns whether anything
        changed. Operator events go through :meth:`apply_operator`."""
        h = self._health.get(event.arm)
        if h is None or h.state == event.to_state or event.source == "operator":
            return False
        if event.to_state == "quarantined":
            cooldown = float(event.evidence.get("cooldown_s", self.cooldown_s))
            h.trips += 1
            h.state = "quarantined"
            h.until = event.ts + cooldown
            h.reset_detectors()
        elif event.to_state == "probing" and h.state == "quarantined":
            h.state = "probing"
            h.start_probe()
        elif event.to_state == "healthy":
            h.state = "healthy"
            h.trips = max(h.trips - 1, 0)
        else:
            return False
        self._n_out = -1
        return True

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
            "decay_on_recover": self.decay_on_recover,
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


def _cooldown_over(h: ArmHealth, now: float) -> bool:
    """A quarantine whose cooldown ended by ``now`` (the arm probes from then on)."""
    return h.state == "quarantined" and now >= h.until
