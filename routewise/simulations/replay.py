"""Offline evaluation of candidate policies on a logged trace (off-policy evaluation).

:func:`replay` reads a trace (JSONL or a routewise SQLite store) twice, streaming:

1. **Fit.** A reward model ``q̂(x, a)`` — per-arm ridge regression on a fixed feature map of
   the context (:mod:`~routewise.simulations.models`), *cross-fitted*: the rounds are split in
   two folds by position and each fold is predicted by the model fitted on the other, so a
   round's own reward never enters its prediction.
2. **Evaluate.** For every candidate, the probability ``π_e(a_t|x_t)`` it gives the logged
   arm and its model value ``Σ_a π_e(a|x_t)·q̂(x_t, a)``; the IPS, SNIPS, DM, DR and Switch-DR
   estimates (:mod:`~routewise.simulations.ope`) come from running sums, their bootstrap
   intervals from a uniform reservoir sample of the per-round terms, and Kish's effective
   sample size from the weights.

Memory is constant in the trace length (the models' sufficient statistics, one chunk, the
reservoir). Arm ids are opaque strings, so traces of other systems can be evaluated.

Candidates
----------
* a **static distribution** — a JSON file ``{arm_id: probability}``. At each round it is
  restricted to the arms eligible then (the line's ``eligible`` list, else every arm of the
  trace) and renormalized (uniform over them if it puts no mass there);
* a **learning policy** — ``name[:param=value…][@reward]`` (``squarecb``,
  ``linucb:alpha=0.3``, ``squarecb@low_latency``), run progressively: at round ``t`` it scores
  the context with what it learned from rounds ``< t`` (its features from routewise's own
  featurizer, as in production), and then learns from the logged arm and reward (with the
  ``@reward`` preset recomputed from the logged outcome, if given). The estimate is the
  average value of that sequence of policies: "how it would have routed this traffic while
  learning from this feedback". Its distribution at ``t`` depends only on the past, so IPS
  and DR stay unbiased.

With ``rejection=True`` learning policies are also evaluated by Li et al.'s (2011) replay
method on a *uniformly* logged trace: the policy picks an arm; if it is the logged one the
round counts and the policy learns from it, else the round is dropped. This is the faithful
on-policy simulation (the policy learns only from its own choices); it needs the logging
propensity to be exactly ``1/#eligible`` at every round.

Examples
--------
>>> import json, os, tempfile
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> path = os.path.join(tempfile.mkdtemp(), "trace.jsonl")
>>> with open(path, "w") as fh:
...     for i in range(3000):
...         arm = ["a", "b"][int(rng.integers(2))]
...         r = float(rng.random() < (0.8 if arm == "a" else 0.3))
...         _ = fh.write(json.dumps({"arm": arm, "propensity": 0.5, "context": {"x": i % 3},
...                                  "reward": r}) + "\\n")
>>> only_a = os.path.join(os.path.dirname(path), "only_a.json")
>>> with open(only_a, "w") as fh:
...     _ = fh.write('{"a": 1.0}')
>>> res = replay(path, [only_a, "squarecb"], n_boot=200)
>>> res.n, [c.name for c in res.candidates]
(3000, ['only_a', 'squarecb'])
>>> est = res.candidates[0].estimates["dr"]
>>> est.ci_low < 0.8 < est.ci_high
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.bandits import Policy
from routewise.controller.features import Featurizer
from routewise.errors import ConfigError, InvalidOutcome, RoutewiseError
from routewise.reward import Scalarizer, get_reward
from routewise.reward.base import RewardFunction
from routewise.simulations.models import ArmRidge, FeatureMap
from routewise.simulations.ope import (
    DEFAULT_MAX_DRAWS,
    DEFAULT_N_BOOT,
    DEFAULT_TAU,
    ESTIMATORS,
    Estimate,
    bootstrap_intervals,
)
from routewise.simulations.runner import PolicySpec, parse_policy_spec
from routewise.simulations.trace import TraceError, TraceEvent, TraceReader, TraceStats
from routewise.types import Outcome

__all__ = [
    "Candidate",
    "CandidateResult",
    "LearningCandidate",
    "RejectionResult",
    "ReplayResult",
    "StaticCandidate",
    "parse_candidate",
    "replay",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

_CHUNK = 4096
_UNIFORM_TOL = 1e-6


# ------------------------------------------------------------------------- candidates
@dataclass(frozen=True, slots=True)
class StaticCandidate:
    """A fixed distribution over arm ids.

    Examples
    --------
    >>> StaticCandidate.from_mapping("half", {"a": 0.5, "b": 0.5}).probs
    {'a': 0.5, 'b': 0.5}
    >>> StaticCandidate.from_mapping("bad", {"a": 0.7})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: distribution: probabilities must sum to 1, they sum to 0.7
    """

    name: str
    probs: dict[str, float]

    @classmethod
    def from_file(cls, path: str | Path) -> StaticCandidate:
        """Read ``{arm_id: probability}`` (non-negative, summing to 1) from a JSON file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("policy", f"distribution file {str(p)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(str(p), f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_mapping(p.stem, data, source=str(p))

    @classmethod
    def from_mapping(cls, name: str, data: Any, *, source: str = "distribution") -> StaticCandidate:
        if not isinstance(data, dict) or not data:
            raise ConfigError(source, "must be a non-empty JSON object {arm_id: probability}")
        probs: dict[str, float] = {}
        for arm, v in data.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (math.isfinite(v) and v >= 0)
            ):
                raise ConfigError(f"{source}: {arm}", f"must be a probability >= 0, got {v!r}")
            probs[str(arm)] = float(v)
        total = sum(probs.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(source, f"probabilities must sum to 1, they sum to {total:.6g}")
        return cls(name, probs)


@dataclass(frozen=True, slots=True)
class LearningCandidate:
    """A registered policy learning as it goes (optionally from a different reward).

    Examples
    --------
    >>> from routewise.simulations import parse_policy_spec
    >>> LearningCandidate("ts", parse_policy_spec("lints")).spec.policy
    'lints'
    """

    name: str
    spec: PolicySpec
    learn_reward: Scalarizer | None = None
    features: dict[str, Any] | None = None


Candidate = StaticCandidate | LearningCandidate


def parse_candidate(spec: str | Path | Candidate) -> Candidate:
    """A candidate from a CLI-style spec: a ``.json`` distribution file (or any ``Path``),
    or ``policy[:param=value…][@reward_preset]``.

    Examples
    --------
    >>> c = parse_candidate("linucb:alpha=0.3@low_latency")
    >>> c.name, c.spec.policy, c.spec.params, c.learn_reward.name
    ('linucb:alpha=0.3@low_latency', 'linucb', {'alpha': 0.3}, 'low_latency')
    """
    if isinstance(spec, StaticCandidate | LearningCandidate):
        return spec
    if isinstance(spec, Path):
        return StaticCandidate.from_file(spec)
    text = spec.strip()
    if text.lower().endswith(".json") or Path(text).is_file():
        return StaticCandidate.from_file(text)
    pol, at, rew = text.partition("@")
    learn = None
    if at:
        r = get_reward(rew)
        if not isinstance(r, Scalarizer):  # pragma: no cover - presets are Scalarizers
            raise ConfigError("policy", f"{text!r}: @reward must be a preset")
        learn = r
    return LearningCandidate(text, parse_policy_spec(pol), learn)


# --------------------------------------------------------------------------- results
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
    """One candidate's estimates (see :func:`replay` for an example)."""

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
    """What :func:`replay` found; :meth:`to_dict` is the ``--json`` output (see
    :func:`replay` and the module docstring for an example)."""

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


# -------------------------------------------------------------------------- helpers
class _Reservoir:
    """A uniform sample (without replacement) of at most ``cap`` rows of a stream."""

    def __init__(self, cap: int, width: int, rng: np.random.Generator) -> None:
        self.cap = cap
        self.rng = rng
        self.keys: FloatArray = np.empty(0)
        self.rows: FloatArray = np.empty((0, width))

    def add(self, rows: FloatArray) -> None:
        keys: FloatArray = np.asarray(self.rng.random(rows.shape[0]), dtype=np.float64)
        if self.keys.shape[0] >= self.cap:
            keep = keys < self.keys.max()
            keys, rows = keys[keep], rows[keep]
            if not keys.size:
                return
        k = np.concatenate([self.keys, keys])
        r = np.concatenate([self.rows, rows])
        if k.shape[0] > self.cap:
            idx = np.argpartition(k, self.cap - 1)[: self.cap]
            k, r = k[idx], r[idx]
        self.keys, self.rows = k, r


@dataclass(slots=True)
class _Chunk:
    contexts: list[dict[str, Any]]
    arms: IntArray
    pscore: FloatArray
    reward: FloatArray
    learn: dict[str, FloatArray]
    eligible: list[list[str] | None]
    fold: IntArray


@dataclass(slots=True)
class _Sums:
    n: int = 0
    w: float = 0.0
    w2: float = 0.0
    ips: float = 0.0
    snips: float = 0.0
    dm: float = 0.0
    dr: float = 0.0
    switch_dr: float = 0.0

    def add(self, t: FloatArray, w: FloatArray) -> None:
        self.n += int(w.shape[0])
        self.w += float(w.sum())
        self.w2 += float((w * w).sum())
        s = t.sum(axis=0)
        self.ips += float(s[0])
        self.snips += float(s[1])
        self.dm += float(s[3])
        self.dr += float(s[4])
        self.switch_dr += float(s[5])

    def points(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            "ips": self.ips / n,
            "snips": self.snips / self.w if self.w > 0 else 0.0,
            "dm": self.dm / n,
            "dr": self.dr / n,
            "switch_dr": self.switch_dr / n,
        }

    @property
    def ess(self) -> float:
        return self.w * self.w / self.w2 if self.w2 > 0 else 0.0


class _Learner:
    """A learning candidate's state during the evaluation pass."""

    def __init__(
        self, cand: LearningCandidate, arms: list[str], seed: int, rejection: bool
    ) -> None:
        self.cand = cand
        self.policy: Policy = cand.spec.build(seed)
        self.policy.add_arms(arms)
        self.featurizer = Featurizer(cand.features)
        self.rej_policy: Policy | None = None
        self.rej_featurizer: Featurizer | None = None
        if rejection:
            self.rej_policy = cand.spec.build(seed)
            self.rej_policy.add_arms(arms)
            self.rej_featurizer = Featurizer(cand.features)
        self.accepted = 0
        self.accepted_sum = 0.0


def _terms(
    r: FloatArray, p: FloatArray, t: FloatArray, q: FloatArray, v: FloatArray, tau: float
) -> tuple[FloatArray, FloatArray]:
    """Per-round terms (ips, snips num, snips den, dm, dr, switch_dr) and the weights."""
    w = t / p
    resid = r - q
    out = np.empty((r.shape[0], 6))
    out[:, 0] = w * r
    out[:, 1] = w * r
    out[:, 2] = w
    out[:, 3] = v
    out[:, 4] = v + w * resid
    out[:, 5] = v + np.where(w <= tau, w, 0.0) * resid
    return out, w


# --------------------------------------------------------------------------- replay
def replay(
    trace: str | Path,
    candidates: Sequence[str | Path | Candidate],
    *,
    reward: str | Mapping[str, Any] | RewardFunction | None = None,
    strict: bool = False,
    rejection: bool = False,
    tau: float = DEFAULT_TAU,
    alpha: float = 0.05,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    max_draws: int = DEFAULT_MAX_DRAWS,
    features: Mapping[str, Any] | None = None,
) -> ReplayResult:
    """Estimate each candidate's value on the logged trace (see the module docstring).

    Parameters
    ----------
    trace
        JSONL file or routewise SQLite store.
    candidates
        Specs (see :func:`parse_candidate`) or candidate objects.
    reward
        ``None``: each line's logged ``reward``. A preset name or weights: recompute every
        reward from the line's logged ``outcome``.
    strict
        Fail at the first unusable line (:class:`~routewise.simulations.trace.TraceError`)
        instead of skipping it.
    rejection
        Also run Li et al.'s rejection replay for learning candidates (uniform logs only).
    tau
        Switch-DR threshold on the importance weight.
    alpha, n_boot, seed, max_draws
        Bootstrap settings (see :mod:`~routewise.simulations.ope`).
    features
        Feature spec for learning candidates' featurizer (as the Controller's ``features``).
    """
    cands = [parse_candidate(c) for c in candidates]
    if not cands:
        raise ConfigError("policy", "at least one candidate is required")
    names = [c.name for c in cands]
    if len(set(names)) != len(names):
        raise ConfigError(
            "policy", f"candidate listed twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    feats = dict(features) if features is not None else None
    cands = [
        LearningCandidate(c.name, c.spec, c.learn_reward, feats)
        if isinstance(c, LearningCandidate)
        else c
        for c in cands
    ]
    eval_reward = get_reward(reward) if reward is not None else None
    learn_rewards = {
        c.name: c.learn_reward
        for c in cands
        if isinstance(c, LearningCandidate) and c.learn_reward is not None
    }
    if not tau > 0:
        raise ConfigError("tau", f"must be > 0, got {tau!r}")
    reader = TraceReader(trace, strict=strict)
    skip = _Skipper(str(trace), strict, reader.unit)

    def events() -> Iterator[_Chunk]:
        return _chunks(reader, eval_reward, learn_rewards, skip)

    # ---- pass 1: arms, reward model, logging diagnostics
    fmap = FeatureMap()
    ridge = ArmRidge(fmap.max_dim, folds=2)
    arm_index: dict[str, int] = {}
    n = 0
    r_min, r_max = math.inf, -math.inf
    uniform = True
    no_eligible_p: set[float] = set()
    for ch in events():
        for i in range(ch.arms.shape[0]):
            el = ch.eligible[i]
            if el is not None and abs(ch.pscore[i] * len(el) - 1.0) > _UNIFORM_TOL:
                uniform = False
            elif el is None and len(no_eligible_p) < 4:
                no_eligible_p.add(round(float(ch.pscore[i]), 9))
        X = fmap.matrix(ch.contexts)
        ridge.add(X, ch.arms, ch.reward, ch.fold)
        n += ch.arms.shape[0]
        r_min = min(r_min, float(ch.reward.min()))
        r_max = max(r_max, float(ch.reward.max()))
    skip.first = False
    arm_index = skip.arm_index
    if n == 0:
        st = reader.stats
        raise ConfigError(
            "trace",
            f"{Path(trace).name}: no usable events ({st.lines} lines: {st.bad} bad, "
            f"{st.pending} without feedback, {skip.count} skipped)",
        )
    trace_arms = list(arm_index)
    k_trace = len(trace_arms)
    if len(no_eligible_p) > 1 or (
        no_eligible_p and abs(next(iter(no_eligible_p)) * k_trace - 1.0) > _UNIFORM_TOL
    ):
        uniform = False
    for c in cands:
        if isinstance(c, StaticCandidate):
            for a in c.probs:
                if a not in arm_index:
                    arm_index[a] = len(arm_index)
    all_arms = list(arm_index)
    k_all = len(all_arms)
    if rejection and not uniform:
        raise ConfigError(
            "rejection",
            "Li et al. replay needs a uniformly logged trace (propensity = 1/#eligible arms at "
            "every line); this trace is not — use the IPS/DR estimates instead",
        )
    dim = fmap.dim

    # ---- pass 2: evaluate
    rng = np.random.default_rng(seed)
    width = 1 + 6 * len(cands)
    cap = max(2, max_draws // n_boot)
    res = _Reservoir(cap, width, rng)
    sums = [_Sums() for _ in cands]
    learners = {
        c.name: _Learner(c, trace_arms, seed, rejection)
        for c in cands
        if isinstance(c, LearningCandidate)
    }
    rej_res = {
        name: _Reservoir(cap, 1, np.random.default_rng((seed, 1, i)))
        for i, name in enumerate(learners)
    }
    static_base = {
        c.name: np.array([c.probs.get(a, 0.0) for a in all_arms])
        for c in cands
        if isinstance(c, StaticCandidate)
    }
    trace_mask = np.zeros(k_all, dtype=bool)
    trace_mask[:k_trace] = True
    mask_cache: dict[tuple[str, ...], BoolArray] = {}
    n2 = 0
    for ch in events():
        c_n = ch.arms.shape[0]
        X = fmap.matrix(ch.contexts, dim=dim)
        Q = np.clip(ridge.predict(X, list(range(k_all)), ch.fold), r_min, r_max)
        rows = np.arange(c_n)
        q_logged = Q[rows, ch.arms]
        mask = np.empty((c_n, k_all), dtype=bool)
        for i, el in enumerate(ch.eligible):
            if el is None:
                mask[i] = trace_mask
            else:
                key = tuple(el)
                m = mask_cache.get(key)
                if m is None:
                    m = np.zeros(k_all, dtype=bool)
                    m[[arm_index[a] for a in el]] = True
                    mask_cache[key] = m
                mask[i] = m
        block = np.empty((c_n, width))
        block[:, 0] = ch.reward
        for j, c in enumerate(cands):
            if isinstance(c, StaticCandidate):
                P = static_base[c.name] * mask
                s = P.sum(axis=1)
                empty = s <= 0
                if empty.any():
                    P[empty] = mask[empty]
                    s[empty] = mask[empty].sum(axis=1)
                P /= s[:, None]
                t = P[rows, ch.arms]
                v = (P * Q).sum(axis=1)
            else:
                t, v = _learn_chunk(learners[c.name], ch, Q, mask, trace_arms, rej_res[c.name])
            terms, w = _terms(ch.reward, ch.pscore, t, q_logged, v, tau)
            sums[j].add(terms, w)
            block[:, 1 + 6 * j : 7 + 6 * j] = terms
        res.add(block)
        n2 += c_n
    if n2 != n:  # pragma: no cover - both passes skip the same lines by construction
        raise RoutewiseError(f"trace changed between passes ({n} then {n2} usable events)")

    # ---- intervals
    sample = res.rows
    boot_cols: dict[str, tuple[FloatArray, FloatArray | None]] = {"logged": (sample[:, 0], None)}
    points: dict[str, float] = {"logged": skip.reward_sum / n}
    for j in range(len(cands)):
        base = 1 + 6 * j
        p = sums[j].points()
        boot_cols[f"{j}:ips"] = (sample[:, base], None)
        boot_cols[f"{j}:snips"] = (sample[:, base + 1], sample[:, base + 2])
        boot_cols[f"{j}:dm"] = (sample[:, base + 3], None)
        boot_cols[f"{j}:dr"] = (sample[:, base + 4], None)
        boot_cols[f"{j}:switch_dr"] = (sample[:, base + 5], None)
        for k in ESTIMATORS:
            points[f"{j}:{k}"] = p[k]
    intervals = bootstrap_intervals(
        boot_cols,
        n_total=n,
        point=points,
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        max_draws=max_draws,
    )
    results: list[CandidateResult] = []
    for j, c in enumerate(cands):
        est = {k: intervals[f"{j}:{k}"] for k in ESTIMATORS}
        rej = None
        unsupported = 0.0
        if isinstance(c, LearningCandidate):
            lr = learners[c.name]
            if rejection:
                acc = rej_res[c.name].rows[:, 0]
                if lr.accepted >= 2:
                    e = bootstrap_intervals(
                        {"r": (acc, None)},
                        n_total=lr.accepted,
                        point={"r": lr.accepted_sum / lr.accepted},
                        alpha=alpha,
                        n_boot=n_boot,
                        seed=seed,
                        max_draws=max_draws,
                    )["r"]
                else:
                    e = Estimate(math.nan, math.nan, math.nan)
                rej = RejectionResult(e, lr.accepted)
        else:
            unsupported = float(
                sum(v for a, v in c.probs.items() if ridge.count(arm_index[a]) == 0)
            )
        results.append(
            CandidateResult(
                name=c.name,
                kind="static" if isinstance(c, StaticCandidate) else "learning",
                ess=sums[j].ess,
                estimates=est,
                rejection=rej,
                unsupported_mass=unsupported,
            )
        )
    reward_name = (
        "logged reward"
        if eval_reward is None
        else str(getattr(eval_reward, "name", type(eval_reward).__name__))
    )
    return ReplayResult(
        n=n,
        candidates=results,
        logged=intervals["logged"],
        reward=reward_name,
        arms=trace_arms,
        uniform=uniform,
        stats=reader.stats,
        skipped=skip.count,
        skip_errors=skip.errors,
    )


def _learn_chunk(
    lr: _Learner,
    ch: _Chunk,
    Q: FloatArray,
    mask: BoolArray,
    trace_arms: list[str],
    rej: _Reservoir,
) -> tuple[FloatArray, FloatArray]:
    """Target probabilities and model values of a learning candidate over one chunk,
    learning as it goes (and running its rejection replay, if any)."""
    c_n = ch.arms.shape[0]
    t = np.empty(c_n)
    v = np.empty(c_n)
    learn = ch.learn.get(lr.cand.name, ch.reward)
    idx_cache: dict[tuple[str, ...] | None, tuple[list[str] | None, npt.NDArray[np.intp]]] = {}
    all_idx = np.arange(len(trace_arms))
    accepted: list[float] = []
    pol, fz = lr.policy, lr.featurizer
    arms = ch.arms.tolist()
    for i in range(c_n):
        el = ch.eligible[i]
        key = tuple(el) if el is not None else None
        got = idx_cache.get(key)
        if got is None:
            if el is None:
                got = (None, all_idx)
            else:
                got = (el, np.array([trace_arms.index(a) for a in el], dtype=np.intp))
            idx_cache[key] = got
        names, idx = got
        a = arms[i]
        x = fz.transform(ch.contexts[i])
        probs = pol.distribution(x, names)[0]
        pos = int(np.flatnonzero(idx == a)[0])
        t[i] = probs[pos]
        v[i] = float(probs @ Q[i, idx])
        arm_id = trace_arms[a]
        pol.update(arm_id, x, float(learn[i]))
        if lr.rej_policy is not None and lr.rej_featurizer is not None:
            x2 = lr.rej_featurizer.transform(ch.contexts[i])
            sel = lr.rej_policy.select(x2, names)
            if sel.arm == arm_id:
                r = float(learn[i])
                lr.rej_policy.update(arm_id, x2, r)
                lr.accepted += 1
                lr.accepted_sum += float(ch.reward[i])
                accepted.append(float(ch.reward[i]))
    del mask
    if accepted:
        rej.add(np.asarray(accepted)[:, None])
    return t, v


class _Skipper:
    """Rounds the reader accepted but replay cannot use (no outcome to recompute a reward,
    an invalid outcome): counted, or fatal with ``strict``. Also tracks the arm universe."""

    def __init__(self, source: str, strict: bool, unit: str = "line") -> None:
        self.source = source
        self.strict = strict
        self.unit = unit
        self.first = True
        self.count = 0
        self.errors: list[str] = []
        self.arm_index: dict[str, int] = {}
        self.reward_sum = 0.0

    def bad(self, line: int, field: str, reason: str) -> None:
        if self.strict:
            raise TraceError(self.source, line, field, reason, unit=self.unit)
        if not self.first:
            return
        self.count += 1
        if len(self.errors) < 20:
            self.errors.append(f"{self.unit} {line}: {field}: {reason}")


def _reward_of(fn: RewardFunction, outcome: Mapping[str, Any]) -> float:
    return float(fn(Outcome.from_dict(outcome)))


def _chunks(
    reader: TraceReader,
    eval_reward: RewardFunction | None,
    learn_rewards: Mapping[str, Scalarizer],
    skip: _Skipper,
) -> Iterator[_Chunk]:
    """Usable events in chunks, with their evaluation (and learning) rewards."""
    ctx: list[dict[str, Any]] = []
    arms: list[int] = []
    ps: list[float] = []
    rs: list[float] = []
    learn: dict[str, list[float]] = {k: [] for k in learn_rewards}
    elig: list[list[str] | None] = []
    folds: list[int] = []
    ordinal = 0
    first_pass = skip.first
    need_outcome = eval_reward is not None or bool(learn_rewards)

    def flush() -> _Chunk:
        return _Chunk(
            contexts=list(ctx),
            arms=np.asarray(arms, dtype=np.int64),
            pscore=np.asarray(ps, dtype=np.float64),
            reward=np.asarray(rs, dtype=np.float64),
            learn={k: np.asarray(v, dtype=np.float64) for k, v in learn.items()},
            eligible=list(elig),
            fold=np.asarray(folds, dtype=np.int64),
        )

    ev: TraceEvent
    for ev in reader:
        if need_outcome:
            if ev.outcome is None:
                skip.bad(
                    ev.line, "outcome", "is required to recompute the reward (--reward or @reward)"
                )
                continue
            try:
                r = _reward_of(eval_reward, ev.outcome) if eval_reward is not None else None
                lrs = {k: _reward_of(f, ev.outcome) for k, f in learn_rewards.items()}
            except InvalidOutcome as exc:
                skip.bad(ev.line, f"outcome.{exc.field}", exc.reason)
                continue
        else:
            r, lrs = None, {}
        if r is None:
            if ev.reward is None:
                skip.bad(ev.line, "reward", "is required (or pass --reward PRESET to recompute it)")
                continue
            r = ev.reward
        k = skip.arm_index.get(ev.arm)
        if k is None:
            if not first_pass:  # pragma: no cover - pass 1 saw every arm
                raise RoutewiseError(f"arm {ev.arm!r} appeared only in the second pass")
            k = skip.arm_index[ev.arm] = len(skip.arm_index)
        if ev.eligible is not None and first_pass:
            for a in ev.eligible:
                if a not in skip.arm_index:
                    skip.arm_index[a] = len(skip.arm_index)
        if first_pass:
            skip.reward_sum += r
        ctx.append(ev.context)
        arms.append(k)
        ps.append(ev.propensity)
        rs.append(r)
        for name, v in lrs.items():
            learn[name].append(v)
        elig.append(ev.eligible)
        folds.append(ordinal % 2)
        ordinal += 1
        if len(arms) >= _CHUNK:
            yield flush()
            ctx.clear()
            arms.clear()
            ps.clear()
            rs.clear()
            elig.clear()
            folds.clear()
            for v_list in learn.values():
                v_list.clear()
    if arms:
        yield flush()
