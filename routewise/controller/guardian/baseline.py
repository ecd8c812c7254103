"""An arm's baseline: what *this* request should get from a healthy arm.

The expected log-latency and validity are linear models of the request's feature vector
``x`` (rows of ``ArmHealth.w``). They are fitted by least squares once an arm has
``max(min_samples, 10·len(x))`` error-free observations (:func:`collect`, :func:`fit`), then
tracked by normalized LMS on observations ``baseline_lag`` steps old (:func:`learn`), so a
change is caught before it leaks into the baseline. :func:`expect` gives each new
observation its expectations, the models' prediction margins and the recent (fast EWMA)
residuals the checks confirm a change with. Without ``x`` the models reduce to per-arm
means (``x = [1]``).

Examples
--------
>>> import numpy as np
>>> from routewise.controller.guardian.base import ArmHealth
>>> h = ArmHealth()
>>> for i in range(20):
...     collect(h, np.ones(1), ll=5.0 + (i % 2) / 10, y=1.0, min_samples=20)
>>> h.base_ready, round(float(h.w[0, 0]), 3)
(True, 5.05)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from routewise.controller.guardian.base import ArmHealth

__all__ = ["collect", "expect", "fit", "fit_to", "learn"]


def fit_to(h: ArmHealth, x: Any) -> Any:
    """``x`` with the models' length: pad a short (older) vector with zeros; for a longer one
    (a feature first seen after the fit) grow the models with zero weights."""
    d = h.w.shape[1]
    if len(x) == d:
        return x
    if len(x) < d:
        return np.concatenate([x, np.zeros(d - len(x))])
    h.w = np.hstack([h.w, np.zeros((2, len(x) - d))])
    return x


def expect(h: ArmHealth, xs: Any, ll: float, y: float, is_err: bool, fast_alpha: float) -> Any:
    """Set ``h``'s expectations and margins for the observation ``(xs, ll, y)`` and fold its
    residuals into the recent EWMAs; returns ``xs`` fitted to the models' length."""
    if len(xs) != h.w.shape[1]:
        xs = fit_to(h, xs)
    # (plain floats from here on: the same IEEE operations as on numpy scalars,
    # without their per-operation overhead)
    exp_loglat, exp_valid = h.w.dot(xs).tolist()  # .dot: same gemv as @, cheaper
    h.exp_loglat = exp_loglat
    h.exp_valid = min(max(exp_valid, 0.01), 0.999)
    kc = h.w_cov.shape[0]
    xc = xs if len(xs) == kc else xs[:kc]
    # leverage of this request, shrinking as the models keep learning after the fit
    q = float(xc.dot(h.w_cov.dot(xc))) * h.fit_n / max(h.base_n, h.fit_n, 1.0)
    h.lat_margin = math.sqrt(max(h.base_loglat_var * q, 0.0))
    h.val_margin = math.sqrt(max(h.exp_valid * (1.0 - h.exp_valid), 1e-4) * q)
    a = fast_alpha
    if not is_err:
        h.recent_loglat += a * ((ll - h.exp_loglat) - h.recent_loglat)
    h.recent_valid += a * ((y - h.exp_valid) - h.recent_valid)
    return xs


def collect(h: ArmHealth, xs: Any, ll: float | None, y: float, min_samples: int) -> None:
    """Warm-up: keep the observation (``ll`` is ``None`` for an error) and fit both models
    once there are at least ``max(min_samples, 10·len(xs))`` error-free observations.

    The batch is bounded: it keeps at most four times that many observations, the oldest
    leaving first (an arm whose every outcome is an error never reaches the fit, and must not
    grow its warm-up batch — nor its snapshot — without end)."""
    need = max(min_samples, 10 * len(xs))
    h.lag.append((xs, ll, y))
    h.warm_n += 0 if ll is None else 1
    if len(h.lag) > 4 * need:
        dropped = h.lag.pop(0)
        h.warm_n -= 0 if dropped[1] is None else 1
    if h.warm_n >= need:
        fit(h)


def fit(h: ArmHealth) -> None:
    """Least-squares fit of the context models on the warm-up batch (ridge-stabilized)."""
    d = max(len(r[0]) for r in h.lag)
    X = np.zeros((len(h.lag), d))
    for i, r in enumerate(h.lag):
        X[i, : len(r[0])] = r[0]
    yv = np.array([r[2] for r in h.lag], dtype=np.float64)
    ok = np.array([r[1] is not None for r in h.lag])
    ll = np.array([r[1] if r[1] is not None else 0.0 for r in h.lag], dtype=np.float64)
    reg = 1.0 * np.eye(d)
    reg[0, 0] = 1e-6  # do not shrink the intercept
    # one Gram matrix for both models when no observation is an error (the same product
    # on the same data: the same bits), so the large BLAS calls happen once, not thrice
    gram = X.T @ X + reg
    if ok.all():
        Xl, ll_ok, gram_l = X, ll, gram
    else:
        Xl, ll_ok = X[ok], ll[ok]
        gram_l = Xl.T @ Xl + reg
    w_lat = np.linalg.solve(gram_l, Xl.T @ ll_ok)
    w_val = np.linalg.solve(gram, X.T @ yv)
    h.w_cov = np.linalg.inv(gram)
    resid = ll_ok - Xl @ w_lat
    h.w = np.vstack([w_lat, w_val])
    h.base_loglat_var = float(resid @ resid / max(len(resid) - 1, 1))
    h.base_valid = float((yv.sum() + 0.5) / (len(yv) + 1.0))  # Jeffreys-smoothed
    h.base_n = float(len(yv))
    h.fit_n = float(len(yv))
    h.base_ready = True
    h.recent_loglat = 0.0
    h.recent_valid = 0.0
    h.lag = []


def learn(
    h: ArmHealth, xs: Any, ll: float | None, y: float, baseline_lag: int, slow_alpha: float
) -> None:
    """Queue the observation (``ll`` is ``None`` for an error) and learn from the one
    ``baseline_lag`` steps old.

    The lag means a change is detected before it can leak into the baseline (and there is
    no selection bias: every observation of a healthy arm eventually counts). Step 1/n while
    the baseline is young, then slow exponential tracking (normalized LMS on the models)."""
    h.lag.append((xs, ll, y))
    if len(h.lag) <= baseline_lag:
        return
    old_x, old_ll, old_y = h.lag.pop(0)
    if len(old_x) != h.w.shape[1]:
        old_x = fit_to(h, old_x)
    h.base_n = min(h.base_n + 1.0, 1.0 / slow_alpha)
    step = 1.0 / h.base_n
    norm = float(old_x.dot(old_x)) or 1.0
    pred_ll, pred_v = h.w.dot(old_x).tolist()
    err = (old_ll if old_ll is not None else pred_ll) - pred_ll
    err_v = old_y - pred_v
    # w += outer(c·[err, err_v], x), written without np.outer's temporaries; every
    # element is still the product (c·e_i)·x_j added once, so the bits are the same
    c = step / norm
    h.w += np.array([[c * err], [c * err_v]]) * old_x
    if old_ll is not None:
        h.base_loglat_var = (1 - step) * (h.base_loglat_var + step * err * err)
    h.base_valid += step * (old_y - h.base_valid)
