"""The ``routewise`` command line: a thin adapter over the library.

Every command builds the core object and calls one method on it. Errors from the library
(:class:`~routewise.errors.RoutewiseError`) are printed as one line naming the field and the
reason, with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from routewise.errors import ConfigError, RoutewiseError

app = typer.Typer(
    name="routewise",
    help="Learn online which (backend, output mode) arm should serve each structured-output LLM request.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

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


def _open_existing(db: Path | None, config: Path | None, *, read_only: bool = True) -> Any:
    """Open an existing store. Queries open it read-only (safe next to a running sidecar);
    operator actions open it for writing (refused while a sidecar holds it: use --url)."""
    from routewise.config import load_settings

    settings = load_settings(config, db=str(db) if db is not None else None)
    if settings.db is None:
        raise ConfigError("db", "no state file given (use --db PATH or set 'db' in the config)")
    if not Path(settings.db).is_file():
        raise ConfigError("db", f"{settings.db!r} does not exist")
    return settings.build_controller(read_only=read_only, log_events=False)


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running sidecar to send the command to, e.g. http://127.0.0.1:8787 "
        "(token from ROUTEWISE_TOKEN).",
    ),
]


def _client(url: str) -> Any:
    import os

    from routewise.client import Client

    return Client(url, token=os.environ.get("ROUTEWISE_TOKEN"))


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
    """Print the arms ranked by expected reward (for CONTEXT, or the recent traffic mix)."""
    ctx: dict[str, Any] | None = None
    if context is not None:
        try:
            ctx = json.loads(context)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "--context", f"not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        if not isinstance(ctx, dict):
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
        table.add_column("arm")
        table.add_column("backend")
        table.add_column("mode")
        table.add_column("expected reward", justify="right")
        table.add_column("± uncertainty", justify="right")
        table.add_column("feedbacks", justify="right")
        for i, r in enumerate(rows, 1):
            table.add_row(
                str(i),
                r.arm.id,
                r.arm.backend,
                r.arm.mode.value,
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
    """Print per-arm counts, mean reward, validity, latency percentiles and cost."""
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
            table.add_column(col, justify="left" if col == "arm" else "right")
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
    out: Annotated[Path, typer.Argument(help="Output JSON-Lines file ('-' for stdout).")],
    db: DbOption = None,
    config: ConfigOption = None,
    since: Annotated[
        float | None, typer.Option(help="Only decisions with ts >= SINCE (unix seconds).")
    ] = None,
) -> None:
    """Export the decision/feedback trace as JSON Lines (the format `replay` reads)."""
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
    """Run the HTTP sidecar (decide, feedback, policy, arms, trace, metrics; docs at /docs).

    Set ROUTEWISE_TOKEN to require 'Authorization: Bearer <token>' on every endpoint but
    /healthz and /readyz; operator actions (pin, quarantine, release) always need it. A new
    store with no arms configured starts with a demo arm set.
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
    """Print each arm's Guardian state (healthy, quarantined, probing, pinned)."""
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
    """Print the Guardian's and operators' health transitions, oldest first."""
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
        with _open_existing(db, config, read_only=False) as ctl:
            getattr(ctl, action)(arm)
            states = ctl.health()
    console.print(f"{arm}: {states.get(arm, '?')}")


ArmArgument = Annotated[str, typer.Argument(help="Arm id, e.g. 'openai:gpt-5.4/direct_emit'.")]


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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except RoutewiseError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
