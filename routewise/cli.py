"""The ``routewise`` command line: a thin adapter over the library.

Every command builds the core object and calls one method on it. Errors from the library
(:class:`~routewise.errors.RoutewiseError`) are printed as one line naming the field and the
reason, with exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from routewise.demo import command as demo_command
from routewise.errors import ConfigError, RoutewiseError, StateError

app = typer.Typer(
    name="routewise",
    help="Learn online which (backend, output mode) arm should serve each LLM request for "
    "structured output.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: typer's rich help shows a <bool> type for every flag (--help included)
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
)

# Piped or redirected output is not cut to 80 columns (rich's default without a terminal):
# tables keep whole arm ids; $COLUMNS still wins.
console = Console(
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200,
)
# Messages are not cut into lines (a command in one stays whole); the terminal wraps them.
err_console = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="SQLite state file (default: the config's 'db').")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (see routewise.config).")
]


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _open_existing(
    db: Path | None, config: Path | None, *, read_only: bool = True, remote: str = ""
) -> Any:
    """Open an existing store. Queries open it read-only (safe next to a running sidecar);
    operator actions open it for writing; while a sidecar holds the store, the refusal gives
    the command that sends the action to it (``remote``; ``{url}``: the sidecar's address)."""
    from routewise.config import load_settings
    from routewise.controller import Controller
    from routewise.state.lock import StoreInUse

    settings = load_settings(config, db=str(db) if db is not None else None)
    if settings.db is None:
        raise ConfigError("db", "no state file given (use --db PATH or set 'db' in the config)")
    if not Path(settings.db).is_file():
        raise ConfigError("db", f"{settings.db!r} does not exist")
    try:
        return Controller.from_settings(settings, read_only=read_only, log_events=False)
    except StoreInUse as exc:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{host}:{settings.port or 8787}"
        cmd = remote.replace("{url}", url)
        where = f"(if it does not listen on {url}, give its address)"
        raise StateError(f"{exc}\nTo send it to the sidecar {where}:\n  {cmd}") from None


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running sidecar to send the command to, e.g. http://127.0.0.1:8787 "
        "(token from ROUTEWISE_TOKEN).",
    ),
]


@contextlib.contextmanager
def _client(url: str) -> Iterator[Any]:
    """A client of the sidecar at ``url`` (token: $ROUTEWISE_TOKEN); an unreachable sidecar
    is a one-line error, not a traceback."""
    import httpx

    from routewise.client import Client

    try:
        with Client(url, token=os.environ.get("ROUTEWISE_TOKEN")) as client:
            yield client
    except httpx.TransportError as exc:
        raise ConfigError(
            "--url",
            f"cannot reach a sidecar at {url} ({exc or type(exc).__name__}): start one with "
            "`routewise serve` or give its address",
        ) from None


NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="Experiment name.")]
_STATE_STYLE = {"healthy": "green", "quarantined": "red", "probing": "yellow", "pinned": "cyan"}


@app.command()
def policy(
    db: DbOption = None,
    config: ConfigOption = None,
    context: Annotated[
        str | None,
        typer.Option("--context", help='Request context as JSON, e.g. \'{"task": "extraction"}\'.'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rank the arms by expected reward.

    For --context, or over the recent traffic mix without one."""
    ctx = _json_arg(context, "--context")
    if ctx is not None and not isinstance(ctx, dict):
        raise ConfigError("--context", f"must be a JSON object, got {type(ctx).__name__}")
    with _open_existing(db, config) as ctl:
        rows = ctl.best_policy(ctx)
        if as_json:
            console.print_json(json.dumps([r.to_dict() for r in rows]))
            return
        title = "Best policy " + (
            "for the given context" if ctx is not None else "over the recent traffic mix"
        )
        table = Table(title=f"{title} ({ctl.policy.name})")
        table.add_column("rank", justify="right")
        longest = max((len(r.arm.id) for r in rows), default=0)
        room = max(16, console.width - 61)  # what the four number columns leave
        table.add_column("arm (backend/mode)", overflow="fold", min_width=min(longest, room))
        table.add_column("expected reward", justify="right")
        table.add_column("± uncertainty", justify="right")
        table.add_column("feedbacks", justify="right")
        for i, r in enumerate(rows, 1):
            table.add_row(
                str(i),
                r.arm.id,
                _fmt(r.expected_reward),
                _fmt(r.uncertainty),
                str(r.n),
            )
        console.print(table)


@app.command()
def status(
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per-arm counts, reward, validity, latency and cost.

    Mean reward, validity rate, p50/p95/p99 latency and cost per 1,000 requests."""
    with _open_existing(db, config) as ctl:
        st = ctl.status()
        if as_json:
            console.print_json(json.dumps(st.to_dict()))
            return
        table = Table(
            title=f"routewise status — policy {st.policy}: {st.decisions} decisions, "
            f"{st.feedbacks} feedbacks, {st.pending} pending"
        )
        for col in (
            "arm",
            "decisions",
            "feedbacks",
            "mean reward",
            "validity",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "cost $/1k",
        ):
            table.add_column(
                col,
                justify="left" if col == "arm" else "right",
                overflow="fold" if col == "arm" else "ellipsis",
            )
        for arm_id, s in st.arms.items():
            cost_k = s["cost_usd_mean"] * 1000 if s["cost_usd_mean"] is not None else None
            table.add_row(
                arm_id,
                str(s["decisions"]),
                str(s["feedbacks"]),
                _fmt(s["mean_reward"]),
                _fmt(s["validity"]),
                _fmt(s["latency_p50_ms"], ".1f"),
                _fmt(s["latency_p95_ms"], ".1f"),
                _fmt(s["latency_p99_ms"], ".1f"),
                _fmt(cost_k, ".4f"),
            )
        console.print(table)


@app.command("export-trace")
def export_trace(
    out: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output JSON-Lines file ('-' for stdout).")
    ],
    db: DbOption = None,
    config: ConfigOption = None,
    since: Annotated[
        float | None, typer.Option(help="Only decisions with ts >= SINCE (unix seconds).")
    ] = None,
) -> None:
    """Export the decision/feedback trace as JSON Lines.

    One decision per line, with its feedback: the format `replay` reads."""
    with _open_existing(db, config) as ctl:
        if str(out) == "-":
            n = ctl.export_trace(sys.stdout, since=since)
        else:
            n = ctl.export_trace(out, since=since)
    err_console.print(f"wrote {n} trace lines")


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
        Path | None,
        typer.Option(
            "--db", help="SQLite state file (default: the config's 'db', else ./routewise.db)."
        ),
    ] = None,
    log_json: Annotated[
        bool | None,
        typer.Option(
            "--log-json/--log-console",
            help="Log format (default: JSON unless stdout is a terminal).",
        ),
    ] = None,
) -> None:
    """Run the HTTP sidecar (API docs at /docs).

    The Controller's verbs over HTTP: decide, feedback, policy, arms, trace, metrics.

    Set ROUTEWISE_TOKEN to require 'Authorization: Bearer <token>' on every endpoint but
    /healthz and /readyz. Operator actions (pin, quarantine, release, experiment changes) need
    it: a sidecar without a token refuses them (403). A new store with no arms configured
    starts with a demo arm set of provider names (which you must run yourself); configure
    'backends' in routewise.toml for real routing.
    """
    from routewise.server import serve as run_server

    run_server(config, host=host, port=port, db=db, log_json=log_json)


@app.command()
def health(
    db: DbOption = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print each arm's Guardian state.

    One of healthy, quarantined, probing or pinned."""
    if url is not None:
        with _client(url) as client:
            states = client.health()
    else:
        with _open_existing(db, config) as ctl:
            states = ctl.health()
    if as_json:
        console.print_json(json.dumps(states))
        return
    table = Table(title="Arm health")
    table.add_column("arm")
    table.add_column("state")
    for arm_id, st in states.items():
        if not isinstance(st, str):
            continue
        table.add_row(arm_id, f"[{_STATE_STYLE.get(st, 'white')}]{st}[/]")
    console.print(table)


@app.command()
def events(
    db: DbOption = None,
    config: ConfigOption = None,
    url: UrlOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the newest N events.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the health transitions, oldest first.

    The Guardian's and the operators', with their reason and evidence."""
    import datetime as dt

    if url is not None:
        with _client(url) as client:
            rows = [e if isinstance(e, dict) else e.to_dict() for e in client.events(limit=limit)]
    else:
        with _open_existing(db, config) as ctl:
            rows = [e.to_dict() for e in ctl.events(limit)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table(title=f"Health transitions ({len(rows)})")
    for col in ("time (UTC)", "arm", "from", "to", "reason", "source", "evidence"):
        table.add_column(col)
    for e in rows:
        when = dt.datetime.fromtimestamp(e["ts"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        evidence = ", ".join(f"{k}={v}" for k, v in e["evidence"].items())
        table.add_row(
            when,
            e["arm"],
            e["from"],
            f"[{_STATE_STYLE.get(e['to'], 'white')}]{e['to']}[/]",
            e["reason"],
            e["source"],
            evidence,
        )
    console.print(table)


def _operator(action: str, arm: str, db: Path | None, config: Path | None, url: str | None) -> None:
    if url is not None:
        with _client(url) as client:
            getattr(client, action)(arm)
            states = client.health()
    else:
        remote = f"ROUTEWISE_TOKEN=<secret> routewise {action} {shlex.quote(arm)} --url {{url}}"
        with _open_existing(db, config, read_only=False, remote=remote) as ctl:
            getattr(ctl, action)(arm)
            states = ctl.health()
    console.print(f"{arm}: {states.get(arm, '?')}")


ArmArgument = Annotated[
    str, typer.Argument(metavar="ARM", help="Arm id, e.g. 'openai:gpt-5.4/direct_emit'.")
]


@app.command()
def pin(
    arm: ArmArgument, db: DbOption = None, config: ConfigOption = None, url: UrlOption = None
) -> None:
    """Send all traffic to ARM until it is released."""
    _operator("pin", arm, db, config, url)


@app.command()
def quarantine(
    arm: ArmArgument, db: DbOption = None, config: ConfigOption = None, url: UrlOption = None
) -> None:
    """Exclude ARM from selection until it is released."""
    _operator("quarantine", arm, db, config, url)


@app.command()
def release(
    arm: ArmArgument, db: DbOption = None, config: ConfigOption = None, url: UrlOption = None
) -> None:
    """Return ARM to healthy (unpin or unquarantine)."""
    _operator("release", arm, db, config, url)


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


experiment_app = typer.Typer(
    help="A/B experiments between policies.\n\nCreate, start, read the status, stop, promote or abort."
)


app.command("demo")(demo_command)
app.add_typer(experiment_app, name="experiment")


def _json_arg(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(name, f"not valid JSON ({exc.msg} at char {exc.pos})") from None


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
    v = _json_arg(variants, "--variants")
    if not isinstance(v, dict):
        raise ConfigError("--variants", "must be a JSON object of variant name to policy spec")
    shares = _json_arg(split, "--split")
    body = {"name": name, "variants": v, **({"split": shares} if shares is not None else {})}
    with _open_existing(db, config, read_only=False, remote=_curl("", body)) as ctl:
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


def _lifecycle(action: str, name: str, db: Path | None, config: Path | None, *args: str) -> None:
    remote = _curl(f"/{name}/{action}", {"variant": args[0]} if args else None)
    with _open_existing(db, config, read_only=False, remote=remote) as ctl:
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
    with _open_existing(db, config) as ctl:
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
            _fmt(v.mean_reward, ".4f"),
            f"[{_fmt(v.ci_low, '.4f')}, {_fmt(v.ci_high, '.4f')}]",
            _fmt(v.validity),
            _fmt(v.p95_latency_ms, ".1f"),
            _fmt(v.cost, ".6f"),
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
            _fmt(cmp.diff, "+.4f"),
            f"[{_fmt(cmp.ci_low, '+.4f')}, {_fmt(cmp.ci_high, '+.4f')}]",
            _fmt(cmp.p_value, ".4f"),
            f"[{colour}]{cmp.verdict}[/]",
            _fmt(cmp.welch_p_value, ".4f"),
            ", ".join(bad) or "ok",
        )
    console.print(c)
    srm = "[red]SAMPLE RATIO MISMATCH[/]" if rep.srm else "ok"
    console.print(f"sample ratio check: p = {_fmt(rep.srm_p_value, '.4g')} — {srm}")
    if rep.stopped_by_guardrail:
        console.print(f"[red]auto-stopped by guardrail: {rep.stopped_by_guardrail}[/]")
    if plot is not None:
        console.print(f"plot written to {plot}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except RoutewiseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
