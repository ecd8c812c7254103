#!/usr/bin/env python
"""Per-arm validity / latency / tokens on REAL local LLMs (llama.cpp llama-server, CPU).

Backends: ``openai_compatible:smollm2-135m`` (SmolLM2-135M-Instruct) and
``openai_compatible:gemma3-270m`` (Gemma 3 270M base), each × the three output modes, each
arm forced (``arms=[arm]``) on the same labelled support messages, once per constrained-
decoding setting (``--constrain grammar,none``: GBNF / JSON-schema constrained vs
instructions only). Prints one table per setting and writes JSON to benchmarks/out/.

``correct`` is the share of labelled fields (intent, urgency) right — the tiny models are
near chance there; the table is about format, latency and validity, the backend × mode
effect routewise learns.

Example::

    python benchmarks/live_models.py --per-arm 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from routewise.backends.llama import ensure_local_models, local_backends
from routewise.backends.router import Router
from routewise.demo import SupportTicket, load_messages, support_request


def run(
    per_arm: int, constrain: str, backends: dict[str, dict[str, Any]], bar: Progress
) -> dict[str, Any]:
    cfgs = {name: {**cfg, "constrain": constrain} for name, cfg in backends.items()}
    router = Router(cfgs, seed=0, reward="low_latency")
    messages = load_messages()
    rows: dict[str, Any] = {}
    task = bar.add_task(f"constrain={constrain}", total=per_arm * len(router.arms))
    try:
        for arm in router.arms:
            recs = []
            for i in range(per_arm):
                chat, score = support_request(messages[i % len(messages)])
                res = router.complete_sync(SupportTicket, chat, arms=[arm], score=score)
                recs.append(res.receipt)
                bar.advance(task)
            lat = [r.outcome.latency_ms for r in recs]
            errors: dict[str, int] = {}
            for r in recs:
                if r.outcome.error:
                    errors[r.outcome.error] = errors.get(r.outcome.error, 0) + 1
            rows[arm.id] = {
                "n": len(recs),
                "constrain_sent": recs[0].constrain,
                "parse_ok": sum(r.parse_ok for r in recs) / len(recs),
                "valid": sum(r.outcome.valid for r in recs) / len(recs),
                "p50_ms": statistics.median(lat),
                "p95_ms": sorted(lat)[max(0, int(0.95 * len(lat)) - 1)],
                "out_tokens": statistics.mean(r.output_tokens for r in recs),
                "in_tokens": statistics.mean(r.input_tokens for r in recs),
                "local_ms": statistics.mean(r.local_ms for r in recs),
                "correct": statistics.mean((r.outcome.score or 0.0) for r in recs),
                "errors": errors,
            }
    finally:
        router.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--per-arm", type=int, default=30, help="requests per arm and setting")
    ap.add_argument("--constrain", default="grammar,none", help="comma-separated settings")
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--install", action="store_true", help="install missing models / llama-server")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "live_models.json")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    ensure_local_models(models, install=args.install)
    console = Console(width=200)
    results: dict[str, Any] = {}
    t0 = time.time()
    with local_backends(models, threads=2) as backends, Progress(console=console) as bar:
        for c in args.constrain.split(","):
            results[c] = run(args.per_arm, c, backends, bar)
    for c, rows in results.items():
        t = Table(title=f"real local models, constrain={c} ({args.per_arm} requests per arm)")
        for col in (
            "arm",
            "sent",
            "parse ok",
            "valid",
            "p50 ms",
            "p95 ms",
            "out tok",
            "in tok",
            "local ms",
            "correct",
            "errors",
        ):
            t.add_column(col, justify="left" if col in ("arm", "errors", "sent") else "right")
        for arm, r in rows.items():
            t.add_row(
                arm,
                r["constrain_sent"],
                f"{r['parse_ok']:.0%}",
                f"{r['valid']:.0%}",
                f"{r['p50_ms']:.0f}",
                f"{r['p95_ms']:.0f}",
                f"{r['out_tokens']:.1f}",
                f"{r['in_tokens']:.0f}",
                f"{r['local_ms']:.3f}",
                f"{r['correct']:.2f}",
                json.dumps(r["errors"]) if r["errors"] else "",
            )
        console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"per_arm": args.per_arm, "results": results, "elapsed_s": time.time() - t0}, indent=2
        )
    )
    console.print(f"wrote {args.out} ({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
