"""LinUCB with disjoint ridge models (Li, Chu, Langford & Schapire, WWW 2010)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, greedy_distribution, register
from routewise.bandits.linear import LinearPolicy
from routewise.errors import PolicyError

__all__ = ["LinUCB"]


@register
class LinUCB(LinearPolicy):
    """Disjoint LinUCB: pick ``argmax θ_kᵀx + α·sqrt(xᵀA_k⁻¹x)``.

    The choice is deterministic given the state (ties split evenly), so the propensity is
    exact: 1 for the chosen arm, or ``floor``-mixed when an exploration floor is set.

    Parameters
    ----------
    alpha
        Width of the confidence bonus.
    lam
        Ridge regularization λ.
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.

    Examples
    --------
    >>> import numpy as np
    >>> from routewise.bandits import LinUCB
    >>> pol = LinUCB(alpha=0.5, seed=0)
    >>> pol.add_arms(["a", "b"])
    >>> x = np.array([1.0, 0.3])
    >>> for _ in range(20):
    ...     pol.update("a", x, 0.9)
    ...     pol.update("b", x, 0.1)
    >>> sel = pol.select(x)
    >>> sel.arm, sel.propensity
    ('a', 1.0)
    """

    name: ClassVar[str] = "linucb"

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        lam: float = 1.0,
        discount: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(lam=lam, discount=discount, floor=floor, seed=seed)
        if not alpha >= 0:
            raise PolicyError(f"alpha: must be >= 0, got {alpha!r}")
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        return {**super().params(), "alpha": self.alpha}

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        mean, width = self._ridge.predict(x, idx)
        scores = mean + self.alpha * width
        probs, _ = greedy_distribution(scores)
        return probs, scores, int(np.argmax(mean))
