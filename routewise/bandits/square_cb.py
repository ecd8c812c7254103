"""SquareCB: inverse-gap weighting over a ridge regression oracle (Foster & Rakhlin, ICML 2020)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, register
from routewise.bandits.linear import LinearPolicy
from routewise.errors import PolicyError

__all__ = ["SquareCB"]


@register
class SquareCB(LinearPolicy):
    """Inverse-gap weighting of the ridge oracle's predictions, as in VW ``--squarecb``.

    With predictions ``ŷ_k = θ_kᵀx (+ optimism·sqrt(xᵀA_k⁻¹x))``, the best ``b = argmax ŷ``
    (first maximiser), ``K`` eligible arms and ``γ_t = gamma_scale · t^gamma_exponent``
    (``t`` = updates so far + 1)::

        p_k = 1 / (K + γ_t (ŷ_b − ŷ_k))   for k ≠ b,        p_b = 1 − Σ_{k≠b} p_k

    Every arm keeps a positive probability and ``p_b ≥ 1/K``. The distribution is a
    deterministic function of the state, so propensities are exact.

    Parameters
    ----------
    gamma_scale, gamma_exponent
        Learning-rate schedule of the inverse-gap weighting (VW defaults 10 and 0.5).
    optimism
        Weight of the confidence width added to the oracle's prediction (0 disables it).
    lam
        Ridge regularization λ.
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.

    Examples
    --------
    >>> import numpy as np
    >>> from routewise.bandits import SquareCB
    >>> pol = SquareCB(seed=0)
    >>> pol.add_arms(["a", "b", "c"])
    >>> x = np.array([1.0])
    >>> [round(p, 4) for p in pol.distribution(x)[0].tolist()]  # no data yet: uniform
    [0.3333, 0.3333, 0.3333]
    >>> for _ in range(20):
    ...     pol.update("a", x, 1.0)
    ...     pol.update("b", x, 0.5)
    >>> probs, scores, best = pol.distribution(x)
    >>> best, [round(p, 3) for p in probs.tolist()]
    (0, [0.955, 0.03, 0.016])
    """

    name: ClassVar[str] = "squarecb"

    def __init__(
        self,
        *,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        optimism: float = 0.0,
        lam: float = 1.0,
        discount: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(lam=lam, discount=discount, floor=floor, seed=seed)
        if not gamma_scale >= 0:
            raise PolicyError(f"gamma_scale: must be >= 0, got {gamma_scale!r}")
        if not gamma_exponent >= 0:
            raise PolicyError(f"gamma_exponent: must be >= 0, got {gamma_exponent!r}")
        if not optimism >= 0:
            raise PolicyError(f"optimism: must be >= 0, got {optimism!r}")
        self.gamma_scale = gamma_scale
        self.gamma_exponent = gamma_exponent
        self.optimism = optimism

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "gamma_scale": self.gamma_scale,
            "gamma_exponent": self.gamma_exponent,
            "optimism": self.optimism,
        }

    @property
    def gamma(self) -> float:
        """The current inverse-gap learning rate ``γ_t``."""
        return float(self.gamma_scale * (self._t + 1) ** self.gamma_exponent)

    def _predict(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> FloatArray:
        if self.optimism > 0.0:
            mean, width = self._ridge.predict(x, idx)
            width *= self.optimism  # in place: mean + optimism·width, bit for bit
            width += mean
            return width
        return self._ridge.mean(x, idx)

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        yhat = self._predict(x, idx)
        best = int(yhat.argmax())
        # 1 / (K + γ·(ŷ_b − ŷ)), in place (the same IEEE operations, fewer temporaries)
        probs = yhat[best] - yhat
        probs *= self.gamma
        probs += idx.shape[0]
        np.divide(1.0, probs, out=probs)
        probs[best] = 0.0
        probs[best] = 1.0 - probs.sum()
        return probs, yhat, best
