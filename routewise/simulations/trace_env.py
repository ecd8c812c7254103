"""Trace-driven simulation: an environment whose outcome models are fitted to a logged trace.

:meth:`TraceEnvironment.fit` reads a trace once (streaming) and fits, for every arm it logged:

* failures — the error rate, the share of timeouts and the typical latency of each kind
  (shrunk towards the pooled rates of all arms by 10 pseudo-observations);
* on served calls — P(valid) as a ridge regression (linear probability, clipped to [0, 1]),
  log-latency as a ridge regression with a log-normal residual of the arm's RMS residual,
  and cost as a ridge regression (clipped at 0),

all on the same fixed feature map of the context (:class:`~routewise.simulations.models.FeatureMap`),
centred on the pooled mean so arms with little data shrink towards all arms. Requests are
drawn (with replacement) from a uniform sample of up to ``max_contexts`` logged contexts. The
fitted models are again closed-form, so regret stays exact *with respect to the fitted
world* — the simulation answers "how would these policies do if the backends behaved as
they did in the log".

Trace arms must be routewise arm ids (``backend/mode``) since the Controller routes to them.

Examples
--------
>>> import json, os, tempfile
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
>>> with open(path, "w") as fh:
...     for i in range(2000):
...         arm = ["a:m/direct_emit", "b:m/direct_emit"][i % 2]
...         ok = bool(rng.random() < (0.9 if i % 2 == 0 else 0.6))
...         out = {"valid": ok, "latency_ms": float(rng.lognormal(6.5, 0.3)), "cost_usd": 0.001}
...         _ = fh.write(json.dumps({"arm": arm, "propensity": 0.5, "context": {"n": i % 5},
...                                  "outcome": out}) + "\\n")
>>> env = TraceEnvironment.fit(path)
>>> [a.id for a in env.arms]
['a:m/direct_emit', 'b:m/direct_emit']
>>> ctx, params = env.sample(4000, np.random.default_rng(1))
>>> params.p_valid.mean(axis=0).round(1).tolist()
[0.9, 0.6]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from routewise.errors import ConfigError, InvalidOutcome
from routewise.simulations.base import Environment
from routewise.simulations.models import ArmRidge, FeatureMap
from routewise.simulations.outcomes import FloatArray, OutcomeParams
from routewise.simulations.trace import SkippedLines, TraceEvent, TraceReader, TraceStats
from routewise.types import Arm, Outcome

__all__ = ["TraceEnvironment"]

_CHUNK = 4096
_PRIOR = 10.0


class TraceEnvironment(Environment):
    """Arms and outcome models fitted to a trace; requests resampled from its contexts.

    Build it with :meth:`fit` (see the module docstring for an example); :attr:`summary`
    describes the fit (events used, lines skipped, per-arm fitted rates).
    """

    def __init__(
        self,
        *,
        name: str,
        arms: list[Arm],
        contexts: list[dict[str, Any]],
        p_valid: FloatArray,
        lat_mu: FloatArray,
        lat_sigma: FloatArray,
        cost: FloatArray,
        error_rate: FloatArray,
        timeout_share: FloatArray,
        timeout_ms: FloatArray,
        error_latency_ms: FloatArray,
        summary: dict[str, Any],
    ) -> None:
        self.name = name
        self._arms = arms
        self.contexts = contexts
        self._p_valid = p_valid
        self._lat_mu = lat_mu
        self._lat_sigma = lat_sigma
        self._cost = cost
        self._error_rate = error_rate
        self._timeout_share = timeout_share
        self._timeout_ms = timeout_ms
        self._error_latency_ms = error_latency_ms
        self.summary = summary

    @property
    def arms(self) -> list[Arm]:
        return list(self._arms)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "arms": [a.id for a in self._arms], "fitted": self.summary}

    def sample(
        self, n: int, rng: np.random.Generator, mix: str | None = None
    ) -> tuple[list[dict[str, Any]], OutcomeParams]:
        if mix is not None and mix != "logged":
            raise ConfigError(
                "mix", f"a trace-fitted environment only has its logged traffic, not {mix!r}"
            )
        idx = rng.integers(0, len(self.contexts), size=n)
        k = len(self._arms)

        def full(v: FloatArray) -> FloatArray:
            return np.broadcast_to(v, (n, k)).copy()

        return [self.contexts[i] for i in idx.tolist()], OutcomeParams(
            p_valid=self._p_valid[idx],
            error_rate=full(self._error_rate),
            timeout_share=full(self._timeout_share),
            lat_mu=self._lat_mu[idx],
            lat_sigma=full(self._lat_sigma),
            cost=self._cost[idx],
            timeout_ms=full(self._timeout_ms),
            error_latency_ms=full(self._error_latency_ms),
        )

    @classmethod
    def fit(
        cls,
        trace: str | Path,
        *,
        strict: bool = False,
        max_contexts: int = 50_000,
        seed: int = 0,
        lam: float = 1.0,
        min_events: int = 1,
    ) -> TraceEnvironment:
        """Fit the outcome models of every logged arm (see the module docstring).

        Lines without an ``outcome`` cannot be used; lines whose arm is not a
        ``backend/mode`` id or whose outcome is invalid are bad lines (skipped and counted,
        or fatal with ``strict``). :attr:`summary` on the result tells how many.
        """
        reader = TraceReader(trace, strict=strict)
        fitting = _Fitting(
            SkippedLines(str(trace), strict=strict, unit=reader.unit),
            max_contexts=max_contexts,
            seed=seed,
            lam=lam,
        )
        for ev in reader:
            fitting.add(ev)
        fitting.served.flush()
        stats: TraceStats = reader.stats
        if not fitting.arms or fitting.contexts.seen < min_events:
            raise ConfigError(
                "trace",
                f"{Path(trace).name}: no events with an outcome to fit ({stats.lines} lines: "
                f"{stats.bad} bad, {stats.pending} pending, {fitting.no_outcome} without outcome, "
                f"{fitting.skips.count} skipped)",
            )
        return fitting.environment(cls, trace, stats)


class _Failures:
    """Per arm: calls, failed calls, timeouts and the summed log-latency of each kind of
    failure; :meth:`fit` shrinks the rates towards all arms' by ``_PRIOR`` pseudo-calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.errors: list[int] = []
        self.timeouts: list[int] = []
        self.log_timeout: list[float] = []
        self.log_error: list[float] = []

    def add_arm(self) -> None:
        for counts in (self.calls, self.errors, self.timeouts):
            counts.append(0)
        self.log_timeout.append(0.0)
        self.log_error.append(0.0)

    def add(self, k: int, out: Outcome) -> bool:
        """Count one call of arm ``k``; whether it was served (no error)."""
        self.calls[k] += 1
        if out.error is None:
            return True
        self.errors[k] += 1
        if out.error == "timeout":
            self.timeouts[k] += 1
            self.log_timeout[k] += math.log(max(out.latency_ms, 1e-3))
        else:
            self.log_error[k] += math.log(max(out.latency_ms, 1e-3))
        return False

    def fit(self) -> dict[str, FloatArray]:
        """``calls``, ``errors`` and the shrunk ``error_rate``, ``timeout_share``,
        ``timeout_ms`` and ``error_latency_ms`` of every arm."""
        calls = np.asarray(self.calls, dtype=np.float64)
        errs = np.asarray(self.errors, dtype=np.float64)
        tos = np.asarray(self.timeouts, dtype=np.float64)
        pooled_err = errs.sum() / calls.sum()
        pooled_to = tos.sum() / errs.sum() if errs.sum() else 0.5
        lt = np.asarray(self.log_timeout)
        le = np.asarray(self.log_error)
        pooled_lt = lt.sum() / tos.sum() if tos.sum() else math.log(30_000.0)
        pooled_le = le.sum() / (errs - tos).sum() if (errs - tos).sum() else math.log(400.0)
        return {
            "calls": calls,
            "errors": errs,
            "error_rate": (errs + _PRIOR * pooled_err) / (calls + _PRIOR),
            "timeout_share": (tos + _PRIOR * pooled_to) / (errs + _PRIOR),
            "timeout_ms": np.exp((lt + _PRIOR * pooled_lt) / (tos + _PRIOR)),
            "error_latency_ms": np.exp((le + _PRIOR * pooled_le) / (errs - tos + _PRIOR)),
        }


class _Served:
    """Ridge models of P(valid), log-latency and cost on served calls, fed in chunks."""

    def __init__(self, fmap: FeatureMap, lam: float) -> None:
        self.fmap = fmap
        self.valid = ArmRidge(fmap.max_dim, lam=lam)
        self.latency = ArmRidge(fmap.max_dim, lam=lam)
        self.cost = ArmRidge(fmap.max_dim, lam=lam)
        self._ctx: list[dict[str, Any]] = []
        self._arm: list[int] = []
        self._valid: list[float] = []
        self._lat: list[float] = []
        self._cost: list[float] = []

    def add(self, context: dict[str, Any], k: int, out: Outcome) -> None:
        self._ctx.append(context)
        self._arm.append(k)
        self._valid.append(out.correctness)
        self._lat.append(out.latency_ms)
        self._cost.append(out.cost_usd)
        if len(self._arm) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self._arm:
            return
        X = self.fmap.matrix(self._ctx)
        a = np.asarray(self._arm, dtype=np.int64)
        self.valid.add(X, a, np.asarray(self._valid))
        self.latency.add(X, a, np.log(np.maximum(np.asarray(self._lat), 1e-3)))
        self.cost.add(X, a, np.asarray(self._cost))
        for lst in (self._ctx, self._arm, self._valid, self._lat, self._cost):
            lst.clear()

    def predict(self, contexts: list[dict[str, Any]], k_arms: int) -> dict[str, FloatArray]:
        """``p_valid``, ``lat_mu`` and ``cost`` on every context (n × K), and every arm's
        ``lat_sigma`` (its RMS log-latency residual, else the arms' mean)."""
        X = self.fmap.matrix(contexts, dim=self.fmap.dim)
        arm_list = list(range(k_arms))
        sds = np.array([self.latency.residual_sd(k) for k in range(k_arms)])
        pooled_sd = float(np.nanmean(sds)) if np.isfinite(sds).any() else 0.5
        return {
            "p_valid": np.clip(self.valid.predict(X, arm_list), 0.0, 1.0),
            "lat_mu": self.latency.predict(X, arm_list),
            "cost": np.maximum(self.cost.predict(X, arm_list), 0.0),
            "lat_sigma": np.where(np.isfinite(sds), sds, pooled_sd),
        }


class _ContextSample:
    """A uniform sample of at most ``cap`` contexts of a stream (Algorithm R)."""

    def __init__(self, cap: int, seed: int) -> None:
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.items: list[dict[str, Any]] = []
        self.seen = 0

    def add(self, context: dict[str, Any]) -> None:
        if self.seen < self.cap:
            self.items.append(context)
        else:
            j = int(self.rng.integers(0, self.seen + 1))
            if j < self.cap:
                self.items[j] = context
        self.seen += 1


class _Fitting:
    """:meth:`TraceEnvironment.fit` in progress: the arms seen so far and the statistics
    of their calls, fed one trace event at a time."""

    def __init__(self, skips: SkippedLines, *, max_contexts: int, seed: int, lam: float) -> None:
        self.skips = skips
        self.fmap = FeatureMap()
        self.arms: dict[str, int] = {}
        self.failures = _Failures()
        self.served = _Served(self.fmap, lam)
        self.contexts = _ContextSample(max_contexts, seed)
        self.no_outcome = 0

    def add(self, ev: TraceEvent) -> None:
        if ev.outcome is None:
            self.no_outcome += 1
            return
        try:
            out = Outcome.from_dict(ev.outcome)
        except InvalidOutcome as exc:
            self.skips.bad(ev.line, f"outcome.{exc.field}", exc.reason)
            return
        k = self.arms.get(ev.arm)
        if k is None:
            try:
                Arm.parse(ev.arm)
            except ConfigError:
                self.skips.bad(
                    ev.line,
                    "arm",
                    f"{ev.arm!r} is not a 'backend/mode' arm id (needed to simulate)",
                )
                return
            k = self.arms[ev.arm] = len(self.arms)
            self.failures.add_arm()
        self.contexts.add(ev.context)
        if self.failures.add(k, out):
            self.served.add(ev.context, k, out)

    def environment(
        self, cls: type[TraceEnvironment], trace: str | Path, stats: TraceStats
    ) -> TraceEnvironment:
        """The fitted environment (of class ``cls``), with its :attr:`~TraceEnvironment.summary`."""
        ids = list(self.arms)
        fail = self.failures.fit()
        model = self.served.predict(self.contexts.items, len(ids))
        calls, errs = fail["calls"], fail["errors"]
        summary = {
            "source": str(trace),
            "events": self.contexts.seen,
            "contexts_kept": len(self.contexts.items),
            "bad_lines": stats.bad + self.skips.count,
            "pending_lines": stats.pending,
            "without_outcome": self.no_outcome,
            "errors": (stats.errors + self.skips.errors)[:20],
            "features": self.fmap.names,
            "arms": {
                a: {
                    "calls": int(calls[k]),
                    "served": int(calls[k] - errs[k]),
                    "error_rate": float(fail["error_rate"][k]),
                    "p_valid_mean": float(model["p_valid"][:, k].mean()),
                    "latency_median_ms": float(np.exp(np.median(model["lat_mu"][:, k]))),
                    "latency_sigma": float(model["lat_sigma"][k]),
                    "cost_mean_usd": float(model["cost"][:, k].mean()),
                }
                for k, a in enumerate(ids)
            },
        }
        return cls(
            name=f"trace:{Path(trace).name}",
            arms=[Arm.parse(a) for a in ids],
            contexts=self.contexts.items,
            p_valid=model["p_valid"],
            lat_mu=model["lat_mu"],
            lat_sigma=model["lat_sigma"],
            cost=model["cost"],
            error_rate=fail["error_rate"],
            timeout_share=fail["timeout_share"],
            timeout_ms=fail["timeout_ms"],
            error_latency_ms=fail["error_latency_ms"],
            summary=summary,
        )
