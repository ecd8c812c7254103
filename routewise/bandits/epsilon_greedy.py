"""Epsilon-greedy over disjoint ridge models."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, greedy_distribution, register
from routewise.bandits.linear import LinearPolicy
from routewise.errors import PolicyError

__all__ = ["EpsilonGreedy"]


@register
class EpsilonGreedy(LinearPolicy):
    """Play ``argmax θ_kᵀx`` with probability ``1 − ε_t``, a uniform arm with probability ``ε_t``.

    Exact ties of the greedy arm split its share evenly, so with ``K`` eligible arms an arm
    gets ``(1 − ε_t)/m + ε_t/K`` if it is one of ``m`` maximisers and ``ε_t/K`` otherwise.
    ``ε_t = max(epsilon_min, epsilon · t^(−decay))`` with ``t`` = updates so far + 1; the
    default ``decay=0`` keeps ``ε`` constant.

    Parameters
    ----------
    epsilon
        Exploration rate ε ∈ [0, 1].
    decay
        Exponent of the polynomial decay of ε (0: constant).
    epsilon_min
        Lower bound of the decayed rate, in [0, epsilon].
    lam
        Ridge regularization λ.
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.

    Examples
    --------
    >>> import numpy as np
    >>> from routewise.bandits import EpsilonGreedy
    >>> pol = EpsilonGreedy(epsilon=0.1, seed=0)
    >>> pol.add_arms(["a", "b"])
    >>> x = np.array([1.0, 0.5])
    >>> pol.update("a", x, 0.8)
    >>> [round(p, 3) for p in pol.distribution(x)[0].tolist()]  # 1 - ε + ε/2, ε/2
    [0.95, 0.05]
    """

    name: ClassVar[str] = "epsilon_greedy"

    def __init__(
        self,
        *,
        epsilon: float = 0.05,
        decay: float = 0.0,
        epsilon_min: float = 0.0,
        lam: float = 1.0,
        discount: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(lam=lam, discount=discount, floor=floor, seed=seed)
        if not 0.0 <= epsilon <= 1.0:
            raise PolicyError(f"epsilon: must be in [0, 1], got {epsilon!r}")
        if not decay >= 0:
            raise PolicyError(f"decay: must be >= 0, got {decay!r}")
        if not 0.0 <= epsilon_min <= epsilon:
            raise PolicyError(
                f"epsilon_min: must be in [0, epsilon={epsilon!r}], got {epsilon_min!r}"
            )
        self.epsilon = epsilon
        self.decay = decay
        self.epsilon_min = epsilon_min

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "epsilon": self.epsilon,
            "decay": self.decay,
            "epsilon_min": self.epsilon_min,
        }

    @property
    def current_epsilon(self) -> float:
        """The exploration rate ``ε_t`` the next decision uses."""
        if self.decay == 0.0:
            return float(self.epsilon)
        return max(float(self.epsilon_min), float(self.epsilon * (self._t + 1) ** -self.decay))

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        mean = self._ridge.mean(x, idx)
        greedy, best = greedy_distribution(mean)
        eps = self.current_epsilon
        return (1.0 - eps) * greedy + eps / idx.shape[0], mean, best
