"""UCB1 (Auer, Cesa-Bianchi & Fischer 2002), optionally discounted (D-UCB, Garivier & Moulines)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, Policy, greedy_distribution, register
from routewise.errors import PolicyError

__all__ = ["UCB1"]


@register
class UCB1(Policy):
    """Context-free UCB1: pick ``argmax mean_k + c·sqrt(2 ln t / n_k)``.

    ``n_k`` is arm ``k``'s (discounted) play count, ``t = Σ_k n_k`` over all arms. Eligible
    arms never played come first: their index is ``+inf`` and the probability is split
    evenly among them. Otherwise the choice is deterministic (ties split), so propensities
    are exact. With ``discount`` γ < 1 every update first multiplies all counts and reward
    sums by γ (D-UCB), so old evidence fades and neglected arms get re-explored.

    Parameters
    ----------
    c
        Width of the confidence bonus (1 suits rewards in [0, 1]).
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.

    Examples
    --------
    >>> from routewise.bandits import UCB1
    >>> pol = UCB1(seed=0)
    >>> pol.add_arms(["a", "b", "c"])
    >>> pol.update("a", [], 1.0)
    >>> pol.distribution([])[0].tolist()  # b and c are untried
    [0.0, 0.5, 0.5]
    >>> pol.update("b", [], 0.2)
    >>> pol.update("c", [], 0.4)
    >>> pol.select([]).arm
    'a'
    """

    name: ClassVar[str] = "ucb1"
    contextual: ClassVar[bool] = False

    def __init__(
        self,
        *,
        c: float = 1.0,
        discount: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(floor=floor, seed=seed)
        if not c >= 0:
            raise PolicyError(f"c: must be >= 0, got {c!r}")
        if not 0.0 < discount <= 1.0:
            raise PolicyError(f"discount: must be in (0, 1], got {discount!r}")
        self.c = c
        self.discount = discount
        self._n: FloatArray = np.zeros(0)  # (discounted) play counts
        self._sum: FloatArray = np.zeros(0)  # (discounted) reward sums

    def params(self) -> dict[str, Any]:
        return {**super().params(), "c": self.c, "discount": self.discount}

    def _means(self, n: FloatArray, s: FloatArray) -> FloatArray:
        return np.divide(s, n, out=np.zeros_like(s), where=n > 0.0)

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        n = self._n[idx]
        mean = self._means(n, self._sum[idx])
        greedy = int(np.argmax(mean))
        untried = n <= 0.0
        if untried.any():
            scores = np.where(untried, np.inf, mean)
            return untried / np.count_nonzero(untried), scores, greedy
        log_t = np.log(max(float(self._n.sum()), 1.0))
        scores = mean + self.c * np.sqrt(2.0 * log_t / n)
        probs, _ = greedy_distribution(scores)
        return probs, scores, greedy

    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        n = self._n[idx]
        return self._means(n, self._sum[idx]), 0.5 / np.sqrt(n + 1.0)

    def _update(self, k: int, x: FloatArray, reward: float) -> None:
        if self.discount < 1.0:
            self._n *= self.discount
            self._sum *= self.discount
        self._n[k] += 1.0
        self._sum[k] += reward

    def _add_arm(self) -> None:
        self._n = np.append(self._n, 0.0)
        self._sum = np.append(self._sum, 0.0)

    def _reset_arm(self, k: int) -> None:
        self._n[k] = 0.0
        self._sum[k] = 0.0

    def _decay_arm(self, k: int, factor: float) -> None:
        self._n[k] *= factor
        self._sum[k] *= factor

    def _get_state(self) -> dict[str, Any]:
        return {"n": self._n.tolist(), "sum": self._sum.tolist()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._n = np.asarray(state["n"], dtype=np.float64).reshape(len(self._arms))
        self._sum = np.asarray(state["sum"], dtype=np.float64).reshape(len(self._arms))
