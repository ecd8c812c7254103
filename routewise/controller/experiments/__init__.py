"""A/B experiments: policy-vs-policy comparisons with statistics that stay valid under peeking.

An operator who wants to change the routing policy (algorithm, reward weighting, arm set)
runs an experiment: each assignment unit (user, session or request id) is hashed with a
per-experiment salt into one *variant* (sticky and deterministic, :func:`assign`); every
variant learns with its own policy; its outcomes feed a :class:`VariantStats`; and
:func:`experiment_report` says, at any time, whether a candidate is better, worse or not yet
distinguishable from the control (the first variant). The spec and report types are wire
types (:mod:`routewise.types.experiments`); the statistics are pure (no I/O, no clock); the
:class:`~routewise.controller.experiments.manager.Experiments` collaborator holds a
Controller's experiments (lifecycle, per-variant learners, persistence).

Modules: :mod:`~.sequential` (confidence sequences, :class:`VariantStats`,
:class:`ComparisonHistory`), :mod:`~.checks` (Welch, SRM, guardrails, sample size),
:mod:`~.report` (:func:`experiment_report`), :mod:`~.plot`, :mod:`~.assignment`,
:mod:`~.variants` (the variants' learners), :mod:`~.validation` (what
``Controller.create_experiment`` checks) and :mod:`~.manager`.

Lifecycle (:meth:`ExperimentSpec.transition`)::

    draft ──► running ──► stopped ──► promoted   (the winner becomes the default policy)
      │          │           │
      └──────────┴───────────┴──────► aborted

Statistics
----------
*Primary test — an always-valid confidence sequence (CS) for the difference in mean reward*
``θ = μ_candidate − μ_control``. It is the two-sided normal-mixture boundary of Howard,
Ramdas, McAuliffe & Sekhon (2021, *Time-uniform, nonparametric, nonasymptotic confidence
sequences*, Ann. Statist., §3.2), i.e. the mixture SPRT of Johari, Pekelis & Walsh (2017,
*Peeking at A/B tests*): with ``θ̂`` the difference of the sample means, ``V`` its
(plug-in) variance ``s²_ctl/n_ctl + s²_cand/n_cand`` and a ``N(0, τ²)`` mixture over ``θ``,
the mixture likelihood ratio against ``θ = θ₀`` is, with ``φ = τ²/V``,

.. math:: Λ = (1 + φ)^{-1/2} \\exp\\bigl(φ (θ̂ − θ₀)^2 / (2V(1 + φ))\\bigr),

so the ``1 − α`` CS is ``θ̂ ± sqrt(V (1 + φ)/φ · (log(1 + φ) + 2 log(1/α)))`` and the
always-valid p-value is ``min(1, 1/Λ(0))``, reported as a running minimum (it never increases)
when a :class:`ComparisonHistory` is kept; the reported CS is then the running intersection.
In the information time ``1/V`` the score ``θ̂/V`` is a Gaussian process with independent
increments for any interleaving of the two arms (Jennison & Turnbull's canonical joint
distribution), which is why unequal splits need no special treatment; plugging in the sample
variances makes the guarantee asymptotic (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas,
2024, *Time-uniform central limit theory and asymptotic confidence sequences*).

*Mixing parameter* ``ρ``. The boundary is tightest where ``V`` equals a target ``V*``; with
``τ² = V*/r*`` and ``r*(α)`` the root of ``log((1 + r)/(r α²)) = 1/r`` (≈ 0.1218 for
α = 0.05; Howard et al.'s ``ρ = r*·V*`` in intrinsic time, cf. their closed-form
approximation ``1/(−2 log α + log(1 − 2 log α))`` ≈ 0.126) the width at ``V*`` is minimal.
``V* = (s²_ctl + s²_cand)/n*`` with ``n* = ExperimentSpec.target_n`` (default 10,000 per
variant), so ``φ = V*/(r*·V)`` ≈ ``n/(r*·n*)`` for a balanced split: the CS is scale-free
and about 1.5× the fixed-horizon 95 % interval at ``n*``, wider before, narrower after.
Both arms need ``MIN_N_SEQUENTIAL`` (30) observations before a CS is reported (a burn-in that
keeps a zero plug-in variance — e.g. the first few Bernoulli rewards all equal — from
producing a spurious rejection); before that the CS is unbounded (``None``) and ``p = 1``.

*Per-variant intervals* use the same construction for one mean (``φ = n/(r*·n*)``), so they
may be watched continuously too; they are stateless (no running intersection).

*Secondary view* — the fixed-horizon Welch t-test (``scipy.stats.ttest_ind_from_stats``,
``equal_var=False``) and its Welch–Satterthwaite interval: valid only when looked at once,
at a sample size fixed in advance (:func:`sample_size`).

*Sample-ratio mismatch* — a chi-square goodness-of-fit test of the assignment counts against
the declared split (``scipy.stats.chisquare``), flagged at ``p < 0.001``.

*Guardrails* — a non-control variant is flagged when it is *significantly* worse than the
control, each test using the worse-side bound of a two-sided ``1 − α`` confidence sequence
(one-sided error ≤ α, so an auto-stop under continuous monitoring stays rare), and only once
both variants have ``min_n`` observations:

* ``validity``: the upper bound of ``validity_cand − validity_ctl`` is below ``−validity_drop``;
* ``p95_latency``: the lower bound of the candidate's p95 exceeds ``p95_latency_ratio`` × the
  upper bound of the control's p95 (quantile CS via the Bernoulli indicator ``1{X ≤ q}``,
  Howard & Ramdas 2022, *Sequential estimation of quantiles with applications to A/B testing*;
  latencies are kept in the ±1 % log-bucketed :class:`~routewise.controller.stats.LatencyHistogram`);
* ``cost``: the lower bound of ``cost_cand − cost_ratio · cost_ctl`` is above 0.

Examples
--------
>>> spec = ExperimentSpec(
...     name="ls-weights",
...     variants={"control": {"policy": "squarecb"},
...               "candidate": {"policy": "linucb", "reward": "low_latency"}},
...     split={"control": 0.5, "candidate": 0.5},
... )
>>> spec.control, spec.status
('control', 'draft')
>>> spec = spec.transition("running", ts=1.0)
>>> v = spec.variant_for("user-42")
>>> v == assign(spec.salt, "user-42", spec.split) == spec.variant_for("user-42")
True
>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> stats = {name: VariantStats() for name in spec.variants}
>>> for _ in range(4000):
...     stats["control"].assigned()
...     stats["control"].observe(float(rng.random() < 0.70), True, 800.0, 0.001)
...     stats["candidate"].assigned()
...     stats["candidate"].observe(float(rng.random() < 0.75), True, 800.0, 0.001)
>>> rep = experiment_report(spec, stats)
>>> rep.comparisons["candidate"].verdict, rep.srm
('better', False)
"""

from routewise.controller.experiments.checks import (
    SRM_THRESHOLD,
    auto_stop,
    guardrail_violations,
    sample_size,
    srm_p_value,
)
from routewise.controller.experiments.plot import plot_confidence_sequence
from routewise.controller.experiments.report import experiment_report
from routewise.controller.experiments.sequential import (
    MIN_N_SEQUENTIAL,
    ComparisonHistory,
    VariantStats,
    mixing_ratio,
    normal_mixture_half_width,
    normal_mixture_p_value,
)
from routewise.types.experiments import (
    GUARDRAILS,
    Comparison,
    ExperimentReport,
    ExperimentSpec,
    ExperimentStatus,
    Guardrails,
    VariantReport,
    VariantSpec,
    assign,
)

__all__ = [
    "GUARDRAILS",
    "MIN_N_SEQUENTIAL",
    "SRM_THRESHOLD",
    "Comparison",
    "ComparisonHistory",
    "ExperimentReport",
    "ExperimentSpec",
    "ExperimentStatus",
    "Guardrails",
    "VariantReport",
    "VariantSpec",
    "VariantStats",
    "assign",
    "auto_stop",
    "experiment_report",
    "guardrail_violations",
    "mixing_ratio",
    "normal_mixture_half_width",
    "normal_mixture_p_value",
    "plot_confidence_sequence",
    "sample_size",
    "srm_p_value",
]
