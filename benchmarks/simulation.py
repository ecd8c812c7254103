#!/usr/bin/env python
"""Simulation and offline-replay throughput, and the stationary regret acceptance run.

Three parts (each can be skipped):

1. **Replay** (``--events``, default 1,000,000):

   * *vectorized estimators* — IPS, SNIPS, DM, DR, Switch-DR and the ESS on 1M-round arrays
     (``routewise.simulations.ope``), point estimates only, then all of them with their 95%
     bootstrap intervals (``ope.evaluate``, 1000 resamples, shared across estimators,
     m-out-of-n above 2·10⁷ draws);
   * *end to end* — ``replay(trace.jsonl, [static distribution])`` on a 1M-line JSONL trace
     written beforehand (a uniformly logged synthetic trace in the DESIGN.md format): two
     streaming passes (reward-model fit, then estimation), JSON parsing included;
   * *learning candidate* — ``replay`` of a ``squarecb`` candidate (progressive: featurize,
     score, learn at every event) on the first ``--learn-events`` lines.

2. **Simulation** (``--rounds``, default 20,000): rounds/s of ``simulate()`` — every round is
   ``Controller.decide`` + outcome draw + ``Controller.feedback`` — per policy, Guardian on
   and off; and, for scale, the bare Controller loop on the same pre-drawn requests and
   outcomes (no simulator around it).

3. **Regret** (``--regret-rounds`` 50,000 × ``--regret-seeds`` 3): the acceptance claim, on the
   stationary scenario: squarecb / linucb / default / uniform against the best fixed arm in
   hindsight and uniform random (exact expected regrets), Guardian off and on.

Example::

    python benchmarks/simulation.py                       # everything (~4 min on 2 cores)
    python benchmarks/simulation.py --skip-regret --events 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, quiet_logs, split_csv, write_json


def _rich() -> Any:
    from rich.console import Console

    return Console()


def bench_estimators(n: int, seed: int = 0) -> dict[str, Any]:
    from routewise.simulations import ope

    rng = np.random.default_rng(seed)
    k = 12
    pscore = np.full(n, 1.0 / k)
    target_prob = rng.dirichlet(np.ones(k), size=1)[0][rng.integers(0, k, n)]
    reward = rng.random(n)
    q_logged = np.clip(reward + rng.normal(0, 0.1, n), 0, 1)
    target_value = rng.random(n)
    t0 = time.perf_counter()
    ope.ips(reward, pscore, target_prob)
    ope.snips(reward, pscore, target_prob)
    ope.dm(target_value)
    ope.dr(reward, pscore, target_prob, q_logged, target_value)
    ope.switch_dr(reward, pscore, target_prob, q_logged, target_value)
    ope.ess(pscore, target_prob)
    t_point = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = ope.evaluate(reward, pscore, target_prob, q_logged, target_value, n_boot=1000, seed=seed)
    t_all = time.perf_counter() - t0
    return {
        "events": n,
        "point_s": t_point,
        "point_events_per_s": n / t_point,
        "with_ci_s": t_all,
        "with_ci_events_per_s": n / t_all,
        "dr": out["estimates"]["dr"].to_dict(),
    }


def write_trace(path: Path, n: int, seed: int = 0) -> float:
    """A uniformly logged synthetic trace in the DESIGN.md format; returns seconds taken."""
    from routewise.reward import get_reward
    from routewise.simulations import SyntheticEnvironment
    from routewise.simulations.outcomes import realize

    env = SyntheticEnvironment.default()
    ids = [a.id for a in env.arms]
    k = len(ids)
    reward = get_reward("balanced")
    t0 = time.perf_counter()
    chunk = 50_000
    with path.open("w") as fh:
        for c0 in range(0, n, chunk):
            m = min(chunk, n - c0)
            rng = np.random.default_rng((seed, c0))
            contexts, params = env.sample(m, rng)
            draws = realize(params, rng)
            arms = rng.integers(0, k, m).tolist()
            lines = []
            for j in range(m):
                o = draws.outcome(j, arms[j])
                lines.append(
                    json.dumps(
                        {
                            "decision_id": f"{c0 + j:032x}",
                            "ts": 1_764_000_000.0 + (c0 + j) / 20,
                            "context": contexts[j],
                            "arm": ids[arms[j]],
                            "propensity": 1.0 / k,
                            "policy": "uniform",
                            "outcome": o.to_dict(),
                            "reward": reward(o),
                        },
                        separators=(",", ":"),
                    )
                )
            fh.write("\n".join(lines) + "\n")
    return time.perf_counter() - t0


def bench_replay(path: Path, n: int, learn_events: int, tmp: Path) -> dict[str, Any]:
    from routewise.simulations import replay

    dist = tmp / "gemini_compressed.json"
    dist.write_text(json.dumps({"google_genai:gemini-2.5-flash-lite/transport_compressed": 1.0}))
    t0 = time.perf_counter()
    res = replay(path, [dist], n_boot=1000)
    t_static = time.perf_counter() - t0
    assert res.n == n
    head = tmp / "head.jsonl"
    with path.open() as src, head.open("w") as dst:
        for i, line in enumerate(src):
            if i >= learn_events:
                break
            dst.write(line)
    t0 = time.perf_counter()
    res2 = replay(head, ["squarecb"], n_boot=1000)
    t_learn = time.perf_counter() - t0
    return {
        "static": {
            "events": n,
            "seconds": t_static,
            "events_per_s": n / t_static,
            "dr": res.candidates[0].estimates["dr"].to_dict(),
        },
        "learning_squarecb": {
            "events": res2.n,
            "seconds": t_learn,
            "events_per_s": res2.n / t_learn,
            "dr": res2.candidates[0].estimates["dr"].to_dict(),
        },
    }


def bench_simulation(rounds: int, policies: list[str]) -> list[dict[str, Any]]:
    import routewise as rw
    from routewise.simulations import load_scenario, simulate
    from routewise.simulations.outcomes import realize
    from routewise.simulations.runner import parse_policy_spec

    sc = load_scenario("stationary")
    env = sc.build_environment()
    rows: list[dict[str, Any]] = []
    for pol in policies:
        for guardian in (True, False):
            res = simulate(sc, [pol], rounds=rounds, seeds=1, guardian=guardian)
            run = res.runs[pol][0]
            rows.append(
                {
                    "policy": pol,
                    "path": "simulate()",
                    "guardian": guardian,
                    "rounds": rounds,
                    "rounds_per_s": run.rounds_per_s,
                }
            )
        # the bare Controller loop on the same kind of requests, no simulator around it
        contexts, params = env.sample(rounds, np.random.default_rng(0))
        draws = realize(params, np.random.default_rng(1))
        outcomes_by_arm = {a.id: k for k, a in enumerate(env.arms)}
        for guardian in (True, False):
            ctl = rw.Controller(
                arms=env.arms,
                policy=parse_policy_spec(pol).build(0),
                seed=0,
                features=env.features(),
                guardian=guardian,
                log_events=False,
                snapshot_every=rounds + 1,
            )
            outs = [[draws.outcome(i, k) for k in range(len(env.arms))] for i in range(rounds)]
            t0 = time.perf_counter()
            for i in range(rounds):
                d = ctl.decide(contexts[i])
                ctl.feedback(d.decision_id, outs[i][outcomes_by_arm[d.arm.id]])
            dt = time.perf_counter() - t0
            ctl.close()
            rows.append(
                {
                    "policy": pol,
                    "path": "bare Controller loop",
                    "guardian": guardian,
                    "rounds": rounds,
                    "rounds_per_s": rounds / dt,
                }
            )
    return rows


def bench_regret(rounds: int, seeds: int, policies: list[str]) -> list[dict[str, Any]]:
    from routewise.simulations import load_scenario, simulate

    sc = load_scenario("stationary")
    rows: list[dict[str, Any]] = []
    for guardian in (False, True):
        res = simulate(sc, policies, rounds=rounds, seeds=seeds, guardian=guardian)
        base = res.baselines()
        for row in res.summary():
            rows.append(
                {
                    "guardian": guardian,
                    "policy": row["policy"],
                    "regret_mean": row["regret"]["mean"],
                    "regret_sd": row["regret"]["sd"],
                    "mean_reward": row["mean_reward"]["mean"],
                    "quarantines": row["quarantines"]["mean"],
                    "best_fixed_regret_mean": base["best_fixed_regret"]["mean"],
                    "best_fixed_regret_sd": base["best_fixed_regret"]["sd"],
                    "uniform_expected_regret_mean": base["uniform_expected_regret"]["mean"],
                    "best_fixed_arm": base["best_fixed_arm"],
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the replay benchmark")
    ap.add_argument(
        "--learn-events", type=int, default=50_000, help="events for the learning-candidate replay"
    )
    ap.add_argument(
        "--rounds", type=int, default=20_000, help="rounds per simulation-throughput run"
    )
    ap.add_argument(
        "--policies", default="squarecb,default,linucb,uniform", help="throughput policies"
    )
    ap.add_argument("--regret-rounds", type=int, default=50_000)
    ap.add_argument("--regret-seeds", type=int, default=3)
    ap.add_argument("--regret-policies", default="squarecb,linucb,default,uniform")
    ap.add_argument("--skip-replay", action="store_true")
    ap.add_argument("--skip-simulation", action="store_true")
    ap.add_argument("--skip-regret", action="store_true")
    ap.add_argument("--out", default=None, help="result JSON path (default benchmarks/out/…)")
    args = ap.parse_args(argv)
    quiet_logs()
    console = _rich()
    from rich.table import Table

    payload: dict[str, Any] = {
        "benchmark": "simulation",
        "config": vars(args),
        "environment": environment(),
    }

    if not args.skip_replay:
        console.print(f"[bold]replay[/]: {args.events:,} events")
        est = bench_estimators(args.events)
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            trace = tmp / "trace.jsonl"
            t_write = write_trace(trace, args.events)
            size_mb = trace.stat().st_size / 1e6
            rep = bench_replay(trace, args.events, min(args.learn_events, args.events), tmp)
        payload["replay"] = {
            "estimators": est,
            "file": rep,
            "trace_mb": size_mb,
            "trace_write_s": t_write,
        }
        t = Table(title=f"Replay throughput ({args.events:,}-event trace, {size_mb:,.0f} MB JSONL)")
        for c in ("what", "events", "seconds", "events/s"):
            t.add_column(c, justify="left" if c == "what" else "right")
        t.add_row(
            "5 estimators + ESS, point (arrays)",
            f"{est['events']:,}",
            f"{est['point_s']:.3f}",
            f"{est['point_events_per_s']:,.0f}",
        )
        t.add_row(
            "5 estimators + ESS + bootstrap 95% CIs (arrays)",
            f"{est['events']:,}",
            f"{est['with_ci_s']:.3f}",
            f"{est['with_ci_events_per_s']:,.0f}",
        )
        s = rep["static"]
        t.add_row(
            "replay() JSONL end to end, static candidate (2 passes)",
            f"{s['events']:,}",
            f"{s['seconds']:.2f}",
            f"{s['events_per_s']:,.0f}",
        )
        lrn = rep["learning_squarecb"]
        t.add_row(
            "replay() JSONL, learning squarecb candidate",
            f"{lrn['events']:,}",
            f"{lrn['seconds']:.2f}",
            f"{lrn['events_per_s']:,.0f}",
        )
        console.print(t)

    if not args.skip_simulation:
        pols = split_csv(args.policies)
        console.print(f"[bold]simulation[/]: {args.rounds:,} rounds × {pols}")
        rows = bench_simulation(args.rounds, pols)
        payload["simulation"] = rows
        t = Table(
            title=f"Simulation throughput (stationary, {args.rounds:,} rounds, full Controller path)"
        )
        for c in ("policy", "path", "Guardian", "rounds/s"):
            t.add_column(c, justify="right" if c == "rounds/s" else "left")
        for r in rows:
            t.add_row(
                r["policy"],
                r["path"],
                "on" if r["guardian"] else "off",
                f"{r['rounds_per_s']:,.0f}",
            )
        console.print(t)

    if not args.skip_regret:
        pols = split_csv(args.regret_policies)
        console.print(
            f"[bold]regret[/]: stationary, {args.regret_rounds:,} rounds × {args.regret_seeds} seeds"
        )
        rows = bench_regret(args.regret_rounds, args.regret_seeds, pols)
        payload["regret"] = rows
        t = Table(
            title=f"Stationary regret, {args.regret_rounds:,} rounds × {args.regret_seeds} seeds (exact)"
        )
        for c in (
            "Guardian",
            "policy",
            "regret ± sd",
            "mean reward",
            "quarantines",
            "best fixed arm",
            "uniform (exp.)",
        ):
            t.add_column(c, justify="left" if c in ("Guardian", "policy") else "right")
        for r in rows:
            t.add_row(
                "on" if r["guardian"] else "off",
                r["policy"],
                f"{r['regret_mean']:,.0f} ± {r['regret_sd']:,.0f}",
                f"{r['mean_reward']:.4f}",
                f"{r['quarantines']:.1f}",
                f"{r['best_fixed_regret_mean']:,.0f} ± {r['best_fixed_regret_sd']:,.0f}",
                f"{r['uniform_expected_regret_mean']:,.0f}",
            )
        console.print(t)
        console.print(f"best fixed arm in hindsight: {rows[0]['best_fixed_arm']}")

    path = write_json("simulation", payload, args.out)
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
