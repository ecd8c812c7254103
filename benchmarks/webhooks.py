#!/usr/bin/env python
"""Decide+feedback latency with webhook delivery: none, a fast receiver, a hanging receiver.

Workload: a Controller (in memory, 8 arms, the default policy, the Guardian with a 1 s
cooldown) on a virtual clock that moves 10 ms per pair, so Guardian transitions keep coming:
one arm ("flaky") fails with ``rate_limited`` errors during 60 of every 400 pairs and gets
every fourth request, so it is quarantined, probed, failed and recovered over and over
(about one transition per 100 pairs); every ``--operator-every`` pairs an operator pins and
releases an arm (two more). Outcomes are drawn before timing; every scenario gets the same
ones, so it records the same transitions.

Scenarios (``--scenarios``):

* ``none``     — no webhook subscribed.
* ``fast``     — a :class:`~routewise.controller.notify.WebhookNotifier` to a receiver that
                 answers 200 at once.
* ``failing``  — the receiver answers 500: every event is retried (``max_attempts`` 3,
                 backoff 10 ms).
* ``hanging``  — the receiver never answers (each run's first request blocks for the whole
                 run; ``timeout_s`` 300): events queue up to ``queue_size`` (1,000), the rest are
                 dropped and counted.

The receiver runs in its own process (an ``http.server`` on 127.0.0.1), as a real one would,
so only the notifier's own thread shares this process with the timed loop. Timer:
``time.perf_counter_ns`` around each decide+feedback pair, after ``--warmup`` untimed pairs;
every scenario runs ``--repeats`` times in round-robin order and the latencies of all its runs
are pooled. "pairs with a transition" are the pairs during which the controller recorded one
(and handed it to the notifier): the pairs that could wait on delivery if anything did.

Example::

    python benchmarks/webhooks.py                 # 20k timed pairs x 3 repeats per scenario
    python benchmarks/webhooks.py --pairs 5000 --repeats 1
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, quiet_logs, write_json

import routewise as rw
from routewise.controller.notify import WebhookNotifier

SECRET = "benchmark-webhook-secret-0123456789"
SCENARIOS = ("none", "fast", "failing", "hanging")
CONTEXTS = [
    {"task": t, "schema_depth": d, "input_tokens": n, "language": lang}
    for t in ("extraction", "classification", "qa")
    for d in (1, 3)
    for n in (300, 2500)
    for lang in ("en", "zh")
]


# ---------------------------------------------------------------------------- the receiver
def _serve(mode: str, ready: Any) -> None:
    """The receiver process: 200, 500, or never answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            if mode == "hanging":
                time.sleep(3600)
            self.send_response(500 if mode == "failing" else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready.put(server.server_address[1])
    server.serve_forever()


class Receiver:
    def __init__(self, mode: str) -> None:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        self.proc = ctx.Process(target=_serve, args=(mode, q), daemon=True)
        self.proc.start()
        self.url = f"http://127.0.0.1:{q.get(timeout=30)}/hook"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.join(timeout=10)


# ---------------------------------------------------------------------------- the workload
class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _arms() -> list[rw.Arm]:
    return rw.make_arms(["openai:gpt-5.4", "gemini:flash", "ollama:llama3", "bedrock:claude"])[:8]


def _plan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pair: the context index, a uniform draw for validity and a latency factor."""
    rng = np.random.default_rng(seed)
    return rng.integers(len(CONTEXTS), size=n), rng.random(n), rng.lognormal(0.0, 0.25, n)


def run(
    scenario: str, url: str | None, pairs: int, warmup: int, operator_every: int, seed: int
) -> dict[str, Any]:
    clock = Clock()
    arms = _arms()
    flaky = arms[-1].id
    guardian = rw.Guardian(cooldown_s=1.0, max_cooldown_s=2.0)
    ctl = rw.Controller(arms=arms, seed=seed, clock=clock, guardian=guardian, log_events=False)
    hook = None
    if url is not None:
        hook = WebhookNotifier(
            url, SECRET, timeout_s=300.0, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05
        )
        ctl.subscribe(hook)
    total = warmup + pairs
    ctx_i, u, lat = _plan(total, seed)
    times = np.zeros(pairs, dtype=np.int64)
    marked = np.zeros(pairs, dtype=bool)
    counts = ctl.transition_counts
    n_before = sum(counts().values())
    perf = time.perf_counter_ns
    for i in range(total):
        ctx = CONTEXTS[int(ctx_i[i])]
        bad = i % 400 < 60
        t0 = perf()
        d = ctl.decide(ctx, arms=[flaky] if i % 4 == 0 else None)
        err = "rate_limited" if bad and d.arm.id == flaky else None
        ok = err is None and bool(u[i] < 0.9)
        ctl.feedback(d.decision_id, rw.Outcome(ok, 400.0 * float(lat[i]), 0.0001, error=err))
        t1 = perf()
        clock.t += 0.01
        if i >= warmup:
            j = i - warmup
            times[j] = t1 - t0
            n = sum(counts().values())
            marked[j] = n != n_before
            n_before = n
        if operator_every and i % operator_every == operator_every - 1:
            ctl.pin(arms[0].id)  # outside the timed pair: the operator's own request
            ctl.release(arms[0].id)
            n_before = sum(counts().values())
    transitions = sum(ctl.transition_counts().values())
    stats = hook.stats() if hook is not None else None
    if hook is not None:
        hook.close(timeout_s=2.0 if scenario != "hanging" else 0.2)
    ctl.close()
    us = times / 1000.0
    return {
        "scenario": scenario,
        "pairs": pairs,
        "latency_us": us.tolist(),
        "marked": marked.tolist(),
        "transitions": transitions,
        "delivered": stats.delivered if stats else None,
        "failed": stats.failed if stats else None,
        "dropped": stats.dropped if stats else None,
        "queued": stats.queued if stats else None,
    }


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", type=int, default=20_000, help="timed pairs per run")
    ap.add_argument("--warmup", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--operator-every", type=int, default=1_000)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    quiet_logs()  # and the notifiers' warnings (failed / dropped are what the table counts)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    console = Console(width=150)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"--scenarios: unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    receivers = {s: Receiver(s) for s in scenarios if s != "none"}
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
    try:
        for r in range(args.repeats):
            for s in scenarios:
                url = receivers[s].url if s in receivers else None
                console.print(f"[dim]round {r + 1}/{args.repeats}: {s}[/dim]")
                runs[s].append(
                    run(s, url, args.pairs, args.warmup, args.operator_every, args.seed + r)
                )
    finally:
        for rec in receivers.values():
            rec.close()
    table = Table(title="decide+feedback latency with webhook delivery (µs per pair)")
    for col in ("scenario", "pairs", "p50", "p99", "p99.9", "max", "transitions/run",
                "w/ transition: n", "p50", "p99", "delivered", "failed", "dropped", "queued"):  # fmt: skip
        table.add_column(col, justify="left" if col == "scenario" else "right")
    summary = []
    for s in scenarios:
        lat = np.concatenate([np.asarray(x["latency_us"]) for x in runs[s]])
        mark = np.concatenate([np.asarray(x["marked"], dtype=bool) for x in runs[s]])
        last = runs[s][-1]
        row = {
            "scenario": s,
            "pairs": len(lat),
            "p50": _pct(lat, 50),
            "p99": _pct(lat, 99),
            "p999": _pct(lat, 99.9),
            "max": float(lat.max()),
            "transitions_per_run": last["transitions"],
            "transition_pairs": int(mark.sum()),
            "transition_p50": _pct(lat[mark], 50),
            "transition_p99": _pct(lat[mark], 99),
            **{k: last[k] for k in ("delivered", "failed", "dropped", "queued")},
        }
        summary.append(row)

        def cell(v: Any) -> str:
            return "-" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"

        table.add_row(
            s, cell(row["pairs"]), cell(row["p50"]), cell(row["p99"]), cell(row["p999"]),
            cell(row["max"]), cell(row["transitions_per_run"]), cell(row["transition_pairs"]),
            cell(row["transition_p50"]),
            cell(row["transition_p99"]), cell(row["delivered"]), cell(row["failed"]),
            cell(row["dropped"]), cell(row["queued"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "[dim]delivered/failed/dropped/queued: the last run's notifier when the timed loop "
        "ended (before close).[/dim]"
    )
    path = write_json(
        "webhooks", {"env": environment(), "args": vars(args), "summary": summary}, args.out
    )
    console.print(f"[dim]wrote {path}[/dim]")


if __name__ == "__main__":
    main()
