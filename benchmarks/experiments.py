"""A/B experiment benchmark: is the always-valid test valid under continuous monitoring, and
how fast does it decide?

Every simulated experiment randomizes ``--arrivals`` units (default 40,000, i.e. ≈20,000 per
arm at 50/50) to control or candidate, and the analyst peeks after every ``--peek-every``
arrivals (default 1: after every single observation), using exactly the statistics of
``routewise.controller.experiments`` (the normal-mixture confidence sequence from
``normal_mixture_half_width``, tuned for ``target_n = 10,000`` per arm, burn-in
``MIN_N_SEQUENTIAL`` per arm), vectorized over experiments with numpy.

1. **A/A** (no effect; ``--experiments`` = 500 per scenario): false-positive rate = share of
   experiments in which the test *ever* declared a difference. Goal: ≤ α = 0.05. For
   contrast, the naive fixed-horizon Welch t-test under the same peeking (it inflates), and
   both tests looked at once, at the horizon.
   Scenarios: Bernoulli(0.7) rewards at 50/50 and at 80/20, and a realistic gated reward
   (the ``balanced`` preset's formula: validity 0.85, lognormal latency, lognormal cost).
2. **A/B** (known effect): power (share declared *better* by the horizon), wrong-direction
   rate, and the time to decision (n per arm at the first crossing), for a few effect sizes,
   next to the fixed-horizon sample size for 80 % power (:func:`sample_size`) and the
   sequential test's power when stopped at that fixed-horizon n.

    python benchmarks/experiments.py                       # full run (~1 min on 2 cores)
    python benchmarks/experiments.py --experiments 100 --arrivals 10000   # quick
    python benchmarks/experiments.py --plot benchmarks/out/experiments-cs.png   # + example plot

Results go to ``benchmarks/out/experiments-<utc>.json`` (and ``experiments-latest.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json

from routewise.controller.experiments import (
    MIN_N_SEQUENTIAL,
    ComparisonHistory,
    VariantStats,
    mixing_ratio,
    normal_mixture_half_width,
    plot_confidence_sequence,
    sample_size,
)

Sampler = Callable[[np.random.Generator, np.ndarray], np.ndarray]
"""``sampler(rng, is_control)`` → one reward per arrival (same shape as the boolean mask)."""


def bernoulli(p_control: float, p_candidate: float) -> Sampler:
    def sample(rng: np.random.Generator, ctl: np.ndarray) -> np.ndarray:
        p = np.where(ctl, p_control, p_candidate)
        return (rng.random(ctl.shape) < p).astype(np.float64)

    return sample


def gated(validity_control: float, validity_candidate: float) -> Sampler:
    """The ``balanced`` preset's gated reward, vectorized: r = valid · (0.6 + 0.25·u_lat +
    0.15·u_cost), u_lat = clip(1 − latency/5000 ms), u_cost = clip(1 − cost/$0.01)."""

    def sample(rng: np.random.Generator, ctl: np.ndarray) -> np.ndarray:
        valid = rng.random(ctl.shape) < np.where(ctl, validity_control, validity_candidate)
        lat = 1500.0 * rng.lognormal(0.0, 0.6, ctl.shape)
        cost = 0.003 * rng.lognormal(0.0, 0.3, ctl.shape)
        u_lat = np.clip(1.0 - lat / 5000.0, 0.0, 1.0)
        u_cost = np.clip(1.0 - cost / 0.01, 0.0, 1.0)
        return valid * (0.6 + 0.25 * u_lat + 0.15 * u_cost)

    return sample


@dataclass
class Scenario:
    name: str
    sampler: Sampler
    share_control: float
    effect: float  # true difference in mean reward (candidate − control)
    sd: float  # reward sd (for the sample-size calculator)


@dataclass
class Outcome:
    """Per experiment: first crossing of the always-valid test (index or -1, direction) and of
    the naive Welch test, and both tests at the horizon."""

    cs_first: np.ndarray  # n per arm at the first crossing, nan if never
    cs_dir: np.ndarray  # +1 better, -1 worse, 0 never
    welch_any: np.ndarray
    cs_final: np.ndarray
    welch_final: np.ndarray


def simulate(
    sc: Scenario,
    *,
    experiments: int,
    arrivals: int,
    peek_every: int,
    alpha: float,
    target_n: int,
    seed: int,
    chunk: int,
) -> Outcome:
    rng = np.random.default_rng(seed)
    cs_first, cs_dir, welch_any, cs_final, welch_final = [], [], [], [], []
    idx = np.arange(peek_every - 1, arrivals, peek_every)
    if idx[-1] != arrivals - 1:
        idx = np.append(idx, arrivals - 1)
    t_arr = np.arange(1, arrivals + 1, dtype=np.float64)[idx]
    for start in range(0, experiments, chunk):
        e = min(chunk, experiments - start)
        ctl = rng.random((e, arrivals)) < sc.share_control
        x = sc.sampler(rng, ctl)
        a = ctl.astype(np.float64)
        na = np.cumsum(a, axis=1)[:, idx]
        nb = t_arr - na
        sx, sxa = np.cumsum(x, axis=1)[:, idx], np.cumsum(x * a, axis=1)[:, idx]
        qx, qxa = np.cumsum(x * x, axis=1)[:, idx], np.cumsum(x * x * a, axis=1)[:, idx]
        live = (na >= MIN_N_SEQUENTIAL) & (nb >= MIN_N_SEQUENTIAL)
        with np.errstate(divide="ignore", invalid="ignore"):
            ma, mb = sxa / na, (sx - sxa) / nb
            va = np.maximum(qxa - na * ma * ma, 0.0) / (na - 1)
            vb = np.maximum((qx - qxa) - nb * mb * mb, 0.0) / (nb - 1)
            va, vb = np.where(live, va, 1.0), np.where(live, vb, 1.0)
            na_s, nb_s = np.where(live, na, 2.0), np.where(live, nb, 2.0)
            diff = mb - ma
            var = va / na_s + vb / nb_s
            hw = normal_mixture_half_width(var, (va + vb) / target_n, alpha)
            better = live & (diff - hw > 0)
            worse = live & (diff + hw < 0)
            # naive Welch at every peek
            se = np.sqrt(var)
            df = var * var / ((va / na_s) ** 2 / (na_s - 1) + (vb / nb_s) ** 2 / (nb_s - 1))
            crit = stats.t.ppf(1.0 - alpha / 2.0, np.where(var > 0, df, 1.0))
            welch = live & (var > 0) & (np.abs(diff) > crit * se)
        cross = better | worse
        any_cross = cross.any(axis=1)
        first = np.argmax(cross, axis=1)
        rows = np.arange(e)
        per_arm = (na[rows, first] + nb[rows, first]) / 2.0
        cs_first.append(np.where(any_cross, per_arm, np.nan))
        cs_dir.append(np.where(any_cross, np.where(better[rows, first], 1, -1), 0))
        welch_any.append(welch.any(axis=1))
        cs_final.append(cross[:, -1])
        welch_final.append(welch[:, -1])
    return Outcome(
        cs_first=np.concatenate(cs_first),
        cs_dir=np.concatenate(cs_dir),
        welch_any=np.concatenate(welch_any),
        cs_final=np.concatenate(cs_final),
        welch_final=np.concatenate(welch_final),
    )


def rate_ci(k: int, n: int) -> tuple[float, float, float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return k / n, float(ci.low), float(ci.high)


def fmt_rate(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"


def example_plot(path: Path, alpha: float, target_n: int, seed: int) -> dict[str, Any]:
    """One A/B experiment (Bernoulli 0.70 vs 0.72) through the library objects, plotted."""
    rng = np.random.default_rng(seed)
    ctl, cand, hist = VariantStats(), VariantStats(), ComparisonHistory()
    for _ in range(40_000):
        if rng.random() < 0.5:
            ctl.observe(float(rng.random() < 0.70), True, 800.0, 0.001)
        else:
            cand.observe(float(rng.random() < 0.72), True, 800.0, 0.001)
        hist.update(ctl, cand, alpha=alpha, target_n=target_n)
    plot_confidence_sequence(
        hist, path, title="A/B example: Bernoulli 0.70 vs 0.72 (always-valid 95 % CS)"
    )
    return {"path": str(path), "min_p_value": hist.min_p_value, "cs": [hist.cs_low, hist.cs_high]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experiments", type=int, default=500, help="experiments per scenario")
    ap.add_argument("--arrivals", type=int, default=40_000, help="randomized units per experiment")
    ap.add_argument("--peek-every", type=int, default=1, help="look after every k arrivals")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--target-n", type=int, default=10_000, help="CS tuning: n per arm")
    ap.add_argument(
        "--effects", default="0.01,0.02,0.03", help="A/B effects on Bernoulli(0.7) rewards"
    )
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--chunk", type=int, default=25, help="experiments per vectorized block")
    ap.add_argument("--plot", default=None, help="also write an example CS plot (PNG) here")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 170)
    effects = [float(e) for e in args.effects.split(",") if e.strip()]
    sd07 = float(np.sqrt(0.7 * 0.3))
    g_mean = gated(0.85, 0.85)(np.random.default_rng(0), np.ones(1_000_000, dtype=bool))
    g_sd = float(g_mean.std())
    g_up = gated(0.87, 0.87)(np.random.default_rng(0), np.ones(1_000_000, dtype=bool))
    g_effect = float(g_up.mean() - g_mean.mean())

    aa = [
        Scenario("Bernoulli(0.7), 50/50", bernoulli(0.7, 0.7), 0.5, 0.0, sd07),
        Scenario("Bernoulli(0.7), 80/20", bernoulli(0.7, 0.7), 0.8, 0.0, sd07),
        Scenario("gated reward, 50/50", gated(0.85, 0.85), 0.5, 0.0, g_sd),
    ]
    ab = [
        Scenario(f"Bernoulli 0.7 → {0.7 + d:.2f}", bernoulli(0.7, 0.7 + d), 0.5, d, sd07)
        for d in effects
    ]
    ab.append(Scenario("gated, validity .85 → .87", gated(0.85, 0.87), 0.5, g_effect, g_sd))
    common = {
        "experiments": args.experiments,
        "arrivals": args.arrivals,
        "peek_every": args.peek_every,
        "alpha": args.alpha,
        "target_n": args.target_n,
        "chunk": args.chunk,
    }
    console.print(
        f"[bold]A/B experiment benchmark[/]: {args.experiments} experiments per scenario, "
        f"{args.arrivals:,} arrivals each (≈{args.arrivals // 2:,} per arm at 50/50), a look "
        f"after every {args.peek_every} arrival(s); α = {args.alpha}, CS tuned for "
        f"n* = {args.target_n:,} per arm (r* = {mixing_ratio(args.alpha):.4f}), "
        f"burn-in {MIN_N_SEQUENTIAL} per arm"
    )
    results: dict[str, Any] = {"config": common, "aa": [], "ab": []}
    t0 = time.perf_counter()

    t_aa = Table(title="A/A: false-positive rate under continuous monitoring (95 % exact CI)")
    for col in (
        "scenario",
        "always-valid CS, every look",
        "Welch, every look",
        "CS, final look only",
        "Welch, final look only",
        "s",
    ):
        t_aa.add_column(col, justify="left" if col == "scenario" else "right")
    for i, sc in enumerate(aa):
        t = time.perf_counter()
        out = simulate(sc, seed=args.seed + i, **common)
        dt = time.perf_counter() - t
        n = args.experiments
        fp = rate_ci(int((out.cs_dir != 0).sum()), n)
        fw = rate_ci(int(out.welch_any.sum()), n)
        fcf = rate_ci(int(out.cs_final.sum()), n)
        fwf = rate_ci(int(out.welch_final.sum()), n)
        t_aa.add_row(sc.name, fmt_rate(fp), fmt_rate(fw), fmt_rate(fcf), fmt_rate(fwf), f"{dt:.1f}")
        results["aa"].append(
            {
                "scenario": sc.name,
                "share_control": sc.share_control,
                "fpr_always_valid": fp,
                "fpr_welch_peeking": fw,
                "fpr_always_valid_final_look": fcf,
                "fpr_welch_final_look": fwf,
                "seconds": dt,
            }
        )
    console.print(t_aa)

    t_ab = Table(title="A/B: power and time to decision (n per arm at the first crossing)")
    for col in (
        "scenario",
        "effect",
        "power",
        "wrong dir.",
        "p25 n",
        "median n",
        "p75 n",
        "p90 n",
        "fixed n (80 %)",
        "seq. power @ fixed n",
        "Welch power @ horizon",
        "s",
    ):
        t_ab.add_column(col, justify="left" if col == "scenario" else "right")
    for j, sc in enumerate(ab):
        t = time.perf_counter()
        out = simulate(sc, seed=args.seed + 100 + j, **common)
        dt = time.perf_counter() - t
        n = args.experiments
        power = rate_ci(int((out.cs_dir == 1).sum()), n)
        wrong = int((out.cs_dir == -1).sum())
        dec = out.cs_first[out.cs_dir == 1]
        q = np.percentile(dec, [25, 50, 75, 90]) if dec.size else np.full(4, np.nan)
        n_fixed = sample_size(sc.effect, sc.sd, alpha=args.alpha, power=0.8)
        at_fixed = float(np.mean((out.cs_dir == 1) & (out.cs_first <= n_fixed)))
        welch_h = float(out.welch_final.mean())
        t_ab.add_row(
            sc.name,
            f"{sc.effect:+.4f}",
            fmt_rate(power),
            str(wrong),
            *(f"{v:,.0f}" for v in q),
            f"{n_fixed:,}",
            f"{at_fixed:.3f}",
            f"{welch_h:.3f}",
            f"{dt:.1f}",
        )
        results["ab"].append(
            {
                "scenario": sc.name,
                "effect": sc.effect,
                "sd": sc.sd,
                "power": power,
                "wrong_direction": wrong,
                "n_per_arm_at_decision": {"p25": q[0], "median": q[1], "p75": q[2], "p90": q[3]},
                "fixed_horizon_n_per_arm_80pct": n_fixed,
                "sequential_power_at_fixed_n": at_fixed,
                "welch_power_at_horizon_single_look": welch_h,
                "seconds": dt,
            }
        )
    console.print(t_ab)

    t_ss = Table(title=f"Fixed-horizon sample size per arm (two-sided z, α = {args.alpha})")
    for col in ("reward sd", "effect", "power 80 %", "power 90 %"):
        t_ss.add_column(col, justify="right")
    results["sample_size"] = []
    for sd, label in ((sd07, "0.458 (Bernoulli 0.7)"), (g_sd, f"{g_sd:.3f} (gated)")):
        for d in (*effects, 0.05):
            n80 = sample_size(d, sd, alpha=args.alpha, power=0.8)
            n90 = sample_size(d, sd, alpha=args.alpha, power=0.9)
            t_ss.add_row(label, f"{d:+.2f}", f"{n80:,}", f"{n90:,}")
            results["sample_size"].append({"sd": sd, "effect": d, "n80": n80, "n90": n90})
    console.print(t_ss)

    if args.plot:
        results["example_plot"] = example_plot(
            Path(args.plot), args.alpha, args.target_n, args.seed
        )
        console.print(f"example plot → {args.plot}")
    results["seconds_total"] = time.perf_counter() - t0
    results["environment"] = environment()
    path = write_json("experiments", results, args.out)
    console.print(f"total {results['seconds_total']:.1f} s; results → {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
