"""Seeded environment families the Guardian was not tuned on (issue 17).

``benchmarks/guardian.py --families`` measures false quarantines, detection delay and regret
after a degradation in each family below. A family is a recipe for random routing
environments: ``FAMILIES[name](seed)`` draws one environment (its arms' outcome functions and
its traffic mix) from the *family seed*; :meth:`Family.run` then draws a run's requests and
outcome noise from a *run seed*. Same seeds, same numbers.

============== ===================================================================================
family         what it stresses
============== ===================================================================================
logistic       validity a random logistic surface over 5–10 mixed context features with random
               pairwise interactions and backend × mode interactions (per-arm coefficients);
               the Guardian's linear per-request models are misspecified on purpose
hetero_latency lognormal latency whose log-sd depends on the context (0.05–1.5)
pareto_latency heavy-tailed Pareto latency (shape 1.5–3) instead of lognormal
validity_high  validity near 0.999 (the Guardian's clamp region; a single failure is a big
               relative shortfall)
validity_low   validity near 0.6 (high Bernoulli noise)
drifting_mix   the traffic mix (the context distribution) drifts slowly over the run while the
               arms' outcome functions stay the same; the late mix brings categories the early
               one never showed (an arm's baseline judges requests it was never fitted on)
error_bursts   errors (``timeout`` / ``http_500``) in bursts from a two-state Markov-modulated
               process per arm, at a stationary long-run rate of 1–3 %
============== ===================================================================================

Every environment has 2–4 backends × the three output modes (6–12 arms, ``rw.make_arms``),
contexts are plain dicts (numbers, strings, booleans) the Controller featurizes itself, and
an outcome is an ``rw.Outcome(valid, latency_ms, cost_usd, error=…)``.

The model behind every family: a request has standardized features ``f`` (numbers after a
fixed transform — log for token and field counts —, booleans 0/1, categories one-hot). Arm
``k``'s validity is ``sigmoid(a_k + β_k·f + Σ_pairs γ_k,p f_i f_j)``, its latency has log-scale
``μ_k + λ_k·f`` and log-sd ``σ_k·exp(ρ_k·f)`` (``ρ = 0`` except in ``hetero_latency``), its
cost is a per-token price, and it fails with a small per-arm error rate (Markov-modulated in
``error_bursts``). Every coefficient is ``backend part + mode part + arm part``, so backend ×
mode interactions are present everywhere. Intercepts are solved so each arm's mean validity
on the initial traffic mix is the family's target. Latency and validity are independent given
the context, so the expected reward under a gated :class:`~routewise.reward.Scalarizer` is
exact (closed form for lognormal and Pareto latency, :func:`expected_reward`); in
``error_bursts`` it uses each arm's long-run error rate (the hidden burst state is not
something a router can know).

Examples
--------
>>> fam = FAMILIES["validity_high"](3)
>>> run = fam.run(seed=0)
>>> b = run.batch(500)
>>> len(b.contexts), b.mu.shape == (500, len(fam.arms))
(500, True)
>>> 0.99 <= float(b.p_valid.mean()) <= 1.0
True
>>> FAMILIES["validity_high"](3).run(seed=0).batch(500).contexts == b.contexts  # seeded
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

import routewise as rw
from routewise.reward import Scalarizer, get_reward
from routewise.simulations.outcomes import expected_latency_utility

__all__ = [
    "FAMILIES",
    "Batch",
    "Degradation",
    "DriftingMix",
    "ErrorBursts",
    "Family",
    "HeteroLatency",
    "Logistic",
    "ParetoLatency",
    "Run",
    "ValidityHigh",
    "ValidityLow",
    "expected_reward",
    "pareto_latency_utility",
]

FloatArray = npt.NDArray[np.float64]

BACKENDS = (
    "openai:gpt-5.4",
    "google_genai:gemini-2.5-flash-lite",
    "ollama:devstral-2",
    "bedrock:claude",
    "mistral:mistral-large",
    "groq:llama-4-scout",
)
TIMEOUT_MS = 30_000.0
HTTP_500_MS = 350.0
MAX_LATENCY_MS = 600_000.0  # a client gives up long before; keeps Pareto draws finite


@dataclass(frozen=True, slots=True)
class Numeric:
    """A numeric context key: ``t = loc + scale·z`` (``z`` standard normal, shifted by the mix),
    the raw value ``exp(t)`` if ``log`` else ``t``, clipped to ``[lo, hi]`` and rounded if
    ``integer``. The model sees ``(transform(raw) − loc) / scale``."""

    name: str
    loc: float
    scale: float
    lo: float
    hi: float
    log: bool = False
    integer: bool = True


NUMERIC = (
    Numeric("schema_depth", 3.0, 1.5, 1, 10),
    Numeric("field_count", math.log(12.0), 0.8, 1, 300, log=True),
    Numeric("input_tokens", math.log(1500.0), 0.9, 20, 100_000, log=True),
    Numeric("output_tokens", math.log(300.0), 0.7, 5, 8_000, log=True),
    Numeric("n_examples", 2.0, 1.5, 0, 8),
    Numeric("temperature", 0.4, 0.25, 0.0, 1.0, integer=False),
)
CATEGORICAL: dict[str, tuple[str, ...]] = {
    "language": ("en", "de", "fr", "es", "ja", "zh", "pt"),
    "task": ("extraction", "classification", "summarization", "codegen", "tagging"),
    "tenant_tier": ("free", "pro", "enterprise"),
    "source": ("api", "batch", "ui"),
}
BOOLEAN = ("has_arrays", "strict_enums")
_POOL = [f.name for f in NUMERIC] + list(CATEGORICAL) + list(BOOLEAN)
_NUM = {f.name: f for f in NUMERIC}


def _name_salt(name: str) -> int:
    return zlib.crc32(name.encode())


class ContextSpace:
    """The chosen context keys and two traffic mixes over them (A, the initial one, and B).

    :meth:`sample` draws each request from mix B with probability ``w`` (per request) and
    returns the context dicts and the model's design matrix (n × ``dim``)."""

    def __init__(self, keys: Sequence[str], rng: np.random.Generator, novel: bool = False) -> None:
        self.numeric = [_NUM[k] for k in keys if k in _NUM]
        self.categorical = [k for k in keys if k in CATEGORICAL]
        self.boolean = [k for k in keys if k in BOOLEAN]
        self.keys = [f.name for f in self.numeric] + self.categorical + self.boolean
        # mix B: numbers shifted (~0.7 sd; ~1.2 sd if ``novel``), other category and flag
        # frequencies; with ``novel`` mix A never shows about half of every key's categories
        # and its flags are rare, so mix B brings values the arms' baselines never saw
        self.shift = {f.name: float(rng.normal(0.0, 1.2 if novel else 0.7)) for f in self.numeric}
        self.probs = {
            k: self._category_probs(len(CATEGORICAL[k]), rng, novel) for k in self.categorical
        }
        self.flag_p = {
            k: (float(rng.uniform(0.02, 0.1)), float(rng.uniform(0.3, 0.7)))
            if novel
            else (float(rng.uniform(0.2, 0.6)), float(rng.uniform(0.1, 0.9)))
            for k in self.boolean
        }
        self.dim = (
            len(self.numeric)
            + len(self.boolean)
            + sum(len(CATEGORICAL[k]) for k in self.categorical)
        )

    @staticmethod
    def _category_probs(
        m: int, rng: np.random.Generator, novel: bool
    ) -> tuple[FloatArray, FloatArray]:
        """P(level) in mix A and in mix B."""
        if not novel:
            return rng.dirichlet(np.full(m, 3.0)), rng.dirichlet(np.full(m, 1.5))
        seen = rng.permutation(m) < max(1, m // 2)
        a = np.where(seen, rng.dirichlet(np.full(m, 3.0)), 0.0)
        b = rng.dirichlet(np.where(seen, 1.0, 3.0))
        return a / a.sum(), b

    def sample(
        self, n: int, rng: np.random.Generator, w: FloatArray | None = None
    ) -> tuple[list[dict[str, Any]], FloatArray, dict[str, FloatArray]]:
        """``n`` contexts, their design matrix and the raw numeric columns."""
        in_b = rng.random(n) < (w if w is not None else 0.0)
        cols: list[list[Any]] = []
        design: list[FloatArray] = []
        raw_num: dict[str, FloatArray] = {}
        z_depth = None
        for f in self.numeric:
            z = rng.standard_normal(n)
            if f.name == "field_count" and z_depth is not None:
                z = 0.6 * z_depth + 0.8 * z  # deeper schemas have more fields
            if f.name == "schema_depth":
                z_depth = z
            t = f.loc + f.scale * (z + np.where(in_b, self.shift[f.name], 0.0))
            raw = np.clip(np.exp(t) if f.log else t, f.lo, f.hi)
            if f.integer:
                raw = np.round(raw)
            raw_num[f.name] = raw
            back = np.log(np.maximum(raw, 1e-9)) if f.log else raw
            design.append((back - f.loc) / f.scale)
            cols.append(raw.astype(np.int64).tolist() if f.integer else np.round(raw, 2).tolist())
        for k in self.categorical:
            pa, pb = self.probs[k]
            levels = CATEGORICAL[k]
            u = rng.random(n)
            ia = np.searchsorted(np.cumsum(pa), u * pa.sum())
            ib = np.searchsorted(np.cumsum(pb), u * pb.sum())
            idx = np.minimum(np.where(in_b, ib, ia), len(levels) - 1)
            onehot = np.zeros((n, len(levels)))
            onehot[np.arange(n), idx] = 1.0
            design.extend(onehot.T)
            cols.append([levels[i] for i in idx.tolist()])
        for k in self.boolean:
            pa, pb = self.flag_p[k]
            flag = rng.random(n) < np.where(in_b, pb, pa)
            design.append(flag.astype(np.float64))
            cols.append(flag.tolist())
        contexts = [dict(zip(self.keys, row, strict=True)) for row in zip(*cols, strict=True)]
        return contexts, np.column_stack(design), raw_num


@dataclass(frozen=True, slots=True)
class Degradation:
    """What happens to arm ``arm`` (its index) from a change on: latency × ``latency_factor``
    and validity − ``validity_drop`` (absolute, floored at 0)."""

    arm: int
    latency_factor: float = 1.0
    validity_drop: float = 0.0


@dataclass(slots=True)
class Batch:
    """``n`` consecutive requests of a run: contexts, every arm's realized outcome on each
    (common random numbers across arms), the true validity ``p_valid``, the median latency
    ``median_ms`` and the exact expected reward ``mu`` of every (request, arm) under the run's
    reward (``n × K`` arrays)."""

    contexts: list[dict[str, Any]]
    valid: list[list[bool]]
    latency_ms: list[list[float]]
    cost_usd: list[list[float]]
    error: list[list[int]]
    """0 = no error, 1 = ``timeout``, 2 = ``http_500``."""
    p_valid: FloatArray
    median_ms: FloatArray
    """The median latency of a served call (the latency draws are this × the noise)."""
    mu: FloatArray

    def outcome(self, i: int, k: int) -> rw.Outcome:
        """The outcome arm ``k`` produced on request ``i``."""
        code = self.error[i][k]
        if code:
            return rw.Outcome(
                valid=False,
                latency_ms=TIMEOUT_MS if code == 1 else HTTP_500_MS,
                cost_usd=0.0,
                error="timeout" if code == 1 else "http_500",
            )
        return rw.Outcome(
            valid=self.valid[i][k], latency_ms=self.latency_ms[i][k], cost_usd=self.cost_usd[i][k]
        )


def pareto_latency_utility(scale: FloatArray, shape: FloatArray, budget: float) -> FloatArray:
    """``E[clip(1 − L/budget, 0, 1)]`` for ``L ~ Pareto(scale, shape)`` (type I, ``shape ≠ 1``):
    ``P(L < B) − α x_m^α (B^{1−α} − x_m^{1−α}) / ((1 − α) B)`` when ``x_m < B``, else 0.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> exact = float(pareto_latency_utility(np.array([800.0]), np.array([2.0]), 5000.0)[0])
    >>> draws = 800.0 * (1.0 - rng.random(400_000)) ** (-1 / 2.0)
    >>> abs(exact - float(np.clip(1 - draws / 5000.0, 0, 1).mean())) < 2e-3
    True
    """
    xm = np.minimum(scale, budget)
    a = shape
    below = 1.0 - (xm / budget) ** a
    partial = a * xm**a * (budget ** (1.0 - a) - xm ** (1.0 - a)) / (1.0 - a)
    out: FloatArray = np.where(scale < budget, np.clip(below - partial / budget, 0.0, 1.0), 0.0)
    return out


def expected_reward(
    reward: Scalarizer,
    p_valid: FloatArray,
    lat_utility: FloatArray,
    cost: FloatArray,
    error_rate: FloatArray,
) -> FloatArray:
    """Exact ``E[reward]`` per (request, arm) when validity and latency are independent given
    the context; a failed call has no correctness and costs nothing (half of the failures are
    timeouts of :data:`TIMEOUT_MS`, half fast ``http_500`` of :data:`HTTP_500_MS`)."""
    w = reward.weights
    wc, wl, wk = w["correctness"], w["latency"], w["cost"]
    u_cost = np.clip(1.0 - cost / reward.cost_budget_usd, 0.0, 1.0)
    if reward.gate:
        out: FloatArray = (1.0 - error_rate) * p_valid * (wc + wl * lat_utility + wk * u_cost)
    else:
        b = reward.latency_budget_ms
        u_err = 0.5 * max(0.0, 1.0 - TIMEOUT_MS / b) + 0.5 * max(0.0, 1.0 - HTTP_500_MS / b)
        served = wc * p_valid + wl * lat_utility + wk * u_cost
        out = (1.0 - error_rate) * served + error_rate * (wl * u_err + wk)
    return np.minimum(out, 1.0)


def _parts(
    rng: np.random.Generator,
    backend: list[int],
    mode: list[int],
    shape: tuple[int, ...],
    sds: tuple[float, float, float],
) -> FloatArray:
    """Per-arm coefficients ``backend part + mode part + arm part`` (backend × mode
    interactions through the arm part)."""
    nb, nm = max(backend) + 1, max(mode) + 1
    b = rng.normal(0.0, sds[0], (nb, *shape))
    m = rng.normal(0.0, sds[1], (nm, *shape))
    a = rng.normal(0.0, sds[2], (len(backend), *shape))
    out: FloatArray = b[backend] + m[mode] + a
    return out


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


class Family:
    """A random routing environment drawn from ``seed``; subclasses set the class attributes
    (and override a hook or two) to make what they stress. See the module docstring.

    Examples
    --------
    >>> fam = Logistic(0)
    >>> 6 <= len(fam.arms) <= 12 and 5 <= len(fam.space.keys) <= 10
    True
    """

    name: ClassVar[str] = "base"
    stresses: ClassVar[str] = ""
    n_features: ClassVar[tuple[int, int]] = (5, 8)
    n_backends: ClassVar[tuple[int, int]] = (2, 4)
    validity: ClassVar[tuple[float, float]] = (0.75, 0.95)
    effect_sd: ClassVar[float] = 0.35
    n_pairs: ClassVar[tuple[int, int]] = (0, 1)
    log_sd: ClassVar[tuple[float, float]] = (0.2, 0.45)
    hetero: ClassVar[float] = 0.0
    pareto_shape: ClassVar[tuple[float, float] | None] = None
    error_rate: ClassVar[tuple[float, float]] = (0.0, 0.003)
    novel_mix: ClassVar[bool] = False

    def __init__(self, seed: int) -> None:
        self.seed = seed
        rng = np.random.default_rng((_name_salt(self.name), seed))
        nb = int(rng.integers(self.n_backends[0], self.n_backends[1] + 1))
        self.backends = [BACKENDS[i] for i in sorted(rng.choice(len(BACKENDS), nb, replace=False))]
        self.arms = rw.make_arms(self.backends)
        backend = [self.backends.index(a.backend) for a in self.arms]
        modes = sorted({a.mode.value for a in self.arms})
        mode = [modes.index(a.mode.value) for a in self.arms]
        self.space = ContextSpace(self._keys(rng), rng, novel=self.novel_mix)
        k, d = len(self.arms), self.space.dim
        s = self.effect_sd
        self.beta = _parts(rng, backend, mode, (d,), (s, 0.6 * s, 0.6 * s))
        cols = rng.permutation(d)
        npairs = min(int(rng.integers(self.n_pairs[0], self.n_pairs[1] + 1)), d // 2)
        self.pairs = [(int(cols[2 * i]), int(cols[2 * i + 1])) for i in range(npairs)]
        self.gamma = _parts(rng, backend, mode, (npairs,), (s, 0.5 * s, 0.5 * s))
        self.lat_mu = np.log(rng.uniform(300.0, 2500.0, nb))[backend] + rng.normal(0, 0.15, k)
        self.lam = _parts(rng, backend, mode, (d,), (0.08, 0.03, 0.03))
        for j, f in enumerate(self.space.numeric):  # bigger inputs and outputs are slower
            if f.name in ("input_tokens", "output_tokens", "field_count"):
                self.lam[:, j] += rng.uniform(0.1, 0.35, nb)[backend]
        self.sigma = rng.uniform(*self.log_sd, k)
        self.rho = _parts(rng, backend, mode, (d,), (self.hetero, 0.5 * self.hetero, 0.0))
        shape = self.pareto_shape
        self.shape = rng.uniform(*shape, k) if shape is not None else np.zeros(k)
        self.price = rng.uniform(0.05, 2.0, nb)[backend] * rng.uniform(0.8, 1.2, k) / 1000.0
        self.err = rng.uniform(*self.error_rate, k)
        self._extra(rng)
        self.intercept = self._solve_intercepts(rng.uniform(*self.validity, k), rng)

    # ----------------------------------------------------------------- hooks
    def _keys(self, rng: np.random.Generator) -> list[str]:
        """5–10 context keys: at least two numbers and one category."""
        lo, hi = self.n_features
        while True:
            n = int(rng.integers(lo, hi + 1))
            keys = [_POOL[i] for i in sorted(rng.choice(len(_POOL), n, replace=False))]
            if sum(k in _NUM for k in keys) >= 2 and any(k in CATEGORICAL for k in keys):
                return keys

    def _extra(self, rng: np.random.Generator) -> None:
        """More parameters a subclass draws (after the shared ones, before the intercepts)."""

    def mix_weight(self, rounds: npt.NDArray[np.int64]) -> FloatArray | None:
        """P(a request at each round comes from mix B); ``None``: always mix A."""
        return None

    def error_rates(self, n: int, rng: np.random.Generator, run: Run) -> FloatArray:
        """P(the call fails) for ``n`` consecutive requests × arms (here: iid per arm)."""
        return np.broadcast_to(self.err, (n, len(self.arms)))

    def long_run_error_rate(self) -> FloatArray:
        """Each arm's long-run failure rate (what the expected reward uses)."""
        return self.err

    # ----------------------------------------------------------------- model
    def _logit(self, design: FloatArray) -> FloatArray:
        z: FloatArray = design @ self.beta.T
        for p, (i, j) in enumerate(self.pairs):
            z += np.outer(design[:, i] * design[:, j], self.gamma[:, p])
        return z

    def _solve_intercepts(self, target: FloatArray, rng: np.random.Generator) -> FloatArray:
        """Intercepts giving every arm mean validity ``target`` on mix A (Newton's method on
        the mean of the sigmoid, which is increasing and smooth in the intercept)."""
        _, design, _ = self.space.sample(3000, rng)
        z = self._logit(design)
        a = np.log(target / (1.0 - target)) - z.mean(axis=0)
        for _ in range(30):
            s = _sigmoid(z + a)
            gap = s.mean(axis=0) - target
            if np.all(np.abs(gap) < 1e-7):
                break
            a -= np.clip(gap / np.maximum((s * (1.0 - s)).mean(axis=0), 1e-9), -2.0, 2.0)
        out: FloatArray = a
        return out

    def params(
        self, design: FloatArray, raw: dict[str, FloatArray]
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(p_valid, log-median latency, log-sd, cost)`` per (request, arm)."""
        p = _sigmoid(self._logit(design) + self.intercept)
        loc = self.lat_mu + design @ self.lam.T
        sd = np.clip(self.sigma * np.exp(design @ self.rho.T), 0.05, 1.5)
        n = design.shape[0]
        tokens = raw.get("input_tokens", np.full(n, 1500.0)) + raw.get(
            "output_tokens", np.full(n, 300.0)
        )
        cost = np.outer(tokens, self.price)
        return p, loc, sd, cost

    def latency_utility(self, loc: FloatArray, sd: FloatArray, budget: float) -> FloatArray:
        if self.pareto_shape is not None:
            scale = np.exp(loc) * 2.0 ** (-1.0 / self.shape)  # median = exp(loc)
            return pareto_latency_utility(scale, np.broadcast_to(self.shape, loc.shape), budget)
        return expected_latency_utility(loc, sd, budget)

    def run(self, seed: int, reward: Scalarizer | None = None) -> Run:
        """The requests of one run (seeded by ``seed``)."""
        return Run(self, seed, reward)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "seed": self.seed,
            "arms": [a.id for a in self.arms],
            "context_keys": self.space.keys,
            "pairs": len(self.pairs),
        }


class Run:
    """One run's traffic: :meth:`batch` draws the next ``n`` requests, their contexts from
    ``numpy.random.default_rng((family seed, run seed, batch number))`` — the same batches
    in the same order give the same requests (common random numbers across policies and
    with/without the Guardian)."""

    def __init__(self, family: Family, seed: int, reward: Scalarizer | None = None) -> None:
        self.family = family
        self.seed = seed
        self.reward = reward if reward is not None else get_reward("balanced")
        self.t = 0
        self._i = 0
        self.state: Any = None  # a family's per-run hidden state (error_bursts: burst flags)

    def batch(self, n: int, degradation: Degradation | None = None) -> Batch:
        fam = self.family
        rng = np.random.default_rng((_name_salt(fam.name), fam.seed, self.seed, self._i))
        w = fam.mix_weight(np.arange(self.t, self.t + n))
        contexts, design, raw = fam.space.sample(n, rng, w)
        p, loc, sd, cost = fam.params(design, raw)
        err = fam.error_rates(n, rng, self)
        if degradation is not None:
            k = degradation.arm
            loc[:, k] += math.log(degradation.latency_factor)
            p[:, k] = np.maximum(p[:, k] - degradation.validity_drop, 0.0)
        u = rng.random((4, n, 1))
        failed = u[0] < err
        code = np.where(failed, np.where(u[1] < 0.5, 1, 2), 0)
        if fam.pareto_shape is not None:
            lat = np.exp(loc) * (2.0 * (1.0 - u[2])) ** (-1.0 / fam.shape)
        else:
            lat = np.exp(loc + sd * rng.standard_normal((n, 1)))
        valid = u[3] < p
        mu = expected_reward(
            self.reward,
            p,
            fam.latency_utility(loc, sd, self.reward.latency_budget_ms),
            cost,
            np.broadcast_to(fam.long_run_error_rate(), p.shape),
        )
        self.t += n
        self._i += 1
        return Batch(
            contexts=contexts,
            valid=valid.tolist(),
            latency_ms=np.minimum(lat, MAX_LATENCY_MS).tolist(),
            cost_usd=cost.tolist(),
            error=code.tolist(),
            p_valid=p,
            median_ms=np.exp(loc),
            mu=mu,
        )


# ---------------------------------------------------------------------------- the families
class Logistic(Family):
    """Random logistic validity surfaces over 5–10 mixed context features (numbers,
    categories, flags) with 2–4 random pairwise interactions and backend × mode interactions,
    lognormal latency depending on the context. Stresses: the Guardian's *linear* per-request
    validity and latency models (of the featurizer's raw-standardized columns) are
    misspecified — a confident but wrong expectation must not trip an arm."""

    name = "logistic"
    n_features = (5, 10)
    effect_sd = 0.6
    n_pairs = (2, 4)


class HeteroLatency(Family):
    """Heteroscedastic lognormal latency: the log-sd is ``σ_k·exp(ρ_k·f)``, between 0.05 and
    1.5 depending on the request. Stresses: a latency CUSUM standardized by one pooled
    variance over-reacts to the requests with a wide latency distribution."""

    name = "hetero_latency"
    log_sd = (0.15, 0.4)
    hetero = 0.35


class ParetoLatency(Family):
    """Heavy-tailed Pareto latency (shape 1.5–3, median set by the context) instead of
    lognormal. Stresses: rare huge latencies (infinite variance at shape ≤ 2) and a skewed
    log-latency in a detector built for Gaussian log-latency residuals."""

    name = "pareto_latency"
    pareto_shape = (1.5, 3.0)


class ValidityHigh(Family):
    """Validity near 0.999 (per-arm means 0.997–0.9995, small context effects). Stresses:
    the clamp of expected validity and a Bernoulli CUSUM where one invalid answer is a large
    relative shortfall."""

    name = "validity_high"
    validity = (0.997, 0.9995)
    effect_sd = 0.3


class ValidityLow(Family):
    """Validity near 0.6 (per-arm means 0.5–0.7). Stresses: high Bernoulli noise in the
    validity detector's recent-rate confirmation."""

    name = "validity_low"
    validity = (0.5, 0.7)


class DriftingMix(Family):
    """A traffic mix that drifts slowly: requests come from mix B with probability
    ``(1 − cos(π t / drift_rounds)) / 2`` at round ``t`` (A → B over ``drift_rounds``
    rounds, then back), while every arm's outcome function stays the same. Mix A never shows
    about half of each key's categories (``language`` and ``task`` are always among the keys)
    and its flags are rare; mix B brings them, and shifts the numbers by ~1.2 sd. Stresses:
    baselines fitted on one mix judging requests of another — feature columns an arm's model
    never saw a non-zero value in, and extrapolation of a misfit model (a confident but wrong
    expectation)."""

    name = "drifting_mix"
    n_features = (6, 10)
    effect_sd = 0.5
    n_pairs = (1, 3)
    novel_mix = True
    drift_rounds: ClassVar[int] = 6000

    def _keys(self, rng: np.random.Generator) -> list[str]:
        keys = super()._keys(rng)
        return [k for k in _POOL if k in keys or k in ("language", "task")]

    def mix_weight(self, rounds: npt.NDArray[np.int64]) -> FloatArray | None:
        out: FloatArray = 0.5 * (1.0 - np.cos(np.pi * rounds / self.drift_rounds))
        return out


class ErrorBursts(Family):
    """Errors in bursts: every arm has a hidden calm/burst state, a two-state Markov chain
    over rounds (mean burst 100–400 rounds), failing with probability 0.2–0.6 % when calm and
    10–20 % in a burst, at a stationary long-run rate of 1–3 % (half ``timeout``, half
    ``http_500``). Stresses: error clusters that are the arm's normal behaviour — and errors
    count as invalid answers in the validity detector."""

    name = "error_bursts"

    def _extra(self, rng: np.random.Generator) -> None:
        k = len(self.arms)
        self.rate = rng.uniform(0.01, 0.03, k)
        self.calm = rng.uniform(0.002, 0.006, k)
        self.burst = rng.uniform(0.10, 0.20, k)
        self.burst_share = (self.rate - self.calm) / (self.burst - self.calm)
        self.burst_len = rng.uniform(100.0, 400.0, k)
        self.exit_burst = 1.0 / self.burst_len
        self.enter_burst = self.exit_burst * self.burst_share / (1.0 - self.burst_share)

    def error_rates(self, n: int, rng: np.random.Generator, run: Run) -> FloatArray:
        state = run.state
        if state is None:  # the stationary distribution
            state = rng.random(len(self.arms)) < self.burst_share
        bursts = np.empty((n, len(self.arms)), dtype=bool)
        for k in range(len(self.arms)):
            s, t = bool(state[k]), 0
            while t < n:  # sojourns are geometric, so a batch boundary needs no memory
                stay = int(rng.geometric(self.exit_burst[k] if s else self.enter_burst[k]))
                bursts[t : t + stay, k] = s
                t += stay
                s = not s if t < n or stay > 0 else s
            state[k] = bursts[n - 1, k]
        run.state = state
        out: FloatArray = np.where(bursts, self.burst, self.calm)
        return out

    def long_run_error_rate(self) -> FloatArray:
        out: FloatArray = self.rate
        return out


FAMILIES: dict[str, type[Family]] = {
    cls.name: cls
    for cls in (
        Logistic,
        HeteroLatency,
        ParetoLatency,
        ValidityHigh,
        ValidityLow,
        DriftingMix,
        ErrorBursts,
    )
}
