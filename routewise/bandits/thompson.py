"""Beta–Bernoulli Thompson sampling with fractional rewards (Agrawal & Goyal, 2012)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import (
    FloatArray,
    Policy,
    PropensityMethod,
    argmax_frequencies,
    register,
)
from routewise.errors import PolicyError

__all__ = ["Thompson"]


@register
class Thompson(Policy):
    """Context-free Thompson sampling with a Beta posterior per arm.

    A reward ``r`` (clipped to [0, 1] for the posterior) adds ``r`` to the arm's success
    evidence and ``1 − r`` to its failure evidence; the posterior is
    ``Beta(alpha + successes, beta + failures)``. The choice distribution is estimated from
    ``n_samples`` vectorized posterior draws per arm (the fraction each arm wins, ties split)
    and the arm is drawn *from that estimate*, so the logged propensity is exactly the
    probability used (``propensity_method="monte_carlo"``). With ``discount`` γ < 1 every
    update first multiplies all arms' evidence by γ (the prior never decays).

    Parameters
    ----------
    alpha, beta
        Beta prior of every arm.
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.
    n_samples
        Monte-Carlo draws per arm and decision (at least 1000).

    Examples
    --------
    >>> from routewise.bandits import Thompson
    >>> pol = Thompson(seed=0)
    >>> pol.add_arms(["a", "b"])
    >>> for _ in range(40):
    ...     pol.update("a", [], 0.9)
    ...     pol.update("b", [], 0.2)
    >>> mean, std = pol.estimate([])
    >>> [round(m, 3) for m in mean.tolist()]
    [0.881, 0.214]
    >>> sel = pol.select([])
    >>> sel.arm, sel.method, sel.propensity
    ('a', 'monte_carlo', 1.0)
    """

    name: ClassVar[str] = "thompson"
    propensity_method: ClassVar[PropensityMethod] = "monte_carlo"
    contextual: ClassVar[bool] = False

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        discount: float = 1.0,
        n_samples: int = 1000,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(floor=floor, seed=seed)
        if not alpha > 0:
            raise PolicyError(f"alpha: prior must be > 0, got {alpha!r}")
        if not beta > 0:
            raise PolicyError(f"beta: prior must be > 0, got {beta!r}")
        if not 0.0 < discount <= 1.0:
            raise PolicyError(f"discount: must be in (0, 1], got {discount!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1000:
            raise PolicyError(f"n_samples: must be an integer >= 1000, got {n_samples!r}")
        self.alpha = alpha
        self.beta = beta
        self.discount = discount
        self.n_samples = n_samples
        self._succ: FloatArray = np.zeros(0)  # (discounted) success evidence
        self._fail: FloatArray = np.zeros(0)  # (discounted) failure evidence

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "alpha": self.alpha,
            "beta": self.beta,
            "discount": self.discount,
            "n_samples": self.n_samples,
        }

    def _posterior(self, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        return self.alpha + self._succ[idx], self.beta + self._fail[idx]

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        a, b = self._posterior(idx)
        mean = a / (a + b)
        greedy = int(np.argmax(mean))
        n = idx.shape[0]
        if n == 1:
            return np.ones(1), mean, greedy
        draws = self._rng.beta(a[:, None], b[:, None], size=(n, self.n_samples))
        return argmax_frequencies(draws), mean, greedy

    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        a, b = self._posterior(idx)
        total = a + b
        mean = a / total
        return mean, np.sqrt(mean * (b / total) / (total + 1.0))

    def _update(self, k: int, x: FloatArray, reward: float) -> None:
        r = min(max(reward, 0.0), 1.0)
        if self.discount < 1.0:
            self._succ *= self.discount
            self._fail *= self.discount
        self._succ[k] += r
        self._fail[k] += 1.0 - r

    def _add_arm(self) -> None:
        self._succ = np.append(self._succ, 0.0)
        self._fail = np.append(self._fail, 0.0)

    def _reset_arm(self, k: int) -> None:
        self._succ[k] = 0.0
        self._fail[k] = 0.0

    def _decay_arm(self, k: int, factor: float) -> None:
        self._succ[k] *= factor
        self._fail[k] *= factor

    def _get_state(self) -> dict[str, Any]:
        return {"successes": self._succ.tolist(), "failures": self._fail.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        k = len(self._arms)
        self._succ = np.asarray(state["successes"], dtype=np.float64).reshape(k)
        self._fail = np.asarray(state["failures"], dtype=np.float64).reshape(k)
