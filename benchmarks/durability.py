#!/usr/bin/env python
"""What acknowledging a decision+feedback pair costs: a table transaction vs an acklog line.

The sidecar answers a write request only once what it acknowledges is durable: after every
event-loop turn its group commit makes everything logged in that turn durable, once. This
script measures the two ways a :class:`~routewise.state.SQLiteStore` can do that, for groups of
G decision+feedback pairs per acknowledgement (G ≈ half the requests answered per loop turn,
decide and feedback being separate requests). ``G = rec`` acknowledges after every record —
after the decision, then after its feedback — as an idle sidecar does (one request per turn):

* ``flush/batch``  — ``durability="batch"``, ``store.flush()`` every G pairs: one SQLite
                     transaction (WAL append, ``synchronous=NORMAL``) with the group's rows.
* ``sync/feedback``— ``durability="feedback"`` (the library default), ``store.sync()`` every G
                     pairs: every ``log_feedback`` appends one checksummed line (one
                     ``write(2)``) to ``<db>.acklog`` with the feedback and the decisions
                     before it; ``sync()`` appends the decisions logged since (none here).
* ``sync/batch``   — ``durability="batch"``, ``store.sync()`` every G pairs: one acklog line
                     with the group's rows.
* ``none/batch``   — ``durability="batch"``, no acknowledgement (rows committed every 256
                     records): the cost of logging alone, subtracted to give the "ack" column.

Every variant commits the rows to the tables in batches of ``batch_size=256`` records too
(``flush`` commits them itself), so "per pair" is the whole logging cost and "ack" is what
the acknowledgement adds to it.

Two tables:

1. *Store*: ``log_decision`` + ``log_feedback`` with prebuilt records (12-arm-sized features,
   a 6-key context, an outcome) and the acknowledgement call; µs per pair (total, the ack call
   alone, and total minus ``none/batch``).
2. *Controller*: ``routewise.Controller(arms=…, store=path, durability=…)`` deciding and
   taking feedback (``decide`` + ``feedback``), ``ctl.store.flush()``/``sync()`` every G pairs;
   pairs/s, with ``store=None`` (no logging) for reference.

Timer: ``time.perf_counter``. Each cell is the median of ``--reps`` runs (fresh store each,
after ``--warmup`` untimed pairs); the variants of a repetition run in round-robin order so
load from other processes is spread over all of them.

Example::

    python benchmarks/durability.py                         # 4096 pairs, 7 repetitions
    python benchmarks/durability.py --pairs 1024 --reps 3 --out durability.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import quiet_logs, require_controller

rw = require_controller()
from routewise.state import DecisionRecord, FeedbackRecord, SQLiteStore  # noqa: E402

BACKENDS = [
    "openai:gpt-5.4",
    "google_genai:gemini-2.5-flash-lite",
    "ollama:devstral-2",
    "bedrock:nova-pro",
]
ARMS = [a.id for a in rw.make_arms(BACKENDS)]  # 4 backends x 3 modes = 12 arms

# name -> (durability, acknowledgement method or None)
STORE_VARIANTS: dict[str, tuple[str, str | None]] = {
    "flush/batch": ("batch", "flush"),
    "sync/feedback": ("feedback", "sync"),
    "sync/batch": ("batch", "sync"),
    "none/batch": ("batch", None),
}


def contexts(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "task": str(rng.choice(["extraction", "qa", "classification", "routing"])),
            "language": str(rng.choice(["en", "zh", "de", "ja"])),
            "n_fields": int(rng.integers(1, 40)),
            "schema_depth": int(rng.integers(1, 6)),
            "input_tokens": float(rng.integers(50, 5000)),
            "tenant": f"t{int(rng.integers(0, 8))}",
        }
        for _ in range(n)
    ]


def records(n: int, seed: int) -> list[tuple[DecisionRecord, FeedbackRecord]]:
    """n decision+feedback pairs with sequence numbers 1..2n, as the Controller logs them."""
    rng = np.random.default_rng(seed)
    out = []
    for i, ctx in enumerate(contexts(n, seed)):
        did = f"{i:032x}"
        d = DecisionRecord(
            decision_id=did,
            seq=2 * i + 1,
            ts=1.7e9 + i,
            context=ctx,
            arm=ARMS[i % len(ARMS)],
            propensity=0.25,
            features=rng.standard_normal(50),
            policy="squarecb",
            eligible=None,
        )
        outcome = {"valid": bool(i % 3), "latency_ms": 120.5 + i % 17, "cost_usd": 0.0003}
        f = FeedbackRecord(did, 2 * i + 2, 1.7e9 + i + 0.5, outcome, 0.75)
        out.append((d, f))
    return out


# --------------------------------------------------------------------------------- store
def run_store(
    variant: str, group: int, pairs: list[tuple[DecisionRecord, FeedbackRecord]], warmup: int,
    synchronous: str,
) -> tuple[float, float, float]:  # fmt: skip
    """(µs per pair, µs per pair spent in the acknowledgement call, CPU µs per pair) for one
    fresh store."""
    durability, method = STORE_VARIANTS[variant]
    tmp = tempfile.mkdtemp(prefix="rw-durability-")
    store = SQLiteStore(
        os.path.join(tmp, "s.db"),
        durability=durability,  # type: ignore[arg-type]
        synchronous=synchronous,  # type: ignore[arg-type]
    )
    ack: Callable[[], None] | None = getattr(store, method) if method else None
    try:
        for d, f in pairs[:warmup]:
            store.log_decision(d)
            store.log_feedback(f)
        if ack is not None:
            ack()
        timed = pairs[warmup:]
        in_ack = 0.0

        def acknowledge() -> None:
            nonlocal in_ack
            if ack is not None:
                a = time.perf_counter()
                ack()
                in_ack += time.perf_counter() - a

        per_record, size = group == 0, max(group, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        for start in range(0, len(timed), size):
            for d, f in timed[start : start + size]:
                store.log_decision(d)
                if per_record:
                    acknowledge()
                store.log_feedback(f)
                if per_record:
                    acknowledge()
            if not per_record:
                acknowledge()
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return total / len(timed) * 1e6, in_ack / len(timed) * 1e6, cpu / len(timed) * 1e6


# ---------------------------------------------------------------------------- controller
def run_controller(
    variant: str, group: int, ctxs: list[dict[str, Any]], warmup: int, synchronous: str
) -> tuple[float, float]:
    """(pairs/s, CPU µs per pair) of decide + feedback (+ the acknowledgement every
    ``group`` pairs)."""
    outcomes = [
        rw.Outcome(valid=bool(i % 3), latency_ms=100.0 + i % 50, cost_usd=0.0003)
        for i in range(len(ctxs))
    ]
    tmp = tempfile.mkdtemp(prefix="rw-durability-")
    if variant == "memory":
        ctl = rw.Controller(arms=ARMS, store=None, seed=0)
        method = None
    else:
        durability, method = STORE_VARIANTS[variant]
        store = SQLiteStore(
            os.path.join(tmp, "s.db"),
            durability=durability,  # type: ignore[arg-type]
            synchronous=synchronous,  # type: ignore[arg-type]
        )
        ctl = rw.Controller(arms=ARMS, store=store, seed=0)
    ack: Callable[[], None] | None = getattr(ctl.store, method) if method else None
    try:
        for ctx, out in zip(ctxs[:warmup], outcomes[:warmup], strict=True):
            ctl.feedback(ctl.decide(ctx).decision_id, out)
        if ack is not None:
            ack()
        n = len(ctxs) - warmup
        per_record, size = group == 0, max(group, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(warmup, len(ctxs)):
            d = ctl.decide(ctxs[i])
            if ack is not None and per_record:
                ack()
            ctl.feedback(d.decision_id, outcomes[i])
            if ack is not None and (per_record or (i - warmup + 1) % size == 0):
                ack()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ctl.close()
        ctl.store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return n / elapsed, cpu / n * 1e6


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=4096, help="timed pairs per run")
    ap.add_argument("--warmup", type=int, default=256, help="untimed pairs per run")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (the median is shown)")
    ap.add_argument(
        "--groups",
        default="0,1,8,64",
        help="pairs per acknowledgement (0: after every record, decide and feedback apart)",
    )
    ap.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    ap.add_argument("--out", type=Path, help="also write the tables to this file")
    args = ap.parse_args(argv)
    quiet_logs()
    groups = [int(g) for g in args.groups.split(",")]
    n = args.pairs + args.warmup
    pairs, ctxs = records(n, seed=1), contexts(n, seed=2)

    store_res: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    ctl_res: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.reps):
        for g in groups:
            for v in STORE_VARIANTS:
                r = run_store(v, g, pairs, args.warmup, args.synchronous)
                store_res.setdefault((v, g), []).append(r)
            for v in ["memory", *STORE_VARIANTS]:
                ctl_res.setdefault((v, g), []).append(
                    run_controller(v, g, ctxs, args.warmup, args.synchronous)
                )

    lines = report(store_res, ctl_res, groups, args)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


def report(
    store_res: dict[tuple[str, int], list[tuple[float, float, float]]],
    ctl_res: dict[tuple[str, int], list[tuple[float, float]]],
    groups: list[int],
    args: argparse.Namespace,
) -> list[str]:
    med = statistics.median
    lines = [
        f"# benchmarks/durability.py --pairs {args.pairs} --warmup {args.warmup} "
        f"--reps {args.reps} --groups {args.groups} --synchronous {args.synchronous}",
        f"# {platform.platform()}; Python {platform.python_version()}; "
        f"SQLite {__import__('sqlite3').sqlite_version}; {os.cpu_count()} CPUs; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        "# wall time (perf_counter): median and best of the repetitions; cpu = median process",
        "# CPU time (all threads). G = pairs per acknowledgement (rec: after every record).",
        "",
        "1. Store: µs per decision+feedback pair (log_decision + log_feedback + its share of",
        "   the acknowledgement and of the batched table commits); ack = the same minus",
        "   none/batch (what acknowledging adds); in ack = inside the flush()/sync() call",
        f"{'variant':<15}{'G':>4}{'median':>8}{'best':>7}{'ack':>7}{'ack best':>9}"
        f"{'in ack':>8}{'cpu':>7}",
    ]
    for g in groups:
        base = store_res[("none/batch", g)]
        base_med, base_best = med(r[0] for r in base), min(r[0] for r in base)
        for v in STORE_VARIANTS:
            runs = store_res[(v, g)]
            total, best = med(r[0] for r in runs), min(r[0] for r in runs)
            ack = f"{total - base_med:>7.1f}{best - base_best:>9.1f}"
            if v == "none/batch":
                ack = f"{'-':>7}{'-':>9}"
            lines.append(
                f"{v:<15}{g or 'rec':>4}{total:>8.1f}{best:>7.1f}{ack}"
                f"{med(r[1] for r in runs):>8.1f}{med(r[2] for r in runs):>7.1f}"
            )
    lines += [
        "",
        "2. Controller: decide + feedback pairs/s (µs/pair = 1e6 / median pairs/s)",
        f"{'variant':<15}{'G':>4}{'median':>8}{'best':>7}{'µs/pair':>9}{'cpu':>7}",
    ]
    for g in groups:
        for v in ["memory", *STORE_VARIANTS]:
            rates = ctl_res[(v, g)]
            rate = med(r[0] for r in rates)
            lines.append(
                f"{v:<15}{g or 'rec':>4}{rate:>8.0f}{max(r[0] for r in rates):>7.0f}"
                f"{1e6 / rate:>9.1f}{med(r[1] for r in rates):>7.1f}"
            )
    lines += ["", "Every run (store: µs per pair; controller: pairs/s)"]
    for (v, g), sruns in store_res.items():
        lines.append(f"store {v:<15}{g or 'rec':>4}  " + " ".join(f"{r[0]:.1f}" for r in sruns))
    for (v, g), cruns in ctl_res.items():
        lines.append(f"ctl   {v:<15}{g or 'rec':>4}  " + " ".join(f"{r[0]:.0f}" for r in cruns))
    return lines


if __name__ == "__main__":
    main()
