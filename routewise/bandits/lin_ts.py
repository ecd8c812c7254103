"""Linear Thompson sampling with disjoint ridge models (Agrawal & Goyal, ICML 2013)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import (
    FloatArray,
    PropensityMethod,
    argmax_frequencies,
    register,
)
from routewise.bandits.linear import LinearPolicy
from routewise.errors import PolicyError

__all__ = ["LinTS"]


@register
class LinTS(LinearPolicy):
    """Disjoint linear Thompson sampling: play the arm whose posterior draw is largest.

    Each arm's posterior is ``θ̃_k ~ N(θ_k, v²A_k⁻¹)``. Only ``xᵀθ̃_k`` matters and arms are
    independent, so the draw reduces to one scalar per arm, ``N(θ_kᵀx, v²·xᵀA_k⁻¹x)``. The
    choice distribution is estimated from ``n_samples`` vectorized draws (the fraction of
    draws each arm wins, ties split) and the arm is then drawn *from that estimate*, so the
    logged propensity is exactly the probability used (``propensity_method="monte_carlo"``).

    Parameters
    ----------
    v
        Posterior scale; rewards in [0, 1] call for a small value.
    lam
        Ridge regularization λ.
    discount
        Forgetting factor γ ∈ (0, 1]; 1 keeps all history.
    n_samples
        Monte-Carlo draws per decision (at least 1000).

    Examples
    --------
    >>> import numpy as np
    >>> from routewise.bandits import LinTS
    >>> pol = LinTS(v=0.3, seed=0)
    >>> pol.add_arms(["a", "b"])
    >>> x = np.array([1.0, 0.3])
    >>> for _ in range(30):
    ...     pol.update("a", x, 0.9)
    ...     pol.update("b", x, 0.1)
    >>> sel = pol.select(x)
    >>> sel.arm, sel.method, sel.propensity
    ('a', 'monte_carlo', 1.0)
    """

    name: ClassVar[str] = "lints"
    propensity_method: ClassVar[PropensityMethod] = "monte_carlo"

    def __init__(
        self,
        *,
        v: float = 0.3,
        lam: float = 1.0,
        discount: float = 1.0,
        n_samples: int = 1000,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(lam=lam, discount=discount, floor=floor, seed=seed)
        if not v >= 0:
            raise PolicyError(f"v: must be >= 0, got {v!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1000:
            raise PolicyError(f"n_samples: must be an integer >= 1000, got {n_samples!r}")
        self.v = v
        self.n_samples = n_samples

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "v": self.v,
            "n_samples": self.n_samples,
        }

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        mean, width = self._ridge.predict(x, idx)
        greedy = int(np.argmax(mean))
        n = idx.shape[0]
        if n == 1:
            return np.ones(1), mean, greedy
        scale = self.v * width
        noise = self._rng.standard_normal((n, self.n_samples))
        draws = mean[:, None] + scale[:, None] * noise
        return argmax_frequencies(draws), mean, greedy

    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        mean, width = self._ridge.predict(x, idx)
        return mean, self.v * width
