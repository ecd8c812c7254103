"""``routewise experiment …``: A/B experiments between policies."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from routewise.cli.common import (
    ConfigOption,
    DbOption,
    NameArgument,
    app,
    console,
    fmt,
    json_arg,
    open_existing,
)
from routewise.errors import ConfigError

__all__ = ["experiment_app"]

experiment_app = typer.Typer(
    help="A/B experiments between policies.\n\nCreate, start, read the status, stop, promote or abort."
)

app.add_typer(experiment_app, name="experiment")


@experiment_app.command("create")
def experiment_create(
    name: NameArgument,
    variants: Annotated[
        str,
        typer.Option(
            "--variants",
            help='JSON: {"control": {"policy": "squarecb"}, "candidate": {"policy": "linucb", '
            '"reward": "low_latency"}} — the first is the control.',
        ),
    ],
    split: Annotated[
        str | None,
        typer.Option("--split", help='JSON: {"control": 0.5, "candidate": 0.5} (default: equal).'),
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a draft experiment."""
    v = json_arg(variants, "--variants")
    if not isinstance(v, dict):
        raise ConfigError("--variants", "must be a JSON object of variant name to policy spec")
    shares = json_arg(split, "--split")
    body = {"name": name, "variants": v, **({"split": shares} if shares is not None else {})}
    with open_existing(db, config, read_only=False, remote=_curl("", body)) as ctl:
        spec = ctl.create_experiment(name, v, shares)
    console.print(
        f"experiment {spec.name!r} created (draft): variants {', '.join(spec.variants)}; control {spec.control!r}"
    )


def _curl(path: str, body: dict[str, Any] | None = None) -> str:
    """The sidecar request of an experiment command (``{url}``: the sidecar's address)."""
    data = (
        f" -H 'content-type: application/json' -d {shlex.quote(json.dumps(body))}" if body else ""
    )
    return f"curl -X POST {{url}}/v1/experiments{path} -H 'Authorization: Bearer <secret>'{data}"


def _lifecycle(action: str, name: str, db: str | None, config: Path | None, *args: str) -> None:
    remote = _curl(f"/{name}/{action}", {"variant": args[0]} if args else None)
    with open_existing(db, config, read_only=False, remote=remote) as ctl:
        spec = getattr(ctl, f"{action}_experiment")(name, *args)
    console.print(
        f"experiment {spec.name!r}: {spec.status}"
        + (f" (winner {spec.winner!r})" if spec.winner else "")
    )


@experiment_app.command("start")
def experiment_start(name: NameArgument, db: DbOption = None, config: ConfigOption = None) -> None:
    """Start routing traffic to the variants."""
    _lifecycle("start", name, db, config)


@experiment_app.command("stop")
def experiment_stop(name: NameArgument, db: DbOption = None, config: ConfigOption = None) -> None:
    """Stop assigning traffic (the statistics stay).

    Then read the status, promote a variant or abort."""
    _lifecycle("stop", name, db, config)


@experiment_app.command("promote")
def experiment_promote(
    name: NameArgument,
    variant: Annotated[str, typer.Argument(metavar="VARIANT", help="The winning variant.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Make VARIANT the default (policy, reward, arms).

    Its policy keeps what it learned."""
    _lifecycle("promote", name, db, config, variant)


@experiment_app.command("abort")
def experiment_abort(name: NameArgument, db: DbOption = None, config: ConfigOption = None) -> None:
    """End the experiment without changing the default policy."""
    _lifecycle("abort", name, db, config)


@experiment_app.command("sample-size")
def experiment_sample_size(
    mde: Annotated[
        float, typer.Option("--mde", help="Smallest reward difference worth detecting.")
    ],
    sd: Annotated[
        float, typer.Option("--sd", help="Standard deviation of the per-request reward.")
    ],
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
    power: Annotated[
        float, typer.Option("--power", help="Probability of detecting the effect.")
    ] = 0.8,
    ratio: Annotated[
        float, typer.Option("--ratio", help="Candidate / control traffic ratio.")
    ] = 1.0,
) -> None:
    """Fixed-horizon sample size per variant.

    The always-valid test needs somewhat more."""
    from routewise.controller.experiments import sample_size

    n = sample_size(mde, sd, alpha=alpha, power=power, ratio=ratio)
    console.print(
        f"control: {n:,} requests, candidate: {math.ceil(ratio * n):,} requests "
        f"(mde {mde}, sd {sd}, alpha {alpha}, power {power})"
    )


@experiment_app.command("status")
def experiment_status(
    name: NameArgument,
    db: DbOption = None,
    config: ConfigOption = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Write a PNG of the reward difference and its confidence sequence."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Per-variant statistics and comparisons vs the control.

    The comparisons are always valid (confidence sequences): read them at any time."""
    with open_existing(db, config) as ctl:
        rep = ctl.experiment_status(name)
        if plot is not None:
            ctl.plot_experiment(name, plot)
    if as_json:
        console.print_json(json.dumps(rep.to_dict()))
        return
    t = Table(title=f"experiment {rep.name} — {rep.status}; control {rep.control}")
    for col in (
        "variant",
        "n",
        "assigned",
        "mean reward",
        "95% CS",
        "validity",
        "p95 ms",
        "cost $/req",
    ):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for vname, v in rep.variants.items():
        t.add_row(
            vname,
            str(v.n),
            str(v.assignments),
            fmt(v.mean_reward, ".4f"),
            f"[{fmt(v.ci_low, '.4f')}, {fmt(v.ci_high, '.4f')}]",
            fmt(v.validity),
            fmt(v.p95_latency_ms, ".1f"),
            fmt(v.cost, ".6f"),
        )
    console.print(t)
    c = Table(title="comparisons vs control (always-valid; Welch t-test as a fixed-horizon view)")
    for col in (
        "variant",
        "diff",
        "95% CS",
        "p (always valid)",
        "verdict",
        "Welch p",
        "guardrails",
    ):
        c.add_column(
            col, justify="left" if col in ("variant", "verdict", "guardrails") else "right"
        )
    for vname, cmp in rep.comparisons.items():
        colour = {"better": "green", "worse": "red"}.get(cmp.verdict, "yellow")
        bad = [k for k, v in cmp.guardrails.items() if v]
        c.add_row(
            vname,
            fmt(cmp.diff, "+.4f"),
            f"[{fmt(cmp.ci_low, '+.4f')}, {fmt(cmp.ci_high, '+.4f')}]",
            fmt(cmp.p_value, ".4f"),
            f"[{colour}]{cmp.verdict}[/]",
            fmt(cmp.welch_p_value, ".4f"),
            ", ".join(bad) or "ok",
        )
    console.print(c)
    srm = "[red]SAMPLE RATIO MISMATCH[/]" if rep.srm else "ok"
    console.print(f"sample ratio check: p = {fmt(rep.srm_p_value, '.4g')} — {srm}")
    if rep.stopped_by_guardrail:
        console.print(f"[red]auto-stopped by guardrail: {rep.stopped_by_guardrail}[/]")
    if plot is not None:
        console.print(f"plot written to {plot}")
