"""The policy protocol shared by every bandit.

A policy is pure learning code: arm ids and a feature vector in, a choice and the exact
probability it was chosen with out; ``update(arm, x, reward)`` learns. No I/O, no clocks,
no decision ids. Every policy owns a seeded ``numpy`` generator.

Public methods do the bookkeeping (argument checks, arm-id → index mapping, the exploration
floor, sampling); subclasses implement the algorithm in private hooks:

* ``_distribution(x, idx)`` → (probabilities, scores, greedy position) over eligible arms
* ``_estimate(x, idx)`` → (expected reward, uncertainty) per eligible arm
* ``_update(k, x, reward)`` → learn from one observation of arm index ``k``
* ``_add_arm()``, ``_grow(d)``, ``_reset_arm(k)``, ``_decay_arm(k, factor)``
* ``_get_state()`` / ``_set_state(state)`` — learned state as plain JSON-able data

The probabilities are what the arm is actually drawn from, so the propensity logged with a
decision is exactly the probability used — also for Thompson-style policies, whose
distribution is a Monte-Carlo estimate that the draw then follows.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from routewise.errors import NoEligibleArms, PolicyError, UnknownArm

__all__ = [
    "REGISTRY",
    "FloatArray",
    "Policy",
    "Selection",
    "argmax_frequencies",
    "greedy_distribution",
    "make_policy",
    "register",
    "split_policy_spec",
]

FloatArray = npt.NDArray[np.float64]
PropensityMethod = Literal["exact", "monte_carlo"]

REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator adding a policy to :data:`REGISTRY` under ``cls.name``."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise PolicyError(f"policy name {cls.name!r} is already registered")
    REGISTRY[cls.name] = cls
    return cls


def make_policy(name: str, **params: Any) -> Policy:
    """Instantiate a registered policy by name.

    Examples
    --------
    >>> import routewise.bandits as rb
    >>> rb.make_policy("linucb", alpha=0.5).alpha
    0.5
    """
    if name not in REGISTRY:
        raise PolicyError(
            f"policy: unknown policy {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        )
    try:
        return REGISTRY[name](**params)
    except PolicyError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise PolicyError(f"policy {name!r}: bad parameters {params!r} ({exc})") from None


def split_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a policy spec ``"name"`` or ``"name:key=value[:key=value]"`` into its name and
    parameters (values read as JSON when they parse, numbers and booleans; else strings).

    The name is not checked here (the caller may accept aliases such as ``"default"``).

    Examples
    --------
    >>> split_policy_spec("linucb:alpha=0.3:discount=0.99")
    ('linucb', {'alpha': 0.3, 'discount': 0.99})
    >>> split_policy_spec("squarecb")
    ('squarecb', {})
    >>> split_policy_spec("linucb:alpha")
    Traceback (most recent call last):
    ...
    routewise.errors.PolicyError: policy: 'linucb:alpha': expected name:key=value, got 'alpha'
    """
    text = spec.strip()
    name, *parts = text.split(":")
    params: dict[str, Any] = {}
    for part in parts:
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise PolicyError(f"policy: {text!r}: expected name:key=value, got {part!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return name, params


@dataclass(slots=True)
class Selection:
    """One choice made by a policy over the eligible arms (in the order they were given)."""

    arm: str
    index: int
    propensity: float
    probabilities: FloatArray
    scores: FloatArray
    explored: bool
    method: PropensityMethod


class Policy(ABC):
    """Base class of all routewise policies.

    Parameters common to every policy:

    floor
        Exploration floor: every eligible arm's probability is at least ``floor`` (the
        distribution is mixed with uniform as ``floor + (1 - n·floor)·p``; if ``n·floor ≥ 1``
        the choice is uniform).
    seed
        Seed of the policy's own random generator.
    """

    name: ClassVar[str] = ""
    propensity_method: ClassVar[PropensityMethod] = "exact"
    contextual: ClassVar[bool] = True

    def __init__(self, *, floor: float = 0.0, seed: int | None = None) -> None:
        if not 0.0 <= floor < 1.0:
            raise PolicyError(f"floor: must be in [0, 1), got {floor!r}")
        self.floor = floor
        self.seed = seed
        try:
            self._rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise PolicyError(
                f"seed: must be None or a non-negative integer, got {seed!r} ({exc})"
            ) from None
        self._arms: list[str] = []
        self._index: dict[str, int] = {}
        self._dim = 0
        self._idx_cache: dict[tuple[str, ...] | None, npt.NDArray[np.intp]] = {}

    # ------------------------------------------------------------------ arms
    @property
    def arms(self) -> list[str]:
        """Arm ids known to the policy, in registration order."""
        return list(self._arms)

    @property
    def dim(self) -> int:
        """Current feature dimension (grows as longer vectors are seen)."""
        return self._dim

    def ensure_dim(self, d: int) -> None:
        """Grow the learned state to feature dimension ``d`` now (as a longer ``x`` would).

        Replaying a log calls this at each logged decision so the state grows at the same
        points as it did live, which keeps a restored policy bit-identical.
        """
        if d > self._dim:
            self._grow(d)
            self._dim = d

    def add_arm(self, arm: str) -> None:
        """Register an arm (no-op if known)."""
        if arm in self._index:
            return
        self._index[arm] = len(self._arms)
        self._arms.append(arm)
        self._idx_cache.clear()
        self._add_arm()

    def add_arms(self, arms: Iterable[str]) -> None:
        """Register several arms."""
        for a in arms:
            self.add_arm(a)

    def _indices(self, arms: Sequence[str] | None) -> npt.NDArray[np.intp]:
        if arms is None:  # all arms, in order: the common case, cached under None
            cached = self._idx_cache.get(None)
            if cached is None:
                cached = self._idx_cache[None] = self._indices(tuple(self._arms))
            return cached
        key = tuple(arms)
        cached = self._idx_cache.get(key)
        if cached is not None:
            return cached
        if not key:
            raise NoEligibleArms("arms: the eligible arm set is empty")
        try:
            idx = np.fromiter((self._index[a] for a in key), dtype=np.intp, count=len(key))
        except KeyError as exc:
            raise UnknownArm(str(exc.args[0]), self._arms) from None
        if len(set(key)) != len(key):
            raise PolicyError("arms: the eligible arm set contains duplicates")
        if len(self._idx_cache) > 256:
            self._idx_cache.clear()
        idx.flags.writeable = False  # shared by every call with these arms
        self._idx_cache[key] = idx
        return idx

    def _vector(self, x: FloatArray | Sequence[float]) -> FloatArray:
        v = np.asarray(x, dtype=np.float64)
        if v.ndim != 1:
            raise PolicyError(f"x: expected a 1-D feature vector, got shape {v.shape}")
        # x·x is finite iff every feature is (one cheap BLAS call), unless it overflowed:
        # only then look at the features one by one
        sq = float(v.dot(v))
        if sq - sq != 0.0 and not np.isfinite(v).all():
            raise PolicyError(f"x: features must be finite, got {v.tolist()!r}")
        d = v.shape[0]
        if d > self._dim:
            self._grow(d)
            self._dim = d
        elif d < self._dim:
            v = np.concatenate([v, np.zeros(self._dim - d)])
        return v

    # ------------------------------------------------------------- decisions
    def distribution(
        self, x: FloatArray | Sequence[float], arms: Sequence[str] | None = None
    ) -> tuple[FloatArray, FloatArray, int]:
        """(probabilities after the floor, scores, greedy position) over the eligible arms."""
        idx = self._indices(arms)
        v = self._vector(x)
        probs, scores, greedy = self._distribution(v, idx)
        n = idx.shape[0]
        if self.floor > 0.0:
            if n * self.floor >= 1.0:
                probs = np.full(n, 1.0 / n)
            else:
                probs = self.floor + (1.0 - n * self.floor) * probs
        return probs, scores, greedy

    def select(
        self, x: FloatArray | Sequence[float], arms: Sequence[str] | None = None
    ) -> Selection:
        """Choose an arm among ``arms`` (default: all) for features ``x``."""
        probs, scores, greedy = self.distribution(x, arms)
        n = probs.shape[0]
        if n == 1:
            pos = 0
        else:
            cdf = probs.cumsum()
            pos = int(cdf.searchsorted(self._rng.random() * cdf.item(-1), side="right"))
            if pos > n - 1:
                pos = n - 1
            while probs.item(pos) <= 0.0:  # guard against landing on a zero-width bin
                pos = (pos + 1) % n
        key = arms if arms is not None else self._arms
        return Selection(
            arm=key[pos],
            index=pos,
            propensity=probs.item(pos),
            probabilities=probs,
            scores=scores,
            explored=pos != greedy,
            method=self.propensity_method,
        )

    def estimate(
        self, x: FloatArray | Sequence[float], arms: Sequence[str] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """(expected reward, uncertainty) for each eligible arm; does not touch the RNG."""
        idx = self._indices(arms)
        return self._estimate(self._vector(x), idx)

    # -------------------------------------------------------------- learning
    def update(self, arm: str, x: FloatArray | Sequence[float], reward: float) -> None:
        """Learn from one observed ``reward`` of ``arm`` under features ``x``."""
        k = self._index.get(arm)
        if k is None:
            raise UnknownArm(arm, self._arms)
        try:
            r = float(reward)
        except (TypeError, ValueError):
            raise PolicyError(f"reward: must be a number, got {reward!r}") from None
        if not math.isfinite(r):
            raise PolicyError(f"reward: must be finite, got {reward!r}")
        self._update(k, self._vector(x), r)

    def reset_arm(self, arm: str) -> None:
        """Forget everything learned about ``arm``."""
        k = self._index.get(arm)
        if k is None:
            raise UnknownArm(arm, self._arms)
        self._reset_arm(k)

    def decay_arm(self, arm: str, factor: float) -> None:
        """Shrink what was learned about ``arm`` to a ``factor`` ∈ (0, 1] of its weight."""
        if not 0.0 < factor <= 1.0:
            raise PolicyError(f"factor: must be in (0, 1], got {factor!r}")
        k = self._index.get(arm)
        if k is None:
            raise UnknownArm(arm, self._arms)
        self._decay_arm(k, factor)

    # ----------------------------------------------------------------- state
    def params(self) -> dict[str, Any]:
        """Constructor parameters, as given."""
        return {"floor": self.floor, "seed": self.seed}

    def to_state(self) -> dict[str, Any]:
        """Everything needed to restore this policy exactly, as plain JSON-able data."""
        return {
            "policy": self.name,
            "params": self.params(),
            "arms": list(self._arms),
            "dim": self._dim,
            "rng": self._rng.bit_generator.state,
            "learned": self._get_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Policy:
        """Rebuild a policy from :meth:`to_state` output (via the registry when called on
        :class:`Policy`)."""
        try:
            name = state["policy"]
            target = REGISTRY[name] if cls is Policy else cls
            if target.name != name:
                raise PolicyError(f"state is for policy {name!r}, not {target.name!r}")
            pol = target(**state["params"])
            pol.add_arms(state["arms"])
            if state["dim"]:
                pol._grow(int(state["dim"]))
                pol._dim = int(state["dim"])
            pol._rng.bit_generator.state = state["rng"]
            pol._set_state(state["learned"])
        except PolicyError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(
                f"state: cannot restore policy ({type(exc).__name__}: {exc})"
            ) from None
        return pol

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        """(probabilities summing to 1, scores, greedy position) over ``idx``."""

    @abstractmethod
    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        """(expected reward, uncertainty) over ``idx``."""

    @abstractmethod
    def _update(self, k: int, x: FloatArray, reward: float) -> None:
        """Learn from one observation of arm index ``k``."""

    @abstractmethod
    def _add_arm(self) -> None:
        """Allocate learned state for one more arm (appended last)."""

    def _grow(self, d: int) -> None:  # noqa: B027 - context-free policies ignore features
        """Extend learned state to feature dimension ``d`` (new features never seen: zero)."""

    @abstractmethod
    def _reset_arm(self, k: int) -> None:
        """Reset arm ``k`` to its prior."""

    @abstractmethod
    def _decay_arm(self, k: int, factor: float) -> None:
        """Scale the evidence about arm ``k`` by ``factor``."""

    @abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Learned state as JSON-able data."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore learned state from :meth:`_get_state` output."""


def greedy_distribution(values: FloatArray, tol: float = 1e-12) -> tuple[FloatArray, int]:
    """Put all probability on the maximum of ``values``, split evenly among exact ties.

    Returns (probabilities, greedy position = first maximiser). Splitting ties keeps the
    propensity exact without drawing from the RNG to break them.

    Examples
    --------
    >>> import numpy as np
    >>> p, g = greedy_distribution(np.array([0.2, 0.5, 0.5]))
    >>> p.tolist(), g
    ([0.0, 0.5, 0.5], 1)
    """
    top = values.max()
    mask = values >= top - tol
    count = int(mask.sum())
    probs = mask / count if count > 1 else mask.astype(np.float64)
    return probs.astype(np.float64, copy=False), int(np.argmax(values))


def argmax_frequencies(draws: FloatArray) -> FloatArray:
    """Fraction of the columns of ``draws`` (arms × samples) in which each arm is the maximum.

    This is the Monte-Carlo estimate of a Thompson-sampling policy's choice distribution;
    exact ties within a sample split that sample evenly. The result sums to 1 and is the
    distribution the arm is then drawn from, so the logged propensity is the one used.

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.array([[0.1, 0.9, 0.5, 0.7],
    ...                   [0.3, 0.2, 0.5, 0.1],
    ...                   [0.2, 0.4, 0.1, 0.7]])
    >>> argmax_frequencies(draws).tolist()
    [0.5, 0.375, 0.125]
    """
    top = draws.max(axis=0)
    hits = draws == top
    n = draws.shape[1]
    if np.count_nonzero(hits) == n:  # no ties: one maximum per sample
        return np.count_nonzero(hits, axis=1) / n  # type: ignore[no-any-return]
    return (hits / hits.sum(axis=0)).sum(axis=1) / n  # type: ignore[no-any-return]
