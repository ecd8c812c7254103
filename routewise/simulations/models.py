"""Small streaming models over logged contexts: a fixed feature map and per-arm ridge fits.

Offline evaluation and trace-driven simulation fit reward and outcome models from a trace
in one streaming pass, so the models keep only sufficient statistics (``A = λI + Σφφᵀ``,
``b = Σφy`` per arm and fold) — constant memory in the trace length.

:class:`FeatureMap` turns a flat context into a vector with no data-dependent scaling (so a
context maps to the same vector on every pass): column 0 is a bias; a number ``v`` becomes
``sign(v)·log1p(|v|)``; a boolean 0/1; a string one column per distinct ``key=value`` (in
first-seen order, up to ``max_dim`` columns, then ``key=__other__``). Nested values are
ignored. A column that appears late was 0 for every earlier row, so statistics accumulated
before it appeared are simply zero-padded.

Examples
--------
>>> fm = FeatureMap()
>>> fm.vector({"task": "qa", "n_fields": 12, "strict": True}).round(3).tolist()
[1.0, 2.565, 1.0, 1.0]
>>> fm.names
['bias', 'n_fields', 'strict', 'task=qa']
>>> fm.vector({"task": "extraction"}).tolist()
[1.0, 0.0, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ArmRidge", "FeatureMap"]

FloatArray = npt.NDArray[np.float64]


class FeatureMap:
    """Deterministic context → vector map that grows as keys and values appear."""

    def __init__(self, max_dim: int = 64) -> None:
        self.max_dim = max_dim
        self.names: list[str] = ["bias"]
        self._cols: dict[str, int] = {}

    @property
    def dim(self) -> int:
        return len(self.names)

    def _col(self, name: str) -> int | None:
        c = self._cols.get(name)
        if c is None:
            if len(self.names) >= self.max_dim:
                return None
            c = self._cols[name] = len(self.names)
            self.names.append(name)
        return c

    def pairs(self, context: Mapping[str, Any]) -> list[tuple[int, float]]:
        """``(column, value)`` of the non-zero entries (bias excluded), learning new columns."""
        out: list[tuple[int, float]] = []
        for key in sorted(context):
            v = context[key]
            if isinstance(v, bool):
                c = self._col(key)
                if c is not None and v:
                    out.append((c, 1.0))
            elif isinstance(v, int | float):
                f = float(v)
                if math.isfinite(f) and f != 0.0:
                    c = self._col(key)
                    if c is not None:
                        out.append((c, math.copysign(math.log1p(abs(f)), f)))
            elif isinstance(v, str):
                c = self._col(f"{key}={v}")
                if c is None:
                    c = self._col(f"{key}=__other__")
                if c is not None:
                    out.append((c, 1.0))
        return out

    def vector(self, context: Mapping[str, Any]) -> FloatArray:
        """The dense vector of one context (length :attr:`dim` after learning its columns)."""
        pairs = self.pairs(context)
        x = np.zeros(self.dim)
        x[0] = 1.0
        for c, v in pairs:
            x[c] = v
        return x

    def matrix(self, contexts: Sequence[Mapping[str, Any]], dim: int | None = None) -> FloatArray:
        """Rows for several contexts, ``dim`` columns wide (default: :attr:`dim` afterwards)."""
        rows = [self.pairs(c) for c in contexts]
        X = np.zeros((len(contexts), dim if dim is not None else self.dim))
        X[:, 0] = 1.0
        width = X.shape[1]
        for i, pairs in enumerate(rows):
            for c, v in pairs:
                if c < width:
                    X[i, c] = v
        return X


class ArmRidge:
    """Per-arm (and per-fold) ridge regressions of a target on features, streaming.

    Targets are centred on their overall mean, so an arm with little data is shrunk towards
    the mean of all arms rather than towards 0. With ``folds=2`` it keeps two independent fits
    per arm, for cross-fitting (rows of fold ``f`` are predicted by the other fold's fit).

    Examples
    --------
    >>> import numpy as np
    >>> m = ArmRidge(dim=2, lam=1.0)
    >>> X = np.array([[1.0, 0.0], [1.0, 1.0]] * 50)
    >>> m.add(X, np.array([0] * 100), X[:, 1] * 0.5 + 0.2)
    >>> m.predict(np.array([[1.0, 1.0]]), arms=[0, 1]).round(2).tolist()
    [[0.69, 0.45]]
    """

    def __init__(self, dim: int, *, lam: float = 1.0, folds: int = 1) -> None:
        self.dim = dim
        self.lam = lam
        self.folds = folds
        self._A: dict[tuple[int, int], FloatArray] = {}
        self._b: dict[tuple[int, int], FloatArray] = {}
        self._s: dict[tuple[int, int], FloatArray] = {}  # Σφ, for centring the targets
        self._y: dict[tuple[int, int], tuple[float, float]] = {}  # (Σy, Σy²)
        self._n: dict[tuple[int, int], int] = {}
        self._sum = 0.0
        self._count = 0
        self._theta: dict[tuple[int, int], FloatArray] | None = None

    @property
    def mean(self) -> float:
        """The overall mean target (the prediction for an arm without data)."""
        return self._sum / self._count if self._count else 0.0

    def count(self, arm: int) -> int:
        return sum(self._n.get((f, arm), 0) for f in range(self.folds))

    def add(
        self,
        X: FloatArray,
        arms: npt.NDArray[np.int64],
        y: FloatArray,
        folds: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Accumulate rows ``X`` (n × ≤dim) with arm indices and targets."""
        self._theta = None
        d = X.shape[1]
        fold = np.zeros(arms.shape[0], dtype=np.int64) if folds is None else folds
        key = arms * self.folds + fold
        for g in np.unique(key):
            sel = key == g
            k = (int(g % self.folds), int(g // self.folds))
            Xg = X[sel]
            yg = y[sel]
            A = self._A.get(k)
            if A is None:
                A = self._A[k] = np.zeros((self.dim, self.dim))
                self._b[k] = np.zeros(self.dim)
                self._s[k] = np.zeros(self.dim)
                self._y[k] = (0.0, 0.0)
                self._n[k] = 0
            A[:d, :d] += Xg.T @ Xg
            self._b[k][:d] += Xg.T @ yg
            self._s[k][:d] += Xg.sum(axis=0)
            sy, syy = self._y[k]
            self._y[k] = (sy + float(yg.sum()), syy + float(yg @ yg))
            self._n[k] += int(sel.sum())
        self._sum += float(y.sum())
        self._count += int(y.shape[0])

    def _fit(self) -> dict[tuple[int, int], FloatArray]:
        if self._theta is None:
            mu = self.mean
            theta: dict[tuple[int, int], FloatArray] = {}
            eye = self.lam * np.eye(self.dim)
            for k, A in self._A.items():
                # centred targets: Σφ(y − μ) = b − μ·Σφ
                theta[k] = np.asarray(
                    np.linalg.solve(A + eye, self._b[k] - mu * self._s[k]), dtype=np.float64
                )
            self._theta = theta
        return self._theta

    def predict(
        self,
        X: FloatArray,
        arms: Sequence[int],
        fold: npt.NDArray[np.int64] | None = None,
    ) -> FloatArray:
        """``(n, len(arms))`` predictions. With cross-fitting, row ``i`` uses the fits of the
        folds other than ``fold[i]`` (the average when there are more than two)."""
        theta = self._fit()
        d = X.shape[1]
        out = np.full((X.shape[0], len(arms)), self.mean)
        for j, a in enumerate(arms):
            if self.folds == 1 or fold is None:
                fits = [theta[(f, a)] for f in range(self.folds) if (f, a) in theta]
                if fits:
                    out[:, j] += X @ np.mean(fits, axis=0)[:d]
                continue
            for f in range(self.folds):
                others = [theta[(g, a)] for g in range(self.folds) if g != f and (g, a) in theta]
                if not others:
                    continue
                rows = fold == f
                out[rows, j] += X[rows] @ np.mean(others, axis=0)[:d]
        return out

    def residual_sd(self, arm: int) -> float:
        """Root-mean-square in-sample residual of ``arm``'s fit, from the sufficient
        statistics (nan without data)."""
        theta = self._fit()
        mu = self.mean
        rss = 0.0
        n = 0
        for f in range(self.folds):
            k = (f, arm)
            if k not in theta:
                continue
            t = theta[k]
            sy, syy = self._y[k]
            m = self._n[k]
            zz = syy - 2.0 * mu * sy + m * mu * mu
            bz = self._b[k] - mu * self._s[k]
            rss += zz - 2.0 * float(t @ bz) + float(t @ self._A[k] @ t)
            n += m
        return math.sqrt(max(rss, 0.0) / n) if n else math.nan
