"""Uniform random choice — the baseline every policy must beat."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from routewise.bandits.base import FloatArray, Policy, register

__all__ = ["Uniform"]


@register
class Uniform(Policy):
    """Choose uniformly among the eligible arms; learns nothing (but counts rewards).

    Examples
    --------
    >>> from routewise.bandits import Uniform
    >>> pol = Uniform(seed=1)
    >>> pol.add_arms(["a", "b", "c", "d"])
    >>> pol.select([1.0]).propensity
    0.25
    """

    name: ClassVar[str] = "uniform"
    contextual: ClassVar[bool] = False

    def __init__(self, *, floor: float = 0.0, seed: int | None = None) -> None:
        super().__init__(floor=floor, seed=seed)
        self._n: list[float] = []
        self._sum: list[float] = []

    def _distribution(
        self, x: FloatArray, idx: npt.NDArray[np.intp]
    ) -> tuple[FloatArray, FloatArray, int]:
        n = idx.shape[0]
        mean, _ = self._estimate(x, idx)
        return np.full(n, 1.0 / n), mean, int(np.argmax(mean))

    def _estimate(self, x: FloatArray, idx: npt.NDArray[np.intp]) -> tuple[FloatArray, FloatArray]:
        n = np.asarray(self._n)[idx]
        s = np.asarray(self._sum)[idx]
        mean = np.where(n > 0, s / np.maximum(n, 1.0), 0.0)
        return mean, 0.5 / np.sqrt(n + 1.0)

    def _update(self, k: int, x: FloatArray, reward: float) -> None:
        self._n[k] += 1.0
        self._sum[k] += reward

    def _add_arm(self) -> None:
        self._n.append(0.0)
        self._sum.append(0.0)

    def _reset_arm(self, k: int) -> None:
        self._n[k] = 0.0
        self._sum[k] = 0.0

    def _decay_arm(self, k: int, factor: float) -> None:
        self._n[k] *= factor
        self._sum[k] *= factor

    def _get_state(self) -> dict[str, Any]:
        return {"n": list(self._n), "sum": list(self._sum)}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._n = [float(v) for v in state["n"]]
        self._sum = [float(v) for v in state["sum"]]
