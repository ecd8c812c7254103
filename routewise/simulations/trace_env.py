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
from routewise.simulations.trace import TraceError, TraceReader, TraceStats
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
        or fatal with ``strict``). ``fit_stats`` on the result tells how many.
        """
        reader = TraceReader(trace, strict=strict)
        fmap = FeatureMap()
        dim = fmap.max_dim
        valid_m = ArmRidge(dim, lam=lam)
        lat_m = ArmRidge(dim, lam=lam)
        cost_m = ArmRidge(dim, lam=lam)
        arms: dict[str, int] = {}
        n_calls: list[int] = []
        n_err: list[int] = []
        n_timeout: list[int] = []
        log_timeout: list[float] = []
        log_error: list[float] = []
        rng = np.random.default_rng(seed)
        sample: list[dict[str, Any]] = []
        skipped = 0
        no_outcome = 0
        errors: list[str] = []
        buf_ctx: list[dict[str, Any]] = []
        buf_arm: list[int] = []
        buf_valid: list[float] = []
        buf_lat: list[float] = []
        buf_cost: list[float] = []
        seen = 0

        def bad(line: int, field: str, reason: str) -> None:
            nonlocal skipped
            if strict:
                raise TraceError(str(trace), line, field, reason, unit=reader.unit)
            skipped += 1
            if len(errors) < 20:
                errors.append(f"{reader.unit} {line}: {field}: {reason}")

        def flush() -> None:
            if not buf_arm:
                return
            X = fmap.matrix(buf_ctx)
            a = np.asarray(buf_arm, dtype=np.int64)
            valid_m.add(X, a, np.asarray(buf_valid))
            lat_m.add(X, a, np.log(np.maximum(np.asarray(buf_lat), 1e-3)))
            cost_m.add(X, a, np.asarray(buf_cost))
            for lst in (buf_ctx, buf_arm, buf_valid, buf_lat, buf_cost):
                lst.clear()

        for ev in reader:
            if ev.outcome is None:
                no_outcome += 1
                continue
            try:
                out = Outcome.from_dict(ev.outcome)
            except InvalidOutcome as exc:
                bad(ev.line, f"outcome.{exc.field}", exc.reason)
                continue
            k = arms.get(ev.arm)
            if k is None:
                try:
                    Arm.parse(ev.arm)
                except ConfigError:
                    bad(
                        ev.line,
                        "arm",
                        f"{ev.arm!r} is not a 'backend/mode' arm id (needed to simulate)",
                    )
                    continue
                k = arms[ev.arm] = len(arms)
                for lst in (n_calls, n_err, n_timeout):
                    lst.append(0)
                log_timeout.append(0.0)
                log_error.append(0.0)
            # uniform reservoir of contexts (Algorithm R)
            if seen < max_contexts:
                sample.append(ev.context)
            else:
                j = int(rng.integers(0, seen + 1))
                if j < max_contexts:
                    sample[j] = ev.context
            seen += 1
            n_calls[k] += 1
            if out.error is not None:
                n_err[k] += 1
                if out.error == "timeout":
                    n_timeout[k] += 1
                    log_timeout[k] += math.log(max(out.latency_ms, 1e-3))
                else:
                    log_error[k] += math.log(max(out.latency_ms, 1e-3))
                continue
            buf_ctx.append(ev.context)
            buf_arm.append(k)
            buf_valid.append(out.correctness)
            buf_lat.append(out.latency_ms)
            buf_cost.append(out.cost_usd)
            if len(buf_arm) >= _CHUNK:
                flush()
        flush()
        stats: TraceStats = reader.stats
        if not arms or seen < min_events:
            raise ConfigError(
                "trace",
                f"{Path(trace).name}: no events with an outcome to fit ({stats.lines} lines: "
                f"{stats.bad} bad, {stats.pending} pending, {no_outcome} without outcome, {skipped} skipped)",
            )
        ids = list(arms)
        K = len(ids)
        calls = np.asarray(n_calls, dtype=np.float64)
        errs = np.asarray(n_err, dtype=np.float64)
        tos = np.asarray(n_timeout, dtype=np.float64)
        pooled_err = errs.sum() / calls.sum()
        pooled_to = tos.sum() / errs.sum() if errs.sum() else 0.5
        error_rate = (errs + _PRIOR * pooled_err) / (calls + _PRIOR)
        timeout_share = (tos + _PRIOR * pooled_to) / (errs + _PRIOR)
        lt = np.asarray(log_timeout)
        le = np.asarray(log_error)
        pooled_lt = lt.sum() / tos.sum() if tos.sum() else math.log(30_000.0)
        pooled_le = le.sum() / (errs - tos).sum() if (errs - tos).sum() else math.log(400.0)
        timeout_ms = np.exp((lt + _PRIOR * pooled_lt) / (tos + _PRIOR))
        error_latency_ms = np.exp((le + _PRIOR * pooled_le) / (errs - tos + _PRIOR))

        X = fmap.matrix(sample, dim=fmap.dim)
        arm_list = list(range(K))
        p_valid = np.clip(valid_m.predict(X, arm_list), 0.0, 1.0)
        lat_mu = lat_m.predict(X, arm_list)
        cost = np.maximum(cost_m.predict(X, arm_list), 0.0)
        sds = np.array([lat_m.residual_sd(k) for k in range(K)])
        pooled_sd = float(np.nanmean(sds)) if np.isfinite(sds).any() else 0.5
        lat_sigma = np.where(np.isfinite(sds), sds, pooled_sd)

        summary = {
            "source": str(trace),
            "events": seen,
            "contexts_kept": len(sample),
            "bad_lines": stats.bad + skipped,
            "pending_lines": stats.pending,
            "without_outcome": no_outcome,
            "errors": (stats.errors + errors)[:20],
            "features": fmap.names,
            "arms": {
                a: {
                    "calls": int(calls[k]),
                    "served": int(calls[k] - errs[k]),
                    "error_rate": float(error_rate[k]),
                    "p_valid_mean": float(p_valid[:, k].mean()),
                    "latency_median_ms": float(np.exp(np.median(lat_mu[:, k]))),
                    "latency_sigma": float(lat_sigma[k]),
                    "cost_mean_usd": float(cost[:, k].mean()),
                }
                for k, a in enumerate(ids)
            },
        }
        return cls(
            name=f"trace:{Path(trace).name}",
            arms=[Arm.parse(a) for a in ids],
            contexts=sample,
            p_valid=p_valid,
            lat_mu=lat_mu,
            lat_sigma=lat_sigma,
            cost=cost,
            error_rate=error_rate,
            timeout_share=timeout_share,
            timeout_ms=timeout_ms,
            error_latency_ms=error_latency_ms,
            summary=summary,
        )
