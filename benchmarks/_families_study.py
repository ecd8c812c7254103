"""The measurements behind ``benchmarks/guardian.py --families`` and ``--recovery``.

``--families`` — in every environment family of :mod:`_families` (20 seeds each: seed ``s``
draws the environment *and* the run's traffic and seeds the policy), through the real
Controller with an injected clock (20 requests/s), ``log_events=False`` and the in-memory
store:

* **false quarantines** — stationary runs of ``--families-rounds`` decisions with each of the
  policies ``default``, ``linucb`` and ``squarecb``. Every Guardian transition to
  ``quarantined`` is false here; ``…:cap_reached`` trips (a trip refused because half the arms
  are out already) are counted apart. Reported per 100k decisions.
* **detection delay** — default policy; after a stationary warm-up the arm the policy prefers
  (most chosen over the last 500 rounds) gets a 2× latency jump, or a 20-point validity drop
  (``p − 0.20``, floored at 0). Delay = requests routed to that arm until it is quarantined;
  *missed* when it is not within the horizon (rounds after the change).
* **regret after a degradation** — default policy; after the warm-up the preferred arm
  degrades (validity −0.5, latency ×3). Regret = Σ (best expected reward − expected reward of
  the chosen arm) over the next rounds, with and without the Guardian, same seeds and the same
  requests (common random numbers). Expected rewards are exact (closed form per request, see
  :mod:`_families`), except that in ``error_bursts`` the error term is the arm's long-run rate.
  The same seeds' rounds *without* a degradation (Guardian off) give the policy's own
  exploration regret, which no Guardian can remove; the *excess ratio* is (with − no change) /
  (without − no change), the share of the degradation's cost the Guardian leaves.

The warm-ups of the detection and regret runs are stationary too: their quarantines are
reported as well (``pre-change``), in addition to the dedicated stationary runs.

``--recovery`` — the shipped ``degradation`` scenario (the Gemini-class backend degrades at 40 %
and recovers at 75 % of the run) through :func:`routewise.simulations.simulate`: the policy's
share of decisions on the recovered backend (all its arms) over the last 5,000 rounds against
the oracle's share there (its per-request best arm), and the same shares over the 5,000 rounds
before the degradation.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
from _common import quiet_logs
from _families import FAMILIES, Degradation, Family, Run
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

import routewise as rw

POLICIES = ("default", "linucb", "squarecb")
EPOCH = 1_700_000_000.0
DT = 0.05  # 20 requests per second
BATCH = 500


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``--families`` runs (see :func:`plan`)."""

    families: tuple[str, ...]
    seeds: int = 20
    rounds: int = 5000
    warmup: int = 3000
    detect_horizon: int = 4000
    after: int = 5000
    policies: tuple[str, ...] = POLICIES

    def tasks(self) -> list[tuple[Any, ...]]:
        """Every run as a picklable tuple, the longest first (they balance over workers)."""
        out: list[tuple[Any, ...]] = []
        for fam in self.families:
            for s in range(self.seeds):
                out += [("regret", fam, s, g, self.warmup, self.after) for g in (True, False)]
                out.append(("baseline", fam, s, self.warmup, self.after))
                out += [("stationary", fam, s, p, self.rounds) for p in self.policies]
                out += [
                    ("detect", fam, s, kind, self.warmup, self.detect_horizon)
                    for kind in ("latency_x2", "validity_-20pt")
                ]
        return sorted(out, key=lambda t: -weight(t))


def weight(task: tuple[Any, ...]) -> int:
    """A task's expected rounds (for the progress bar)."""
    if task[0] == "stationary":
        return int(task[4])
    if task[0] == "regret":
        return int(task[4] + task[5])
    if task[0] == "baseline":
        return int(task[3] + task[4])
    return int(task[4] + 400)


# ------------------------------------------------------------------------------- one run
class Clock:
    """The injected clock (seconds); a :class:`Session` advances it by 1/20 s per request."""

    def __init__(self) -> None:
        self.t = EPOCH

    def __call__(self) -> float:
        return self.t


@functools.lru_cache(maxsize=64)
def family(name: str, seed: int) -> Family:
    return FAMILIES[name](seed)


@dataclass
class Session:
    """A Controller routing one family run's requests, batch by batch."""

    fam: Family
    policy: str
    seed: int
    guardian: bool
    clock: Clock = field(default_factory=Clock)
    picks: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ctl = rw.Controller(
            arms=self.fam.arms,
            policy=self.policy,
            seed=self.seed,
            clock=self.clock,
            guardian=self.guardian,
            log_events=False,
            snapshot_every=10**9,  # an in-memory store is never restored from
        )
        self.index = {a.id: k for k, a in enumerate(self.fam.arms)}
        self.run: Run = self.fam.run(self.seed)
        self.watched = 0  # requests routed to the watched arm (see play)
        self.tripped = False  # the watched arm was quarantined

    def play(self, rounds: int, deg: Degradation | None = None, watch: int | None = None) -> float:
        """``rounds`` requests (fewer if ``watch`` — an arm index — gets quarantined: then
        :attr:`watched` is the number of requests it was routed until then); returns the
        regret of these rounds."""
        ctl, clock, index, picks = self.ctl, self.clock, self.index, self.picks
        g = ctl.guardian
        watch_id = self.fam.arms[watch].id if watch is not None else None
        self.watched, self.tripped = 0, False
        regret, done = 0.0, 0
        while done < rounds:
            b = self.run.batch(min(BATCH, rounds - done), deg)
            chosen: list[int] = []
            for j, ctx in enumerate(b.contexts):
                clock.t += DT
                d = ctl.decide(ctx)
                k = index[d.arm.id]
                ctl.feedback(d.decision_id, b.outcome(j, k))
                chosen.append(k)
                if k == watch and g is not None:
                    self.watched += 1
                    if g.state(watch_id) == "quarantined":  # type: ignore[arg-type]
                        self.tripped = True
                        break
            rows = np.arange(len(chosen))
            mu = b.mu[: len(chosen)]
            regret += float((mu.max(axis=1) - mu[rows, chosen]).sum())
            picks += chosen
            done += len(chosen)
            if self.tripped:
                break
        return regret

    def preferred(self) -> int:
        """The arm chosen most over the last 500 rounds."""
        return int(np.bincount(self.picks[-500:], minlength=len(self.fam.arms)).argmax())

    def transitions(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(Guardian quarantines, cap-reached trips), each as ``round, arm, reason, evidence``."""
        q, cap = [], []
        for e in self.ctl.events():
            if e.source != "guardian":
                continue
            row = {
                "round": round((e.ts - EPOCH) / DT) - 1,
                "arm": e.arm,
                "reason": e.reason,
                "evidence": e.evidence,
            }
            if e.to_state == "quarantined":
                q.append(row)
            elif e.reason.endswith(":cap_reached"):
                cap.append(row)
        return q, cap

    def close(self) -> None:
        self.ctl.close()


def stationary(name: str, seed: int, policy: str, rounds: int) -> dict[str, Any]:
    ses = Session(family(name, seed), policy, seed, True)
    ses.play(rounds)
    q, cap = ses.transitions()
    ses.close()
    return {"decisions": rounds, "quarantines": q, "cap_reached": cap}


def detect(name: str, seed: int, kind: str, warmup: int, horizon: int) -> dict[str, Any]:
    ses = Session(family(name, seed), "default", seed, True)
    ses.play(warmup)
    k = ses.preferred()
    pre, _ = ses.transitions()
    out: dict[str, Any] = {"arm": ses.fam.arms[k].id, "pre_change_quarantines": len(pre)}
    g = ses.ctl.guardian
    assert g is not None
    if g.state(ses.fam.arms[k].id) != "healthy":  # out already (a false trip): no delay
        ses.close()
        return {**out, "delay": None, "skipped": True}
    deg = Degradation(k, latency_factor=2.0) if kind == "latency_x2" else None
    if deg is None:
        deg = Degradation(k, validity_drop=0.20)
    ses.play(horizon, deg, watch=k)
    q, _ = ses.transitions()
    ses.close()
    reason = next((e["reason"] for e in q[len(pre) :] if e["arm"] == out["arm"]), None)
    return {
        **out,
        "delay": ses.watched if ses.tripped else None,
        "requests_on_arm": ses.watched,
        "reason": reason,
        "skipped": False,
    }


def regret(name: str, seed: int, guardian: bool, warmup: int, after: int) -> dict[str, Any]:
    ses = Session(family(name, seed), "default", seed, guardian)
    ses.play(warmup)
    k = ses.preferred()
    pre, _ = ses.transitions()
    r = ses.play(after, Degradation(k, latency_factor=3.0, validity_drop=0.5))
    q, _ = ses.transitions()
    ses.close()
    arm = ses.fam.arms[k].id
    return {
        "arm": arm,
        "regret": r,
        "pre_change_quarantines": len(pre),
        "decisions_before": warmup,
        "tripped": any(e["arm"] == arm for e in q[len(pre) :]),
    }


def baseline(name: str, seed: int, warmup: int, after: int) -> dict[str, Any]:
    """The regret run's rounds on the same seed without a degradation (Guardian off): the
    policy's own exploration cost, which no Guardian can remove."""
    ses = Session(family(name, seed), "default", seed, False)
    ses.play(warmup)
    r = ses.play(after)
    ses.close()
    return {"regret": r}


def run_task(task: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any], float]:
    """Run one task tuple (in a worker); returns it with its result and wall time."""
    t0 = time.perf_counter()
    kind, name, seed, *rest = task
    fn: Callable[..., dict[str, Any]] = {
        "stationary": stationary,
        "detect": detect,
        "regret": regret,
        "baseline": baseline,
    }[kind]
    res = fn(name, seed, *rest)
    res["arms"] = len(family(name, seed).arms)
    return task, res, time.perf_counter() - t0


def execute(
    tasks: Sequence[tuple[Any, ...]],
    workers: int,
    fn: Callable[[tuple[Any, ...]], tuple[tuple[Any, ...], dict[str, Any], float]],
    console: Console,
    label: str,
    weigh: Callable[[tuple[Any, ...]], int] = weight,
) -> list[tuple[tuple[Any, ...], dict[str, Any], float]]:
    """Run ``tasks`` over ``workers`` processes (in this one if 1) with a progress bar."""
    total = sum(weigh(t) for t in tasks)
    cols = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    out = []
    with Progress(*cols, console=console, transient=False) as progress:
        bar = progress.add_task(label, total=total)

        t0, done, shown = time.perf_counter(), 0, 0

        def collect(results: Iterable[tuple[tuple[Any, ...], dict[str, Any], float]]) -> None:
            nonlocal done, shown
            for item in results:
                out.append(item)
                progress.advance(bar, weigh(item[0]))
                done += weigh(item[0])
                if not console.is_terminal and 10 * done // total > shown:  # a log, not a bar
                    shown = 10 * done // total
                    console.print(f"{label}: {done / total:.0%} ({time.perf_counter() - t0:.0f} s)")

        if workers <= 1:
            collect(fn(t) for t in tasks)
        else:
            with get_context("fork").Pool(workers, initializer=quiet_logs) as pool:
                collect(pool.imap_unordered(fn, tasks, chunksize=1))
    return out


# ------------------------------------------------------------------------------ summaries
def _delays(rows: list[dict[str, Any]]) -> dict[str, Any]:
    found = [r["delay"] for r in rows if r["delay"] is not None]
    return {
        "delays": [r["delay"] for r in rows],
        "reasons": [r.get("reason") for r in rows],
        "median": statistics.median(found) if found else None,
        "p90": float(np.percentile(found, 90)) if found else None,
        "max": max(found) if found else None,
        "missed": sum(1 for r in rows if r["delay"] is None and not r["skipped"]),
        "requests_on_arm_when_missed": [
            r["requests_on_arm"] for r in rows if r["delay"] is None and not r["skipped"]
        ],
        "skipped": sum(1 for r in rows if r["skipped"]),
    }


def summarize(
    results: list[tuple[tuple[Any, ...], dict[str, Any], float]], plan: Plan
) -> dict[str, Any]:
    """Per family: false quarantines (per policy), detection delays, regret ratio."""
    per: dict[str, dict[str, Any]] = {}
    for name in plan.families:
        rows = [(t, r) for t, r, _ in results if t[1] == name]
        stat = [(t[3], r) for t, r in rows if t[0] == "stationary"]
        decisions = sum(r["decisions"] for _, r in stat)
        q = sum(len(r["quarantines"]) for _, r in stat)
        cap = sum(len(r["cap_reached"]) for _, r in stat)
        by_policy = {
            p: sum(len(r["quarantines"]) for pp, r in stat if pp == p) for p in plan.policies
        }
        events = [dict(e, policy=p) for p, r in stat for e in r["quarantines"]]
        det = {
            k: _delays([r for t, r in rows if t[0] == "detect" and t[3] == k])
            for k in ("latency_x2", "validity_-20pt")
        }
        on = [r for t, r in sorted(rows, key=lambda x: x[0][2]) if t[0] == "regret" and t[3]]
        off = [r for t, r in sorted(rows, key=lambda x: x[0][2]) if t[0] == "regret" and not t[3]]
        mean_on = float(np.mean([r["regret"] for r in on])) if on else math.nan
        mean_off = float(np.mean([r["regret"] for r in off])) if off else math.nan
        base = [r["regret"] for t, r in rows if t[0] == "baseline"]
        mean_base = float(np.mean(base)) if base else math.nan
        excess_off = mean_off - mean_base
        pre_runs = [r for t, r in rows if t[0] == "detect" or (t[0] == "regret" and t[3])]
        per[name] = {
            "arms": sorted({r["arms"] for _, r in rows}),
            "stationary": {
                "decisions": decisions,
                "quarantines": q,
                "per_100k": q / decisions * 1e5 if decisions else math.nan,
                "cap_reached": cap,
                "cap_reached_per_100k": cap / decisions * 1e5 if decisions else math.nan,
                "by_policy": by_policy,
                "events": events,
            },
            "pre_change": {
                "decisions": plan.warmup * len(pre_runs),
                "quarantines": sum(r["pre_change_quarantines"] for r in pre_runs),
            },
            "detection": det,
            "regret": {
                "with_guardian": [r["regret"] for r in on],
                "without_guardian": [r["regret"] for r in off],
                "mean_with": mean_on,
                "mean_without": mean_off,
                "ratio_of_means": mean_on / mean_off if mean_off > 0 else math.nan,
                "no_change": base,
                "mean_no_change": mean_base,
                "excess_ratio": (mean_on - mean_base) / excess_off if excess_off > 0 else math.nan,
                "degraded_arm_quarantined": sum(r["tripped"] for r in on),
                "seeds": len(on),
            },
        }
    return per


def _mark(ok: bool, text: str) -> str:
    return f"[green]{text}[/]" if ok else f"[red]{text}[/]"


def _delay_cell(d: dict[str, Any]) -> str:
    if d["median"] is None:
        return _mark(False, f"– (missed {d['missed']})")
    text = f"{d['median']:.0f} / {d['p90']:.0f}"
    if d["missed"]:
        text += f" ({d['missed']} missed)"
    return _mark(d["median"] <= 150 and d["p90"] <= 150 and not d["missed"], text)


def families_table(per: dict[str, Any], plan: Plan) -> Table:
    """The one table of ``--families``."""
    table = Table(
        title=(
            f"Guardian across environment families ({plan.seeds} seeds each; stationary: "
            f"{', '.join(plan.policies)} × {plan.rounds:,} rounds; detection and regret: "
            f"default policy, change after {plan.warmup:,} rounds)"
        )
    )
    heads = (
        "family",
        "arms",
        "stationary decisions",
        "false quarantines",
        "per 100k",
        "by policy (" + "/".join(p[:3] for p in plan.policies) + ")",
        "cap trips per 100k",
        "pre-change q / decisions",
        "latency×2 delay med / p90",
        "validity −20pt delay med / p90",
        "regret with / without / no change",
        "ratio",
        "excess ratio",
    )
    for h in heads:
        table.add_column(h, justify="left" if h == "family" else "right")
    for name, row in per.items():
        st, det, rg, pre = row["stationary"], row["detection"], row["regret"], row["pre_change"]
        arms = row["arms"]
        table.add_row(
            name,
            f"{arms[0]}–{arms[-1]}" if len(arms) > 1 else str(arms[0]),
            f"{st['decisions']:,}",
            str(st["quarantines"]),
            _mark(st["per_100k"] <= 1.0, f"{st['per_100k']:.2f}"),
            "/".join(str(v) for v in st["by_policy"].values()),
            f"{st['cap_reached_per_100k']:.2f}",
            f"{pre['quarantines']} / {pre['decisions']:,}",
            _delay_cell(det["latency_x2"]),
            _delay_cell(det["validity_-20pt"]),
            f"{rg['mean_with']:.1f} / {rg['mean_without']:.1f} / {rg['mean_no_change']:.1f}",
            _mark(rg["ratio_of_means"] <= 0.5, f"{rg['ratio_of_means']:.2f}"),
            f"{rg['excess_ratio']:.2f}",
        )
    table.add_row(
        "goal",
        "",
        "≥ 300,000",
        "",
        "≤ 1",
        "",
        "",
        "",
        "≤ 150",
        "≤ 150",
        "",
        "≤ 0.50",
        "",
        style="dim",
    )
    return table


# ------------------------------------------------------------------------------- recovery
def recovery_run(task: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any], float]:
    """One (policy, seed) run of the ``degradation`` scenario: shares on the recovered backend."""
    from routewise.simulations import load_scenario, simulate

    t0 = time.perf_counter()
    _, policy, seed, rounds = task
    sc = load_scenario("degradation")
    res = simulate(sc, [policy], rounds=rounds, seeds=[seed], bins=max(1, rounds // 50))
    run = res.runs[policy][0]
    degrade = next(e for e in sc.events if e.kind == "degrade")
    recover = next(e for e in sc.events if e.kind == "recover")
    targets = set(degrade.targets)
    tgt = [i for i, a in enumerate(res.arms) if a in targets or a.split("/")[0] in targets]
    edges = np.asarray(run.bin_edges)
    counts, oracle = np.asarray(run.arm_counts), np.asarray(run.oracle_counts)

    def share(c: np.ndarray[Any, Any], lo: int, hi: int) -> float:
        sel = (edges[:-1] >= lo) & (edges[1:] <= hi)
        total = c[sel].sum()
        return float(c[sel][:, tgt].sum() / total) if total else math.nan

    d_at, r_at = degrade.round_in(rounds), recover.round_in(rounds)
    window = recovery_window(rounds)
    health = [e for e in run.guardian_events if e["arm"] in {res.arms[i] for i in tgt}]
    out = {
        "target_arms": [res.arms[i] for i in tgt],
        "degrade_round": d_at,
        "recover_round": r_at,
        "before": {
            "policy": share(counts, d_at - window, d_at),
            "oracle": share(oracle, d_at - window, d_at),
        },
        "last": {
            "policy": share(counts, rounds - window, rounds),
            "oracle": share(oracle, rounds - window, rounds),
        },
        "guardian_events_on_target": health,
        "regret": run.regret,
    }
    return task, out, time.perf_counter() - t0


def recovery_window(rounds: int) -> int:
    """The 5,000 rounds of the acceptance (of a 50k run): a tenth of a shorter run."""
    return min(5000, rounds // 10)


def recovery_summary(
    results: list[tuple[tuple[Any, ...], dict[str, Any], float]],
) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for policy in POLICIES:
        rows = [r for t, r, _ in sorted(results, key=lambda x: x[0][2]) if t[1] == policy]
        if not rows:
            continue
        last_p = [r["last"]["policy"] for r in rows]
        last_o = [r["last"]["oracle"] for r in rows]
        per[policy] = {
            "before_policy": float(np.mean([r["before"]["policy"] for r in rows])),
            "before_oracle": float(np.mean([r["before"]["oracle"] for r in rows])),
            "last_policy": float(np.mean(last_p)),
            "last_oracle": float(np.mean(last_o)),
            "ratio": float(np.mean(last_p) / np.mean(last_o)),
            "ratio_per_seed": [p / o for p, o in zip(last_p, last_o, strict=True)],
            "runs": rows,
        }
    return per


def recovery_table(per: dict[str, Any], seeds: int, rounds: int, window: int, target: str) -> Table:
    table = Table(
        title=(
            f"Return after recovery: share of decisions on {target} (all its arms), "
            f"'degradation' scenario, {rounds:,} rounds, {seeds} seeds"
        )
    )
    heads = (
        "policy",
        f"{window:,} before degradation: policy / oracle",
        f"last {window:,}: policy",
        "oracle",
        "ratio",
        "min ratio (seed)",
        "goal",
    )
    for h in heads:
        table.add_column(h, justify="left" if h == "policy" else "right")
    for policy, row in per.items():
        goal = policy == "default"
        ratio = f"{row['ratio']:.2f}"
        table.add_row(
            policy,
            f"{row['before_policy']:.3f} / {row['before_oracle']:.3f}",
            f"{row['last_policy']:.3f}",
            f"{row['last_oracle']:.3f}",
            _mark(row["ratio"] >= 0.8, ratio) if goal else ratio,
            f"{min(row['ratio_per_seed']):.2f}",
            "≥ 0.80" if goal else "(reported)",
        )
    return table
