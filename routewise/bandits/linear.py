"""The shared base of the linear (disjoint ridge) policies: LinUCB, LinTS, SquareCB and
ε-greedy differ only in how they turn the ridge predictions into a distribution."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, Policy
from routewise.bandits.ridge import RidgeArms

__all__ = ["LinearPolicy"]


class LinearPolicy(Policy):
    """A policy over one :class:`~routewise.bandits.ridge.RidgeArms` oracle.

    Subclasses implement ``_distribution``; the learning, state, arm and dimension hooks are
    shared. ``lam`` is the ridge regularization, ``discount`` the forgetting factor γ ∈ (0, 1].

    Examples
    --------
    >>> from routewise.bandits import LinUCB
    >>> issubclass(LinUCB, LinearPolicy)
    True
    """

    def __init__(
        self,
        *,
        lam: float = 1.0,
        discount: float = 1.0,
        floor: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(floor=floor, seed=seed)
        self.lam = lam
        self.discount = discount
        self._ridge = RidgeArms(lam=lam, discount=discount)
        self._t = 0  # updates so far

    def params(self) -> dict[str, Any]:
        return {**super().params(), "lam": self.lam, "discount": self.discount}

    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        mean, width = self._ridge.predict(x, idx)
        return mean, 0.5 * width

    def _update(self, k: int, x: FloatArray, reward: float) -> None:
        self._ridge.update(k, x, reward)
        self._t += 1

    def _add_arm(self) -> None:
        self._ridge.add_arm()

    def _grow(self, d: int) -> None:
        self._ridge.grow(d)

    def _reset_arm(self, k: int) -> None:
        self._ridge.reset(k)

    def _decay_arm(self, k: int, factor: float) -> None:
        self._ridge.decay(k, factor)

    def _get_state(self) -> dict[str, Any]:
        return {"ridge": self._ridge.to_state(), "t": self._t}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._ridge.set_state(state["ridge"])
        self._t = int(state.get("t", 0))
