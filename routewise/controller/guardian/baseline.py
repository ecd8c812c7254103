"""An arm's baseline: what *this* request should get from a healthy arm, and how sure of it
the Guardian may be.

**The models.** The expected log-latency and validity are linear models of the request's
feature vector ``x`` (rows of ``ArmHealth.w``), fitted by ridge least squares once an arm has
``max(min_samples, 10·len(x))`` error-free observations (:func:`collect`, :func:`fit`), then
tracked by normalized LMS on observations ``baseline_lag`` steps old, in mini-batches of
:data:`BATCH` (:func:`learn`), so a change is caught before it leaks into the baseline.
Without ``x`` the models reduce to per-arm means (``x = [1]``).

**Calibrated expectations.** A linear model of a logistic or heavy-tailed world is
misspecified, and a misspecified model can be confident and wrong: fitted on one traffic mix,
it may promise validity 0.999 to requests of a kind it has rarely seen and that never reach it.
A change detector that believes such a promise reads the arm's ordinary failures as a
degradation. So what :func:`expect` hands the checks is not the model's raw prediction but
a *calibrated* one, built from out-of-sample evidence only:

1. *Held-out calibration.* Every observation is predicted before the models learn from it;
   those predictions are scored when the observation leaves the lag queue (prequential, i.e.
   held-out, residuals; at the fit, the leave-one-out residuals ``e/(1 − h)`` of the ridge
   fit stand in). From them the Guardian keeps, per model, the *calibration slope* ``κ`` of
   the outcome on the prediction (both centred on the arm's pooled mean; ``κ < 1`` means the
   model over-reaches, and its predictions are pulled toward the pooled mean by that much),
   the held-out residual variance of log-latency (the scale the latency CUSUM standardizes
   with: misfit included, not only noise) and the validity *dispersion* ``φ = E[(y − p)²] /
   E[p(1 − p)]`` (≥ 1 when the model's errors exceed Bernoulli noise; the validity CUSUM's
   log-likelihood ratios are divided by it, a quasi-likelihood CUSUM).
2. *Shrinkage by support.* A request unlike those the models learned from gets a
   prediction that leans on the arm's pooled mean where it is optimistic (more valid or
   faster than the arm's average; a pessimistic prediction is kept). With the diagonal leverage
   ``ℓ = Σ x_j² / E[x_j²]`` (over the arm's recent traffic its mean is ``d_eff``, the number
   of features seen), the weight of the per-request model is
   ``1 / (1 + SUPPORT_K · max(ℓ − d_eff, 0) / n)``: ``1/count`` for a one-hot feature seen
   ``count`` times among the last ``n`` observations, so a kind of request seen
   ``SUPPORT_K`` times counts half, a typical one fully, a never-seen one hardly at all.
   ``ℓ / n`` also gives the prediction's standard-error margin.
3. *Bounded evidence.* The expected failure rate of a request is at least
   ``1/FAILURE_FLOOR_RATIO`` of the upper Wilson bound (z = 2) of the arm's pooled failure
   rate: however confident the model (or young the baseline), one failure weighs a bounded
   amount.

A real change moves every request of the arm at once, so it still trips fast; a model that is
wrong where it has no support does not. ``benchmarks/guardian.py --families`` measures both.

Examples
--------
>>> import numpy as np
>>> from routewise.controller.guardian.base import ArmHealth
>>> h = ArmHealth()
>>> for i in range(20):
...     collect(h, np.ones(1), ll=5.0 + (i % 2) / 10, y=1.0, min_samples=20)
>>> h.base_ready, round(float(h.w[0, 0]), 3), round(h.base_loglat, 3)
(True, 5.05, 5.05)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from routewise.controller.guardian.base import ArmHealth

__all__ = [
    "BATCH",
    "FAILURE_FLOOR_RATIO",
    "PERSIST_MAX",
    "SUPPORT_K",
    "collect",
    "expect",
    "fit",
    "learn",
]

#: observations learned per mini-batch once they leave the lag queue (amortizes numpy calls)
BATCH = 16
#: a request kind seen this many times weighs half toward its per-request prediction
SUPPORT_K = 50.0
#: a request's expected failure rate is at least the arm's pooled one divided by this
FAILURE_FLOOR_RATIO = 2.0
#: the error persistence P(error | previous error) is at most this: however bursty an arm's
#: history, an outage (every request failing) trips it within ~15 requests
PERSIST_MAX = 0.5
PERSIST_PRIOR = 5.0  # pseudo-pairs at the arm's error rate behind the warm-up's persistence
_KAPPA_PRIOR = 4.0  # pseudo-observations pulling the calibration slope toward 1
_M2_UNSEEN = 1e-3  # second moment of a feature first seen after the fit: almost no support


def fit_to(h: ArmHealth, x: Any) -> Any:
    """``x`` with the models' length: pad a short (older) vector with zeros; for a longer one
    (a feature first seen after the fit) grow the models with zero weights (and no support)."""
    d = h.w.shape[1]
    if len(x) == d:
        return x
    if len(x) < d:
        return np.concatenate([x, np.zeros(d - len(x))])
    grow = len(x) - d
    h.w = np.hstack([h.w, np.zeros((2, grow))])
    h.inv_m2 = np.concatenate([h.inv_m2, np.full(grow, 1.0 / _M2_UNSEEN)])
    h.m2 = np.concatenate([h.m2, np.full(grow, _M2_UNSEEN)])
    return x


def expect(h: ArmHealth, xs: Any, ll: float, y: float, is_err: bool, fast_alpha: float) -> Any:
    """Set ``h``'s calibrated expectations and margins for the observation ``(xs, ll, y)``
    and fold its residuals into the recent EWMAs; returns ``xs`` fitted to the models' length.
    """
    if len(xs) != h.w.shape[1]:
        xs = fit_to(h, xs)
    # (plain floats from here on: the same IEEE operations as on numpy scalars,
    # without their per-operation overhead)
    raw_l, raw_v = h.w.dot(xs).tolist()  # .dot: same gemv as @, cheaper
    h.raw_loglat, h.raw_valid = raw_l, raw_v
    # diagonal leverage Σ x_j² / E[x_j²] (its mean over the arm's traffic is d_eff); what
    # exceeds the typical, over n, is 1/count for a one-hot feature seen count times
    lev = float((xs * xs).dot(h.inv_m2))
    n = h.base_n
    excess = lev - h.d_eff
    trust = 1.0 / (1.0 + SUPPORT_K * excess / n) if excess > 0.0 else 1.0
    sq = math.sqrt(lev / n)  # the prediction's standard error, in units of the noise's
    bl, bv = h.base_loglat, h.base_valid
    # an unsupported prediction is pulled toward the pooled mean only where it is optimistic
    # (faster, more valid than the arm's average): the model's pessimism is kept, so the
    # shrinkage never makes an outcome look worse than the model itself would
    dl = raw_l - bl
    el = h.exp_loglat = bl + h.kappa_lat * (trust * dl if dl < 0.0 else dl)
    # (a linear probability beyond [0, 1] is an extrapolation: it counts as certainty, no more)
    rv = 0.0 if raw_v < 0.0 else 1.0 if raw_v > 1.0 else raw_v
    dv = rv - bv
    ev = bv + h.kappa_val * (trust * dv if dv > 0.0 else dv)
    if ev > h.val_ceiling:
        ev = h.val_ceiling
    ev = 0.01 if ev < 0.01 else 0.999 if ev > 0.999 else ev
    h.exp_valid = ev
    h.lat_margin = h.lat_sd * sq
    # the validity expectation's margin: the prediction's standard error, fading as the
    # baseline learns beyond its warm-up (a young baseline is not trusted to the decimal;
    # a mature one's misfit is what the calibration accounts for)
    pq = ev * (1.0 - ev)
    h.val_margin = math.sqrt(pq if pq > 1e-4 else 1e-4) * sq * h.fit_n / n
    if not is_err:  # an error is neither a latency nor an answer
        a = fast_alpha
        h.recent_loglat += a * ((ll - el) - h.recent_loglat)
        h.recent_valid += a * ((y - ev) - h.recent_valid)
    return xs


def collect(h: ArmHealth, xs: Any, ll: float | None, y: float, min_samples: int) -> None:
    """Warm-up: keep the observation (``ll`` is ``None`` for an error) and fit both models
    once there are at least ``max(min_samples, 10·len(xs))`` error-free observations.

    The batch is bounded: it keeps at most four times that many observations, the oldest
    leaving first (an arm whose every outcome is an error never reaches the fit, and must not
    grow its warm-up batch — nor its snapshot — without end)."""
    need = max(min_samples, 10 * len(xs))
    h.lag.append((xs, ll, y, 0.0, 0.0))
    h.warm_n += 0 if ll is None else 1
    if len(h.lag) > 4 * need:
        dropped = h.lag.pop(0)
        h.warm_n -= 0 if dropped[1] is None else 1
    if h.warm_n >= need:
        fit(h)


def _slope(sxy: float, sxx: float, n: float) -> float:
    """The calibration slope from centred cross/second moments over ``n`` observations,
    shrunk toward 1 by a small prior and kept in [0, 1] (a model may be trusted less than its
    own word, never more)."""
    return min(
        max((n * sxy + _KAPPA_PRIOR * sxx) / (n * sxx + _KAPPA_PRIOR * sxx + 1e-12), 0.0), 1.0
    )


def fit(h: ArmHealth) -> None:
    """Ridge fit of the context models on the warm-up batch, with leave-one-out residuals as
    the first held-out calibration evidence."""
    d = max(len(r[0]) for r in h.lag)
    X = np.zeros((len(h.lag), d))
    for i, r in enumerate(h.lag):
        X[i, : len(r[0])] = r[0]
    yv = np.array([r[2] for r in h.lag], dtype=np.float64)
    ok = np.array([r[1] is not None for r in h.lag])
    ll = np.array([r[1] if r[1] is not None else 0.0 for r in h.lag], dtype=np.float64)
    reg = 1.0 * np.eye(d)
    reg[0, 0] = 1e-6  # do not shrink the intercept
    # both models learn from answered requests only: an error has no latency and is no answer
    Xl, ll_ok, yl = (X, ll, yv) if ok.all() else (X[ok], ll[ok], yv[ok])
    cov = np.linalg.inv(Xl.T @ Xl + reg)
    h.w = cov @ (Xl.T @ np.column_stack([ll_ok, yl]))
    h.w = np.ascontiguousarray(h.w.T)
    # leave-one-out predictions: y − e/(1 − h_ii), the fit's own held-out residuals
    lev = np.minimum(np.einsum("ij,jk,ik->i", Xl, cov, Xl), 0.99)
    loo_l = ll_ok - (ll_ok - Xl @ h.w[0]) / (1.0 - lev)
    loo_v = yl - (yl - Xl @ h.w[1]) / (1.0 - lev)
    n = float(len(yl))
    h.base_n = h.fit_n = n
    h.base_loglat = float(ll_ok.mean())
    h.base_valid = float((yl.sum() + 0.5) / (n + 1.0))  # Jeffreys-smoothed
    _set_m2(h, (X * X).mean(axis=0))
    dl, dv = loo_l - h.base_loglat, loo_v - h.base_valid
    h.cal_lat = [float(dl @ (ll_ok - h.base_loglat)) / n, float(dl @ dl) / n]
    h.cal_val = [float(dv @ (yl - h.base_valid)) / n, float(dv @ dv) / n]
    h.kappa_lat = _slope(h.cal_lat[0], h.cal_lat[1], n)
    h.kappa_val = _slope(h.cal_val[0], h.cal_val[1], n)
    cl = h.base_loglat + h.kappa_lat * dl
    cv = np.clip(h.base_valid + h.kappa_val * dv, 0.01, 0.999)
    rl = ll_ok - cl
    h.base_loglat_var = float(rl @ rl / max(len(rl) - 1, 1))
    h.lat_sd = math.sqrt(max(h.base_loglat_var, 1e-4))
    h.val_sq = float(((yl - cv) ** 2).mean())
    h.val_pq = float((cv * (1.0 - cv)).mean())
    h.val_disp = dispersion(h)
    _set_ceiling(h)
    # the warm-up's error persistence (counts start from the warm-up's sequence)
    h.err_n = h.obs_n = h.pairs_n = h.persist_n = 0.0
    h.lag_last_err = False
    _learn_persistence(h, ~ok, 0.0)
    h.base_ready = True
    h.recent_loglat = 0.0
    h.recent_valid = 0.0
    h.lag = []


def learn(
    h: ArmHealth, xs: Any, ll: float | None, y: float, baseline_lag: int, slow_alpha: float
) -> None:
    """Queue the observation (``ll`` is ``None`` for an error) with the predictions it was
    checked against, and learn from the oldest :data:`BATCH` once the queue is
    ``baseline_lag + BATCH`` long.

    The lag means a change is detected before it can leak into the baseline (and there is no
    selection bias: every observation of a healthy arm eventually counts). Step 1/n while the
    baseline is young, then slow exponential tracking."""
    h.lag.append((xs, ll, y, h.raw_loglat, h.raw_valid))
    if len(h.lag) >= baseline_lag + BATCH:
        _learn_batch(h, BATCH, slow_alpha)


def _learn_batch(h: ArmHealth, k: int, slow_alpha: float) -> None:
    """One mini-batch: normalized LMS on the models, the pooled means, the second moments of
    the features, and the held-out calibration statistics of the batch's predictions."""
    batch, h.lag = h.lag[:k], h.lag[k:]
    d = h.w.shape[1]
    if all(len(r[0]) == d for r in batch):
        X = np.array([r[0] for r in batch])
    else:  # a feature first seen inside the lag: pad (or cut, for an older, longer model)
        X = np.zeros((k, d))
        for i, r in enumerate(batch):
            n = min(len(r[0]), d)
            X[i, :n] = r[0][:n]
    # columns: log-latency (NaN for an error), validity, and the raw predictions checked
    M = np.array([(math.nan if r[1] is None else r[1], r[2], r[3], r[4]) for r in batch])
    okm = ~np.isnan(M[:, 0])
    n_ok = int(okm.sum())
    # a batch of k steps of weight s weighs 1 − (1 − s)^k
    h.base_n = min(h.base_n + k, 1.0 / slow_alpha)
    s = 1.0 / h.base_n
    wb = 1.0 - (1.0 - s) ** k
    err = M[:, :2] - X @ h.w.T  # (k, 2): against what the models say now
    err[~okm] = 0.0  # an error teaches neither model
    norm = np.einsum("ij,ij->i", X, X)
    norm[norm == 0.0] = 1.0
    h.w += (err * (s / norm)[:, None]).T @ X
    _set_m2(h, h.m2 + wb * (np.einsum("ij,ij->j", X, X) / k - h.m2))
    _learn_persistence(h, ~okm, s)
    if not n_ok:
        return
    # held-out calibration on the answered requests: the predictions each was checked against
    A = M[okm] if n_ok < k else M
    bl, bv = h.base_loglat, h.base_valid
    wl = 1.0 - (1.0 - s) ** n_ok
    lo, dl = A[:, 0] - bl, A[:, 2] - bl
    ey, dv = A[:, 1] - bv, A[:, 3] - bv
    h.cal_lat[0] += wl * (float(dl.dot(lo)) / n_ok - h.cal_lat[0])
    h.cal_lat[1] += wl * (float(dl.dot(dl)) / n_ok - h.cal_lat[1])
    h.kappa_lat = _slope(h.cal_lat[0], h.cal_lat[1], h.base_n)
    rl = lo - h.kappa_lat * dl
    h.base_loglat_var += wl * (float(rl.dot(rl)) / n_ok - h.base_loglat_var)
    h.lat_sd = math.sqrt(max(h.base_loglat_var, 1e-4))
    h.base_loglat += wl * float(lo.sum()) / n_ok
    h.cal_val[0] += wl * (float(dv.dot(ey)) / n_ok - h.cal_val[0])
    h.cal_val[1] += wl * (float(dv.dot(dv)) / n_ok - h.cal_val[1])
    h.kappa_val = _slope(h.cal_val[0], h.cal_val[1], h.base_n)
    cv = np.clip(bv + h.kappa_val * dv, 0.01, 0.999)
    rv = A[:, 1] - cv
    h.val_sq += wl * (float(rv.dot(rv)) / n_ok - h.val_sq)
    h.val_pq += wl * (float(cv.dot(1.0 - cv)) / n_ok - h.val_pq)
    h.val_disp = dispersion(h)
    h.base_valid += wl * float(ey.sum()) / n_ok
    _set_ceiling(h)


def _learn_persistence(h: ArmHealth, errs: Any, step: float) -> None:
    """Fold the pairs (previous outcome an error → this outcome) of the lagged sequence
    ``errs`` into the arm's error persistence ``P(error | previous error)``: decayed counts
    (a memory of about ``1/step`` such pairs, which are rare) with a prior of
    :data:`PERSIST_PRIOR` pairs at the arm's error rate."""
    prev = np.concatenate([[h.lag_last_err], errs[:-1]])
    pairs = int(prev.sum())
    h.lag_last_err = bool(errs[-1])
    h.err_n = h.err_n * (1.0 - step) ** len(errs) + float(errs.sum())
    h.obs_n = h.obs_n * (1.0 - step) ** len(errs) + float(len(errs))
    if pairs:
        keep = (1.0 - step) ** pairs
        h.pairs_n = h.pairs_n * keep + pairs
        h.persist_n = h.persist_n * keep + float((prev & errs).sum())
    rate = h.err_n / h.obs_n if h.obs_n > 0 else 0.0
    pi = (h.persist_n + PERSIST_PRIOR * rate) / (h.pairs_n + PERSIST_PRIOR)
    h.err_persist = min(pi, PERSIST_MAX)


def _set_m2(h: ArmHealth, m2: Any) -> None:
    """The features' second moments (floored: an unseen feature has almost no support), their
    inverses and the number of features seen."""
    h.d_eff = float((m2 > _M2_UNSEEN).sum())
    h.m2 = np.maximum(m2, _M2_UNSEEN)
    h.inv_m2 = 1.0 / h.m2


def _set_ceiling(h: ArmHealth) -> None:
    """The highest validity any request may be expected to have: a failure rate at least
    1/FAILURE_FLOOR_RATIO of the upper Wilson bound (z = 2) of the arm's pooled failure rate
    (so a young baseline that has seen no failure yet does not expect none)."""
    n, f = h.base_n, 1.0 - h.base_valid
    z2 = 4.0
    upper = (f + z2 / (2 * n) + 2.0 * math.sqrt(f * (1 - f) / n + z2 / (4 * n * n))) / (1 + z2 / n)
    h.val_ceiling = 1.0 - upper / FAILURE_FLOOR_RATIO


def dispersion(h: ArmHealth) -> float:
    """The validity model's held-out dispersion ``E[(y − p)²] / E[p(1 − p)]``, in [1, 4]."""
    if h.val_pq <= 0.0:
        return 1.0
    return min(max(h.val_sq / h.val_pq, 1.0), 4.0)
