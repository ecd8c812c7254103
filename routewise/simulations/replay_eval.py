"""The estimation passes of :func:`~routewise.simulations.replay` over a trace's
:class:`~routewise.simulations.replay_input.Chunk` s.

* :class:`RewardModel` (pass 1): the reward model ``q̂(x, a)``, per-arm ridge regression on
  a fixed feature map, cross-fitted over two folds, its predictions clipped to the range of
  the logged rewards;
* :class:`Evaluator` (pass 2): for every candidate, the probability ``π_e(a_t|x_t)`` of the
  logged arm and the model value ``Σ_a π_e(a|x_t)·q̂(x_t, a)``, turned into the per-round
  terms of the estimators (:mod:`~routewise.simulations.ope`), summed (the point
  estimates) and sampled uniformly (:class:`Reservoir`, for the bootstrap intervals).

Learning candidates learn as they go (:class:`Learner`), and with ``rejection`` also run
Li et al.'s rejection replay.

Examples
--------
>>> import numpy as np
>>> sums = EstimatorSums()
>>> terms, w = estimator_terms(np.array([1.0, 0.0]), np.array([0.5, 0.5]),
...                            np.array([1.0, 0.0]), np.array([0.8, 0.2]),
...                            np.array([0.8, 0.6]), tau=100.0)
>>> sums.add(terms, w)
>>> {k: round(v, 3) for k, v in sums.points().items()}
{'ips': 1.0, 'snips': 1.0, 'dm': 0.7, 'dr': 0.9, 'switch_dr': 0.9}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from routewise.bandits import Policy
from routewise.controller.features import Featurizer
from routewise.simulations.candidates import Candidate, LearningCandidate, StaticCandidate
from routewise.simulations.models import ArmRidge, FeatureMap
from routewise.simulations.ope import ESTIMATORS, Estimate, bootstrap_intervals, check_bootstrap
from routewise.simulations.replay_input import Chunk
from routewise.simulations.replay_result import CandidateResult, RejectionResult

__all__ = [
    "Bootstrap",
    "EstimatorSums",
    "Evaluator",
    "Learner",
    "Reservoir",
    "RewardModel",
    "estimator_terms",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_UNIFORM_TOL = 1e-6


class Reservoir:
    """A uniform sample (without replacement) of at most ``cap`` rows of a stream.

    Examples
    --------
    >>> import numpy as np
    >>> res = Reservoir(3, 1, np.random.default_rng(0))
    >>> res.add(np.arange(10.0)[:, None])
    >>> res.rows.shape
    (3, 1)
    """

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


class EstimatorSums:
    """Running sums of one candidate's per-round terms and importance weights: the point
    estimates and Kish's effective sample size (see the module docstring for an example)."""

    def __init__(self) -> None:
        self.n = 0
        self.w = 0.0
        self.w2 = 0.0
        self.ips = 0.0
        self.snips = 0.0
        self.dm = 0.0
        self.dr = 0.0
        self.switch_dr = 0.0

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


def estimator_terms(
    r: FloatArray, p: FloatArray, t: FloatArray, q: FloatArray, v: FloatArray, tau: float
) -> tuple[FloatArray, FloatArray]:
    """Per-round terms (ips, snips num, snips den, dm, dr, switch_dr) and the weights, from
    the rewards ``r``, logging propensities ``p``, target probabilities ``t`` of the logged
    arms, model predictions ``q`` for the logged arms and model values ``v``."""
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


class RewardModel:
    """Pass 1: the cross-fitted reward model, the reward range, and whether the logging
    propensities were uniform (``1/#eligible`` on every round)."""

    def __init__(self) -> None:
        self.fmap = FeatureMap()
        self.ridge = ArmRidge(self.fmap.max_dim, folds=2)
        self.n = 0
        self.r_min = math.inf
        self.r_max = -math.inf
        self._uniform = True
        self._no_eligible_p: set[float] = set()

    def add(self, ch: Chunk) -> None:
        for i in range(ch.arms.shape[0]):
            el = ch.eligible[i]
            if el is not None and abs(ch.pscore[i] * len(el) - 1.0) > _UNIFORM_TOL:
                self._uniform = False
            elif el is None and len(self._no_eligible_p) < 4:
                self._no_eligible_p.add(round(float(ch.pscore[i]), 9))
        X = self.fmap.matrix(ch.contexts)
        self.ridge.add(X, ch.arms, ch.reward, ch.fold)
        self.n += ch.arms.shape[0]
        self.r_min = min(self.r_min, float(ch.reward.min()))
        self.r_max = max(self.r_max, float(ch.reward.max()))

    def uniform(self, k_trace: int) -> bool:
        """Uniform logging, given the trace's ``k_trace`` arms (the eligible set of rounds
        that do not list theirs)."""
        p = self._no_eligible_p
        if len(p) > 1 or (p and abs(next(iter(p)) * k_trace - 1.0) > _UNIFORM_TOL):
            return False
        return self._uniform


class Learner:
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

    def chunk(
        self, ch: Chunk, Q: FloatArray, trace_arms: list[str], rej: Reservoir
    ) -> tuple[FloatArray, FloatArray]:
        """Target probabilities and model values over one chunk, learning as it goes (and
        running the rejection replay, if any, whose accepted rewards go to ``rej``)."""
        c_n = ch.arms.shape[0]
        t = np.empty(c_n)
        v = np.empty(c_n)
        learn = ch.learn.get(self.cand.name, ch.reward)
        idx_cache: dict[tuple[str, ...] | None, tuple[list[str] | None, npt.NDArray[np.intp]]] = {}
        all_idx = np.arange(len(trace_arms))
        accepted: list[float] = []
        pol, fz = self.policy, self.featurizer
        rejecting = self.rej_policy is not None
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
            if rejecting and self._rejection_round(ch, i, names, arm_id, float(learn[i])):
                accepted.append(float(ch.reward[i]))
        if accepted:
            rej.add(np.asarray(accepted)[:, None])
        return t, v

    def _rejection_round(
        self, ch: Chunk, i: int, names: list[str] | None, arm_id: str, learn: float
    ) -> bool:
        """Li et al.'s replay of round ``i``: whether the policy picked the logged arm (it
        then learns from the round)."""
        if self.rej_policy is None or self.rej_featurizer is None:
            return False
        x = self.rej_featurizer.transform(ch.contexts[i])
        if self.rej_policy.select(x, names).arm != arm_id:
            return False
        self.rej_policy.update(arm_id, x, learn)
        self.accepted += 1
        self.accepted_sum += float(ch.reward[i])
        return True


def _static_probs(base: FloatArray, mask: BoolArray) -> FloatArray:
    """A static distribution restricted to each round's eligible arms and renormalized
    (uniform over them where it puts no mass)."""
    P = base * mask
    s = P.sum(axis=1)
    empty = s <= 0
    if empty.any():
        P[empty] = mask[empty]
        s[empty] = mask[empty].sum(axis=1)
    P /= s[:, None]
    return P


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """The settings of the bootstrap intervals
    (:func:`~routewise.simulations.ope.bootstrap_intervals`).

    Examples
    --------
    >>> import numpy as np
    >>> boot = Bootstrap(alpha=0.05, n_boot=200, seed=0, max_draws=10**6)
    >>> est = boot.intervals({"r": (np.tile([0.0, 1.0], 50), None)}, 100, {"r": 0.5})["r"]
    >>> est.value, est.ci_low < 0.5 < est.ci_high
    (0.5, True)
    """

    alpha: float
    n_boot: int
    seed: int
    max_draws: int

    def __post_init__(self) -> None:
        check_bootstrap(self.alpha, self.n_boot)  # before max_draws // n_boot divides by it

    def intervals(
        self,
        columns: Mapping[str, tuple[FloatArray, FloatArray | None]],
        n_total: int,
        point: Mapping[str, float],
    ) -> dict[str, Estimate]:
        return bootstrap_intervals(
            columns,
            n_total=n_total,
            point=point,
            alpha=self.alpha,
            n_boot=self.n_boot,
            seed=self.seed,
            max_draws=self.max_draws,
        )


class Evaluator:
    """Pass 2: every candidate's estimator terms over the chunks, then its estimates (see
    :func:`~routewise.simulations.replay` for an example).

    ``arm_index`` numbers the trace's ``k_trace`` arms first, then the arms only static
    candidates name; the first ``k_trace`` are the arms learning candidates route among.
    """

    def __init__(
        self,
        cands: list[Candidate],
        model: RewardModel,
        arm_index: dict[str, int],
        k_trace: int,
        *,
        tau: float,
        boot: Bootstrap,
        rejection: bool,
    ) -> None:
        self.cands = cands
        self.model = model
        self.dim = model.fmap.dim
        self.arm_index = arm_index
        self.trace_arms = list(arm_index)[:k_trace]
        self.k_all = len(arm_index)
        self.tau = tau
        self.boot = boot
        self.rejection = rejection
        self.width = 1 + 6 * len(cands)
        cap = max(2, boot.max_draws // boot.n_boot)
        self.reservoir = Reservoir(cap, self.width, np.random.default_rng(boot.seed))
        self.sums = [EstimatorSums() for _ in cands]
        self.learners = {
            c.name: Learner(c, self.trace_arms, boot.seed, rejection)
            for c in cands
            if isinstance(c, LearningCandidate)
        }
        self.accepted = {
            name: Reservoir(cap, 1, np.random.default_rng((boot.seed, 1, i)))
            for i, name in enumerate(self.learners)
        }
        all_arms = list(arm_index)
        self.static_base = {
            c.name: np.array([c.probs.get(a, 0.0) for a in all_arms])
            for c in cands
            if isinstance(c, StaticCandidate)
        }
        self.trace_mask = np.zeros(self.k_all, dtype=bool)
        self.trace_mask[:k_trace] = True
        self._mask_cache: dict[tuple[str, ...], BoolArray] = {}
        self.n = 0

    def _mask(self, eligible: list[list[str] | None]) -> BoolArray:
        """Each round's eligible arms (the trace's arms where the round lists none)."""
        mask = np.empty((len(eligible), self.k_all), dtype=bool)
        for i, el in enumerate(eligible):
            if el is None:
                mask[i] = self.trace_mask
            else:
                key = tuple(el)
                m = self._mask_cache.get(key)
                if m is None:
                    m = np.zeros(self.k_all, dtype=bool)
                    m[[self.arm_index[a] for a in el]] = True
                    self._mask_cache[key] = m
                mask[i] = m
        return mask

    def add(self, ch: Chunk) -> None:
        c_n = ch.arms.shape[0]
        model = self.model
        X = model.fmap.matrix(ch.contexts, dim=self.dim)
        Q = np.clip(
            model.ridge.predict(X, list(range(self.k_all)), ch.fold), model.r_min, model.r_max
        )
        rows = np.arange(c_n)
        q_logged = Q[rows, ch.arms]
        mask = self._mask(ch.eligible)
        block = np.empty((c_n, self.width))
        block[:, 0] = ch.reward
        for j, c in enumerate(self.cands):
            if isinstance(c, StaticCandidate):
                P = _static_probs(self.static_base[c.name], mask)
                t = P[rows, ch.arms]
                v = (P * Q).sum(axis=1)
            else:
                t, v = self.learners[c.name].chunk(ch, Q, self.trace_arms, self.accepted[c.name])
            terms, w = estimator_terms(ch.reward, ch.pscore, t, q_logged, v, self.tau)
            self.sums[j].add(terms, w)
            block[:, 1 + 6 * j : 7 + 6 * j] = terms
        self.reservoir.add(block)
        self.n += c_n

    def intervals(self, logged_mean: float) -> dict[str, Estimate]:
        """Every candidate's estimates (``"{j}:{estimator}"``) and the logging policy's own
        mean reward (``"logged"``), with their bootstrap intervals."""
        sample = self.reservoir.rows
        cols: dict[str, tuple[FloatArray, FloatArray | None]] = {"logged": (sample[:, 0], None)}
        points: dict[str, float] = {"logged": logged_mean}
        for j in range(len(self.cands)):
            base = 1 + 6 * j
            p = self.sums[j].points()
            cols[f"{j}:ips"] = (sample[:, base], None)
            cols[f"{j}:snips"] = (sample[:, base + 1], sample[:, base + 2])
            cols[f"{j}:dm"] = (sample[:, base + 3], None)
            cols[f"{j}:dr"] = (sample[:, base + 4], None)
            cols[f"{j}:switch_dr"] = (sample[:, base + 5], None)
            for k in ESTIMATORS:
                points[f"{j}:{k}"] = p[k]
        return self.boot.intervals(cols, self.n, points)

    def _rejection(self, name: str) -> RejectionResult:
        lr = self.learners[name]
        if lr.accepted >= 2:
            e = self.boot.intervals(
                {"r": (self.accepted[name].rows[:, 0], None)},
                lr.accepted,
                {"r": lr.accepted_sum / lr.accepted},
            )["r"]
        else:
            e = Estimate(math.nan, math.nan, math.nan)
        return RejectionResult(e, lr.accepted)

    def results(self, intervals: Mapping[str, Estimate]) -> list[CandidateResult]:
        """One result per candidate, from :meth:`intervals`."""
        results: list[CandidateResult] = []
        for j, c in enumerate(self.cands):
            rej = None
            unsupported = 0.0
            if isinstance(c, LearningCandidate):
                if self.rejection:
                    rej = self._rejection(c.name)
            else:
                unsupported = float(
                    sum(
                        v
                        for a, v in c.probs.items()
                        if self.model.ridge.count(self.arm_index[a]) == 0
                    )
                )
            results.append(
                CandidateResult(
                    name=c.name,
                    kind="static" if isinstance(c, StaticCandidate) else "learning",
                    ess=self.sums[j].ess,
                    estimates={k: intervals[f"{j}:{k}"] for k in ESTIMATORS},
                    rejection=rej,
                    unsupported_mass=unsupported,
                )
            )
        return results
