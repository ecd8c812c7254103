"""Rich tables and the progress bar of the ``simulate`` and ``replay`` commands (kept out of
the CLI adapter).

Examples
--------
>>> from routewise.simulations import load_scenario, simulate
>>> table = simulation_table(simulate(load_scenario("stationary"), ["uniform"], rounds=50))
>>> [c.header for c in table.columns][:3]
['policy', 'reward', 'regret ± sd']
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from routewise.simulations.ope import ESTIMATORS, Estimate
from routewise.simulations.replay_result import ReplayResult
from routewise.simulations.results import SimulationResult
from routewise.simulations.runner import Progress as ProgressCallback
from routewise.simulations.trace_env import TraceEnvironment

__all__ = ["replay_table", "simulation_progress", "simulation_table", "trace_fit_message"]

_LABELS = {"ips": "IPS", "snips": "SNIPS", "dm": "DM", "dr": "DR", "switch_dr": "Switch-DR"}


@contextmanager
def simulation_progress(
    console: Console, total: int, *, show: bool = True
) -> Iterator[ProgressCallback]:
    """A progress bar on ``console`` over ``total`` rounds (drawn only if ``show``), yielding
    the ``progress`` callback of :func:`~routewise.simulations.simulate`.

    Examples
    --------
    >>> from rich.console import Console
    >>> from routewise.simulations import load_scenario, simulate
    >>> with simulation_progress(Console(quiet=True), 100) as tick:
    ...     res = simulate(load_scenario("stationary"), ["uniform"], rounds=100, progress=tick)
    >>> res.rounds
    100
    """
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show,
    ) as bar:
        task = bar.add_task("simulating", total=total)

        def tick(policy: str, run_seed: int, done: int) -> None:
            bar.update(task, advance=done, description=f"{policy} (seed {run_seed})")

        yield tick


def _pm(m: dict[str, float], spec: str) -> str:
    return f"{m['mean']:{spec}} ± {m['sd']:{spec}}"


def simulation_table(result: SimulationResult) -> Table:
    """One row per policy, then the exact reference rows (oracle, best fixed arm, uniform)."""
    seeds = len(result.seeds)
    base = result.baselines()
    table = Table(
        title=(
            f"scenario {result.scenario.name!r}: {result.rounds:,} rounds × {seeds} seed(s), "
            f"reward {result.reward.name}" + ("" if result.guardian else ", Guardian off")
        ),
        caption=(
            "regret: exact cumulative regret vs the per-request oracle (± sd over seeds); "
            f"best fixed arm in hindsight: {base['best_fixed_arm']}"
        ),
    )
    for col in (
        "policy",
        "reward",
        "regret ± sd",
        "valid",
        "p95 ms",
        "$/1k req",
        "quarant.",
        "rounds/s",
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in result.summary():
        table.add_row(
            row["policy"],
            f"{row['mean_reward']['mean']:.4f}",
            _pm(row["regret"], ",.1f"),
            f"{row['validity_rate']['mean']:.1%}",
            f"{row['latency_p95_ms']['mean']:,.0f}",
            f"{row['cost_per_1k_usd']['mean']:.3f}",
            f"{row['quarantines']['mean']:.1f}",
            f"{row['rounds_per_s']['mean']:,.0f}",
        )
    table.add_section()
    blank = [""] * 5
    table.add_row("oracle", f"{base['oracle_mean_reward']['mean']:.4f}", "0", *blank, style="dim")
    table.add_row("best fixed arm", "", _pm(base["best_fixed_regret"], ",.1f"), *blank, style="dim")
    table.add_row(
        "uniform (expected)", "", _pm(base["uniform_expected_regret"], ",.1f"), *blank, style="dim"
    )
    return table


def trace_fit_message(env: TraceEnvironment) -> str:
    """One line on what a trace-fitted environment was fitted from (and what was skipped)."""
    fit = env.summary
    msg = (
        f"fitted {len(env.arms)} arms to {fit['events']:,} logged outcomes "
        f"({fit['contexts_kept']:,} contexts kept for resampling)"
    )
    skipped = fit["bad_lines"]
    if skipped:
        msg += f"; skipped {skipped} bad line(s) (first: {fit['errors'][0]}); use --strict to fail instead"
    if fit["pending_lines"] or fit["without_outcome"]:
        msg += f"; {fit['pending_lines'] + fit['without_outcome']} line(s) without an outcome"
    return msg


def _est(e: Estimate) -> str:
    if not math.isfinite(e.value):
        return "–"
    return f"{e.value:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}]"


def replay_table(result: ReplayResult) -> Table:
    """One row per candidate: every estimator with its 95% interval, and the ESS."""
    rejection = any(c.rejection is not None for c in result.candidates)
    table = Table(
        title=(
            f"off-policy estimates on {result.n:,} logged decisions (reward: {result.reward}); "
            f"logging policy's own mean reward {_est(result.logged)}"
        ),
        caption="value [95% bootstrap interval]; ESS = effective sample size of the importance weights",
    )
    table.add_column("candidate")
    for k in ESTIMATORS:
        table.add_column(_LABELS[k], justify="right")
    table.add_column("ESS", justify="right")
    if rejection:
        table.add_column("replay (Li et al.)", justify="right")
        table.add_column("accepted", justify="right")
    for c in result.candidates:
        cells = [c.name, *[_est(c.estimates[k]) for k in ESTIMATORS], f"{c.ess:,.0f}"]
        if rejection:
            if c.rejection is None:
                cells += ["–", "–"]
            else:
                cells += [_est(c.rejection.estimate), f"{c.rejection.accepted:,}"]
        table.add_row(*cells)
    return table
