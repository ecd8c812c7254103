"""Commands that run something: ``serve`` (the sidecar), ``simulate``, ``replay``,
``demo`` and ``version``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from routewise.cli.common import ConfigOption, app, console, err_console
from routewise.demo import command as demo_command
from routewise.errors import ConfigError

__all__ = ["replay", "serve", "simulate", "version"]


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to bind (default 127.0.0.1: this machine only)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="TCP port (default 8787; 0 picks a free one).")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="SQLite state file or postgresql:// URL (default: the config's 'db', "
            "else ./routewise.db).",
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-console",
            help="Log format (default: JSON unless stdout is a terminal).",
        ),
    ] = None,
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Skip the integrity check (PRAGMA quick_check) of an existing SQLite store "
            "at startup; for very large stores (config: check_on_open = false).",
        ),
    ] = False,
) -> None:
    """Run the HTTP sidecar (API docs at /docs).

    The Controller's verbs over HTTP: decide, feedback, policy, arms, trace, metrics.

    Set ROUTEWISE_TOKEN to require 'Authorization: Bearer <token>' on every endpoint but
    /healthz and /readyz. Operator actions (pin, quarantine, release, experiment changes) need
    it: a sidecar without a token refuses them (403). A new store with no arms configured
    starts with a demo arm set of provider names (which you must run yourself); configure
    'backends' in routewise.toml for real routing.

    An existing store is checked first (PRAGMA quick_check, logged as store.checked): exit
    code 3 if it is corrupt or not a routewise store (2: any other refusal).
    """
    from routewise.server import serve as run_server

    run_server(
        config,
        host=host,
        port=port,
        db=db,
        log_json=log_json,
        check_on_open=False if no_check else None,
    )


@app.command()
def version() -> None:
    """Print the routewise version."""
    from routewise import __version__

    console.print(__version__)


_ScenarioOption = Annotated[
    str,
    typer.Option(
        "--scenario",
        "-s",
        help="Named scenario (stationary, degradation, outage, price-shock, mix-shift) or a .toml/.yaml file.",
    ),
]
_PoliciesOption = Annotated[
    str,
    typer.Option(
        "--policies",
        "-p",
        help="Comma-separated policy specs, e.g. squarecb,linucb:alpha=0.5,default.",
    ),
]


@app.command()
def simulate(
    scenario: _ScenarioOption = "stationary",
    policies: _PoliciesOption = "squarecb,linucb,lints,uniform",
    rounds: Annotated[
        int | None, typer.Option("--rounds", "-n", help="Rounds per run (default: the scenario's).")
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", help="Runs per policy (seeds SEED, SEED+1, …).")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="First seed.")] = 0,
    reward: Annotated[
        str | None,
        typer.Option("--reward", help="Reward preset (default: the scenario's, else balanced)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write results.json and PNG plots into this directory."),
    ] = None,
    from_trace: Annotated[
        Path | None,
        typer.Option(
            "--from-trace",
            help="Fit the arms' outcome models to this trace (JSONL or SQLite store).",
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on the first bad trace line.")
    ] = False,
    guardian: Annotated[
        bool, typer.Option("--guardian/--no-guardian", help="Run the Controller with its Guardian.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Simulate policies on a scenario: regret, tables, plots.

    Regret is exact, against the per-request oracle.

    The policies run through the real Controller (Guardian included) against synthetic
    backends; see routewise.simulations."""
    from routewise.simulations import TraceEnvironment, load_scenario, render
    from routewise.simulations import simulate as run_simulation

    if rounds is not None and rounds < 1:  # before any progress bar is drawn
        raise ConfigError("rounds", f"must be an integer >= 1, got {rounds!r}")
    if seeds < 1:
        raise ConfigError("seeds", f"must be an integer >= 1, got {seeds!r}")
    spec = load_scenario(scenario)
    env = TraceEnvironment.fit(from_trace, strict=strict) if from_trace is not None else None
    if env is not None:
        err_console.print(render.trace_fit_message(env), highlight=False)
    names = [p for p in policies.split(",") if p.strip()]
    total = (rounds if rounds is not None else spec.rounds) * seeds * len(names)
    with render.simulation_progress(err_console, total, show=not as_json) as tick:
        result = run_simulation(
            spec,
            names,
            rounds=rounds,
            seeds=seeds,
            seed=seed,
            reward=reward,
            environment=env,
            guardian=guardian,
            progress=tick,
        )
    if as_json:
        typer.echo(
            json.dumps({"summary": result.summary(), "baselines": result.baselines()}, indent=2)
        )
    else:
        console.print(render.simulation_table(result))
    if out is not None:
        paths = result.write(out)
        err_console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@app.command()
def replay(
    trace: Annotated[
        Path,
        typer.Argument(
            metavar="TRACE", help="Logged trace: JSON Lines or a routewise SQLite store."
        ),
    ],
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            "-p",
            help="Candidate (repeatable or comma-separated): a policy spec like squarecb or "
            "linucb:alpha=0.3 (optionally @reward_preset to learn from), or a JSON file {arm_id: probability}.",
        ),
    ],
    reward: Annotated[
        str | None,
        typer.Option(
            "--reward", help="Recompute rewards from the logged outcomes with this preset."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad line.")] = False,
    rejection: Annotated[
        bool,
        typer.Option(
            "--rejection",
            help="Also run Li et al. rejection replay (uniformly logged traces only).",
        ),
    ] = False,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")] = 1000,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the bootstrap and the policies.")
    ] = 0,
    switch_tau: Annotated[
        float, typer.Option("--switch-tau", help="Switch-DR: importance weights above this use DM.")
    ] = 100.0,
) -> None:
    """Estimate candidate policies on a logged trace.

    What each would have earned on the logged requests.

    Off-policy estimators: IPS, SNIPS, DM, DR and Switch-DR, with bootstrap intervals."""
    from routewise.simulations import replay as run_replay
    from routewise.simulations.render import replay_table

    candidates = [c.strip() for item in policy for c in item.split(",") if c.strip()]
    result = run_replay(
        trace,
        candidates,
        reward=reward,
        strict=strict,
        rejection=rejection,
        tau=switch_tau,
        n_boot=n_boot,
        seed=seed,
    )
    diag = result.diagnostics()
    if diag["bad"] or diag["skipped"]:
        first = (diag["errors"] + diag["skip_errors"])[:3]
        err_console.print(
            f"skipped {diag['bad'] + diag['skipped']} unusable line(s) of {diag['lines']} "
            f"(first: {'; '.join(first)}); use --strict to fail instead",
            highlight=False,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(replay_table(result))


app.command("demo")(demo_command)
