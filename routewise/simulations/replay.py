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

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from routewise.errors import ConfigError, RoutewiseError
from routewise.reward import get_reward
from routewise.reward.base import RewardFunction
from routewise.simulations.candidates import (
    Candidate,
    LearningCandidate,
    StaticCandidate,
    parse_candidate,
)
from routewise.simulations.ope import DEFAULT_MAX_DRAWS, DEFAULT_N_BOOT, DEFAULT_TAU
from routewise.simulations.replay_eval import Bootstrap, Evaluator, RewardModel
from routewise.simulations.replay_input import Chunk, UsableRounds, read_chunks
from routewise.simulations.replay_result import CandidateResult, RejectionResult, ReplayResult
from routewise.simulations.trace import TraceReader

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


def _candidates(
    specs: Sequence[str | Path | Candidate], features: Mapping[str, Any] | None
) -> list[Candidate]:
    """The parsed candidates (distinct names), learning ones with the ``features`` spec."""
    cands = [parse_candidate(c) for c in specs]
    if not cands:
        raise ConfigError("policy", "at least one candidate is required")
    names = [c.name for c in cands]
    if len(set(names)) != len(names):
        raise ConfigError(
            "policy", f"candidate listed twice: {sorted({n for n in names if names.count(n) > 1})}"
        )
    feats = dict(features) if features is not None else None
    return [
        LearningCandidate(c.name, c.spec, c.learn_reward, feats)
        if isinstance(c, LearningCandidate)
        else c
        for c in cands
    ]


def _fit(reader: TraceReader, chunks: Iterator[Chunk], rounds: UsableRounds) -> RewardModel:
    """Pass 1: the arms, the reward model and the logging diagnostics."""
    model = RewardModel()
    for ch in chunks:
        model.add(ch)
    rounds.first = False
    if model.n == 0:
        st = reader.stats
        raise ConfigError(
            "trace",
            f"{reader.path.name}: no usable events ({st.lines} lines: {st.bad} bad, "
            f"{st.pending} without feedback, {rounds.skipped.count} skipped)",
        )
    return model


def _add_static_arms(cands: list[Candidate], arm_index: dict[str, int]) -> None:
    """Number the arms only static candidates name, after the trace's."""
    for c in cands:
        if isinstance(c, StaticCandidate):
            for a in c.probs:
                arm_index.setdefault(a, len(arm_index))


def _reward_name(eval_reward: RewardFunction | None) -> str:
    if eval_reward is None:
        return "logged reward"
    return str(getattr(eval_reward, "name", type(eval_reward).__name__))


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
    cands = _candidates(candidates, features)
    eval_reward = get_reward(reward) if reward is not None else None
    learn_rewards = {
        c.name: c.learn_reward
        for c in cands
        if isinstance(c, LearningCandidate) and c.learn_reward is not None
    }
    if not tau > 0:
        raise ConfigError("tau", f"must be > 0, got {tau!r}")
    boot = Bootstrap(alpha=alpha, n_boot=n_boot, seed=seed, max_draws=max_draws)
    reader = TraceReader(trace, strict=strict)
    rounds = UsableRounds(str(trace), strict=strict, unit=reader.unit)
    model = _fit(reader, read_chunks(reader, eval_reward, learn_rewards, rounds), rounds)
    arm_index = rounds.arm_index
    k_trace = len(arm_index)
    uniform = model.uniform(k_trace)
    _add_static_arms(cands, arm_index)
    if rejection and not uniform:
        raise ConfigError(
            "rejection",
            "Li et al. replay needs a uniformly logged trace (propensity = 1/#eligible arms at "
            "every line); this trace is not — use the IPS/DR estimates instead",
        )
    ev = Evaluator(cands, model, arm_index, k_trace, tau=tau, boot=boot, rejection=rejection)
    for ch in read_chunks(reader, eval_reward, learn_rewards, rounds):  # pass 2: evaluate
        ev.add(ch)
    if ev.n != model.n:  # pragma: no cover - both passes skip the same lines by construction
        raise RoutewiseError(f"trace changed between passes ({model.n} then {ev.n} usable events)")
    intervals = ev.intervals(rounds.reward_sum / model.n)
    return ReplayResult(
        n=model.n,
        candidates=ev.results(intervals),
        logged=intervals["logged"],
        reward=_reward_name(eval_reward),
        arms=ev.trace_arms,
        uniform=uniform,
        stats=reader.stats,
        skipped=rounds.skipped.count,
        skip_errors=rounds.skipped.errors,
    )
