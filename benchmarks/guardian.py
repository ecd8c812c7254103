"""Guardian benchmark: detection delay, false quarantines, regret after a degradation.

Three measurements, each printed as a table (and written to ``benchmarks/out/guardian-*.json``):

1. **Detection delay** — one arm with a healthy baseline (validity 0.9, lognormal latency with
   median 800 ms and log-sd 0.3) observed ``--warmup`` times, then either a 2× latency jump or a
   20-point validity drop. Delay = requests *on the affected arm* until the Guardian quarantines
   it. Median / p90 / max over ``--seeds`` seeds. Goal: median ≤ 150.
2. **False quarantines** — the full Controller (default policy, Guardian on) routing
   ``--stationary-rounds`` requests per seed over 12 stationary arms (per-arm validity
   0.70–0.95, median latency 300–2000 ms). Every quarantine here is false. Goal: ≤ 1 per
   100,000 decisions.
3. **Regret after a degradation** — the same 12 arms; at round ``--change-at`` the arm the
   policy prefers (most chosen over the last 500 rounds) degrades (validity −0.5 and latency
   ×3) — a degradation of an arm that gets no traffic costs nothing with or without a
   Guardian. Regret = Σ (best expected reward − expected reward
   of the chosen arm) over the ``--after`` rounds after the change, with and without the
   Guardian, same seeds. Goal: with ≤ 50 % of without.

The environment is deliberately small and context-free (per-arm Bernoulli validity, lognormal
latency) so expected rewards are exact: E[reward] of an arm is computed by Monte Carlo once
from its outcome distribution under the ``balanced`` reward.

    python benchmarks/guardian.py                # full run (~3–5 min on 2 cores)
    python benchmarks/guardian.py --seeds 5 --stationary-rounds 20000 --after 2000   # quick

Two further studies run instead of the three tables when asked for (issue 17):

``--families`` — the Guardian on environment families it was not tuned on (``_families.py``:
random logistic validity surfaces with interactions, heteroscedastic and Pareto latency,
validity near 0.999 and near 0.6, a slowly drifting traffic mix, bursty errors), 20 seeds
each: false quarantines in stationary runs of the ``default``, ``linucb`` and ``squarecb``
policies (per 100k decisions; ``cap_reached`` trips apart), detection delay of a 2× latency
jump and a 20-point validity drop of the preferred arm, and regret over the ``--after`` rounds
after the preferred arm degrades (at ``--change-at``) with vs without the Guardian. One table,
one row per family (``_families_study.py`` documents the measurements). Runs over
``--workers`` processes; the full run is 5.3M decisions (~23 CPU-minutes: ~12 min on 2 free cores).

``--recovery`` — the shipped ``degradation`` scenario (degradation at 40 %, recovery at 75 % of
a 50k-round run): each policy's share on the recovered backend over the last 5k rounds
against the oracle's share there, and before the degradation for context.

    python benchmarks/guardian.py --families --workers 2                 # full study
    python benchmarks/guardian.py --families --only-family logistic --families-seeds 2
    python benchmarks/guardian.py --recovery --recovery-seeds 5

(quick looks: add ``--families-rounds 2000 --change-at 1500 --after 1500``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, quiet_logs, write_json
from _families import FAMILIES

import routewise as rw
from routewise.reward import get_reward


@dataclass
class ArmModel:
    validity: float
    median_ms: float
    log_sd: float = 0.3
    cost: float = 0.0004

    def sample(self, rng: np.random.Generator) -> rw.Outcome:
        lat = float(self.median_ms * rng.lognormal(0.0, self.log_sd))
        return rw.Outcome(
            valid=bool(rng.random() < self.validity), latency_ms=lat, cost_usd=self.cost
        )

    def expected_reward(self, reward: Any, rng: np.random.Generator, n: int = 20000) -> float:
        lat = self.median_ms * rng.lognormal(0.0, self.log_sd, n)
        vals = [
            reward(rw.Outcome(valid=True, latency_ms=float(x), cost_usd=self.cost)) for x in lat
        ]
        return float(self.validity * np.mean(vals))


def twelve_arms() -> tuple[list[rw.Arm], list[ArmModel]]:
    arms = rw.make_arms(
        [
            "openai:gpt-5.4",
            "google_genai:gemini-2.5-flash-lite",
            "ollama:devstral-2",
            "bedrock:claude",
        ]
    )
    rng = np.random.default_rng(12345)
    models = [
        ArmModel(validity=float(rng.uniform(0.70, 0.95)), median_ms=float(rng.uniform(300, 2000)))
        for _ in arms
    ]
    return arms, models


# --------------------------------------------------------------------------- 1. detection
def detection_delay(kind: str, seed: int, warmup: int, horizon: int = 5000) -> int | None:
    rng = np.random.default_rng(seed)
    g = rw.Guardian()
    g.add_arms(["a/direct_emit"])
    base = ArmModel(validity=0.9, median_ms=800.0)
    after = ArmModel(
        validity=0.9 if kind == "latency_x2" else 0.7,
        median_ms=1600.0 if kind == "latency_x2" else 800.0,
    )
    t = 0.0
    for _ in range(warmup):
        o = base.sample(rng)
        t += 1
        if g.observe("a/direct_emit", valid=o.valid, latency_ms=o.latency_ms, error=None, ts=t):
            return -1  # false alarm before the change
    for i in range(1, horizon + 1):
        o = after.sample(rng)
        t += 1
        ev = g.observe("a/direct_emit", valid=o.valid, latency_ms=o.latency_ms, error=None, ts=t)
        if any(e.to_state == "quarantined" for e in ev):
            return i
    return None


# ------------------------------------------------------------------- 2./3. through Controller
class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def run_controller(
    seed: int,
    rounds: int,
    guardian: bool,
    change_at: int | None = None,
    after: int = 0,
    drop: float = 0.5,
    latency_mult: float = 3.0,
    degrade: bool = True,
) -> dict[str, Any]:
    arms, models = twelve_arms()
    reward = get_reward("balanced")
    erng = np.random.default_rng(999)
    exp_before = np.array([m.expected_reward(reward, erng, 4000) for m in models])
    degraded = list(models)
    exp_after = exp_before.copy()
    best = -1  # the arm that degrades: the one the policy prefers when the change comes
    recent: list[int] = []
    clock = Clock()
    ctl = rw.Controller(arms=arms, seed=seed, clock=clock, guardian=guardian, log_events=False)
    idx = {a.id: i for i, a in enumerate(arms)}
    rng = np.random.default_rng(seed + 1000)
    regret_after = 0.0
    for r in range(rounds):
        clock.t += 0.05  # 20 requests per second
        if degrade and change_at is not None and r == change_at:
            best = int(np.bincount(recent[-500:], minlength=len(arms)).argmax())
            degraded[best] = ArmModel(
                validity=max(models[best].validity - drop, 0.0),
                median_ms=models[best].median_ms * latency_mult,
            )
            exp_after[best] = degraded[best].expected_reward(reward, erng, 4000)
        changed = change_at is not None and r >= change_at
        env = degraded if changed else models
        exp = exp_after if changed else exp_before
        d = ctl.decide({})
        k = idx[d.arm.id]
        recent.append(k)
        ctl.feedback(d.decision_id, env[k].sample(rng))
        if change_at is not None and change_at <= r < change_at + after:
            regret_after += float(exp.max() - exp[k])
    quarantines = sum(
        1 for e in ctl.events() if e.to_state == "quarantined" and e.source == "guardian"
    )
    first_trip = next(
        (e for e in ctl.events() if e.to_state == "quarantined" and e.arm == arms[best].id), None
    )
    return {
        "regret_after": regret_after,
        "quarantines": quarantines,
        "degraded_arm": arms[best].id if best >= 0 else None,
        "tripped_best": first_trip is not None,
        "trip_reason": first_trip.reason if first_trip else None,
    }


def detection_table(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """1. Detection delay: measure, print, return the results."""
    t0 = time.perf_counter()
    delay_rows = {}
    for kind in ("latency_x2", "validity_-20pt"):
        delays = [detection_delay(kind, s, args.warmup) for s in range(args.seeds)]
        found = [d for d in delays if d is not None and d > 0]
        delay_rows[kind] = {
            "delays": delays,
            "median": statistics.median(found) if found else None,
            "p90": float(np.percentile(found, 90)) if found else None,
            "max": max(found) if found else None,
            "missed": sum(d is None for d in delays),
            "false_alarms_in_warmup": sum(d == -1 for d in delays),
        }
    table = Table(
        title=f"1. Detection delay (requests on the affected arm; {args.seeds} seeds, {args.warmup} healthy first)"
    )
    for col in ("change", "median", "p90", "max", "missed", "false alarms in warm-up", "goal"):
        table.add_column(col, justify="right" if col != "change" else "left")
    for kind, row in delay_rows.items():
        table.add_row(
            kind,
            str(row["median"]),
            f"{row['p90']:.0f}" if row["p90"] else "–",
            str(row["max"]),
            str(row["missed"]),
            str(row["false_alarms_in_warmup"]),
            "median ≤ 150",
        )
    console.print(table)
    console.print(f"[dim]{time.perf_counter() - t0:.1f} s[/]")
    return delay_rows


def false_quarantine_table(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """2. False quarantines on a stationary environment: measure, print, return."""
    t0 = time.perf_counter()
    total_q, total_n = 0, 0
    per_seed = []
    for s in range(args.stationary_seeds):
        res = run_controller(s, args.stationary_rounds, guardian=True)
        per_seed.append(res["quarantines"])
        total_q += res["quarantines"]
        total_n += args.stationary_rounds
    rate = total_q / total_n * 100_000
    table = Table(
        title="2. False quarantines, stationary 12-arm environment (Controller, default policy)"
    )
    for col in ("decisions", "quarantines", "per 100k decisions", "goal"):
        table.add_column(col, justify="right")
    table.add_row(f"{total_n:,}", str(total_q), f"{rate:.2f}", "≤ 1")
    console.print(table)
    console.print(f"[dim]{time.perf_counter() - t0:.1f} s[/]")
    return {"per_seed": per_seed, "decisions": total_n, "per_100k": rate}


def regret_table(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """3. Regret after a degradation, with and without the Guardian: measure, print, return."""
    t0 = time.perf_counter()
    rounds = args.change_at + args.after
    with_g: list[float] = []
    without_g: list[float] = []
    base_on: list[float] = []
    base_off: list[float] = []
    tripped = 0
    for s in range(args.seeds):
        # the same seeds without any degradation: the policy's own exploration regret
        for flag, acc in ((True, base_on), (False, base_off)):
            res = run_controller(s, rounds, flag, args.change_at, args.after, degrade=False)
            acc.append(res["regret_after"])
        a = run_controller(
            s, rounds, True, args.change_at, args.after, args.drop, args.latency_mult
        )
        b = run_controller(
            s, rounds, False, args.change_at, args.after, args.drop, args.latency_mult
        )
        with_g.append(a["regret_after"])
        without_g.append(b["regret_after"])
        tripped += int(a["tripped_best"])
    ratio = float(np.mean(with_g) / np.mean(without_g)) if np.mean(without_g) > 0 else float("nan")
    excess_on = float(np.mean(with_g) - np.mean(base_on))
    excess_off = float(np.mean(without_g) - np.mean(base_off))
    excess_ratio = excess_on / excess_off if excess_off > 0 else float("nan")
    table = Table(
        title=f"3. Regret over the {args.after} rounds after the preferred arm degrades ({args.seeds} seeds)"
    )
    for col in ("policy", "Guardian", "mean regret", "sd", "ratio", "goal"):
        table.add_column(col, justify="right" if col not in ("policy", "Guardian") else "left")
    table.add_row(
        "default", "on", f"{np.mean(with_g):.1f}", f"{np.std(with_g):.1f}", f"{ratio:.2f}", "≤ 0.50"
    )
    table.add_row(
        "default", "off", f"{np.mean(without_g):.1f}", f"{np.std(without_g):.1f}", "1.00", ""
    )
    console.print(table)
    console.print(
        f"same seeds without a degradation: regret {np.mean(base_on):.1f} (Guardian on) / "
        f"{np.mean(base_off):.1f} (off) — the policy's own exploration cost. Excess regret caused "
        f"by the degradation: {excess_on:.1f} with vs {excess_off:.1f} without the Guardian "
        f"(ratio {excess_ratio:.2f})."
    )
    console.print(
        f"degraded arm quarantined in {tripped}/{args.seeds} seeds; [dim]{time.perf_counter() - t0:.1f} s[/]"
    )
    return {
        "no_degradation_with_guardian": base_on,
        "no_degradation_without_guardian": base_off,
        "excess_ratio": excess_ratio,
        "with_guardian": with_g,
        "without_guardian": without_g,
        "ratio_of_means": ratio,
        "degraded_arm_quarantined_in_seeds": tripped,
    }


def families_study(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """``--families``: run the plan over ``--workers`` processes, print the table, return."""
    from _families_study import Plan, execute, families_table, run_task, summarize

    plan = Plan(
        families=tuple(args.only_family or FAMILIES),
        seeds=args.families_seeds,
        rounds=args.families_rounds,
        warmup=args.change_at,
        after=args.after,
    )
    t0 = time.perf_counter()
    results = execute(plan.tasks(), args.workers, run_task, console, "families")
    per = summarize(results, plan)
    wall = time.perf_counter() - t0
    console.print(families_table(per, plan))
    worst = max(per, key=lambda n: per[n]["stationary"]["per_100k"])
    w = per[worst]["stationary"]
    console.print(
        f"worst family for false quarantines: {worst} — {w['quarantines']} in "
        f"{w['decisions']:,} stationary decisions ({w['per_100k']:.2f} per 100k). Delays are "
        "requests on the affected arm (median / p90 over the seeds that tripped). "
        f"[dim]{wall:.0f} s wall, {args.workers} workers, "
        f"{sum(r[2] for r in results):.0f} s of runs[/]"
    )
    return {"plan": dataclasses.asdict(plan), "wall_s": wall, "per_family": per}


def recovery_study(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """``--recovery``: the degradation scenario per policy and seed; print the table."""
    from _families_study import (
        POLICIES,
        execute,
        recovery_run,
        recovery_summary,
        recovery_table,
        recovery_window,
    )

    from routewise.simulations import load_scenario

    rounds = args.recovery_rounds
    window = recovery_window(rounds)
    tasks = [("recovery", p, s, rounds) for p in POLICIES for s in range(args.recovery_seeds)]
    t0 = time.perf_counter()
    results = execute(tasks, args.workers, recovery_run, console, "recovery", lambda t: t[3])
    per = recovery_summary(results)
    wall = time.perf_counter() - t0
    target = ", ".join(next(e for e in load_scenario("degradation").events).targets)
    console.print(recovery_table(per, args.recovery_seeds, rounds, window, target))
    console.print(
        "oracle = the per-request best arm; ratio = policy share / oracle share over the last "
        f"{window:,} rounds (means over seeds). [dim]{wall:.0f} s wall[/]"
    )
    return {"rounds": rounds, "window": window, "wall_s": wall, "per_policy": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--seeds", type=int, default=20, help="seeds for delay and regret (≥ 20 for the goal)"
    )
    ap.add_argument(
        "--warmup", type=int, default=1000, help="healthy observations before the change"
    )
    ap.add_argument(
        "--stationary-rounds", type=int, default=100_000, help="decisions per seed, stationary"
    )
    ap.add_argument("--stationary-seeds", type=int, default=3)
    ap.add_argument("--change-at", type=int, default=3000, help="round of the degradation")
    ap.add_argument(
        "--after", type=int, default=5000, help="rounds after the change counted as regret"
    )
    ap.add_argument("--drop", type=float, default=0.5, help="validity drop of the degraded arm")
    ap.add_argument(
        "--latency-mult", type=float, default=3.0, help="latency factor of the degraded arm"
    )
    ap.add_argument("--out", default=None)
    study = ap.add_argument_group("issue-17 studies (instead of the three tables)")
    study.add_argument("--families", action="store_true", help="the environment-family study")
    study.add_argument("--recovery", action="store_true", help="return after recovery")
    study.add_argument("--families-seeds", type=int, default=20, help="seeds per family")
    study.add_argument(
        "--families-rounds", type=int, default=5000, help="decisions per stationary run"
    )
    study.add_argument(
        "--only-family", action="append", choices=sorted(FAMILIES), help="repeatable"
    )
    study.add_argument("--workers", type=int, default=2, help="processes (1: in this one)")
    study.add_argument("--recovery-seeds", type=int, default=5)
    study.add_argument("--recovery-rounds", type=int, default=50_000)
    args = ap.parse_args(argv)
    quiet_logs()
    console = Console(width=None if sys.stdout.isatty() else 220)
    results: dict[str, Any] = {"config": vars(args), "environment": environment()}
    if args.families or args.recovery:
        if args.families:
            results["families"] = families_study(args, console)
        if args.recovery:
            results["recovery"] = recovery_study(args, console)
        prefix = "guardian-" + "-".join(k for k in ("families", "recovery") if getattr(args, k))
        path = write_json(prefix, results, args.out)
        console.print(f"results written to {path}")
        return 0
    results["detection"] = detection_table(args, console)
    results["false_quarantines"] = false_quarantine_table(args, console)
    results["regret_after_degradation"] = regret_table(args, console)
    path = write_json("guardian", results, args.out)
    console.print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
