"""Commands that read a store or act on its arms: ``policy``, ``status``,
``export-trace``, ``health``, ``events``, ``pin``, ``quarantine``, ``release``. Queries open
the store read-only (safe next to a running sidecar; ``--db`` may be a ``postgresql://`` URL)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routewise.cli.common import (
    STATE_STYLE,
    ConfigOption,
    DbOption,
    UrlOption,
    app,
    console,
    err_console,
    fmt,
    json_arg,
    open_existing,
    sidecar_client,
)
from routewise.errors import ConfigError

__all__ = [
    "events",
    "export_trace",
    "health",
    "pin",
    "policy",
    "quarantine",
    "release",
    "status",
]


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
    ctx = json_arg(context, "--context")
    if ctx is not None and not isinstance(ctx, dict):
        raise ConfigError("--context", f"must be a JSON object, got {type(ctx).__name__}")
    with open_existing(db, config) as ctl:
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
                fmt(r.expected_reward),
                fmt(r.uncertainty),
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
    with open_existing(db, config) as ctl:
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
                fmt(s["mean_reward"]),
                fmt(s["validity"]),
                fmt(s["latency_p50_ms"], ".1f"),
                fmt(s["latency_p95_ms"], ".1f"),
                fmt(s["latency_p99_ms"], ".1f"),
                fmt(cost_k, ".4f"),
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
    with open_existing(db, config) as ctl:
        if str(out) == "-":
            n = ctl.export_trace(sys.stdout, since=since)
        else:
            n = ctl.export_trace(out, since=since)
    err_console.print(f"wrote {n} trace lines")


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
        with sidecar_client(url) as client:
            states = client.health()
    else:
        with open_existing(db, config) as ctl:
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
        table.add_row(arm_id, f"[{STATE_STYLE.get(st, 'white')}]{st}[/]")
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
        with sidecar_client(url) as client:
            rows = [e if isinstance(e, dict) else e.to_dict() for e in client.events(limit=limit)]
    else:
        with open_existing(db, config) as ctl:
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
            f"[{STATE_STYLE.get(e['to'], 'white')}]{e['to']}[/]",
            e["reason"],
            e["source"],
            evidence,
        )
    console.print(table)


def _operator(action: str, arm: str, db: str | None, config: Path | None, url: str | None) -> None:
    if url is not None:
        with sidecar_client(url) as client:
            getattr(client, action)(arm)
            states = client.health()
    else:
        remote = f"ROUTEWISE_TOKEN=<secret> routewise {action} {shlex.quote(arm)} --url {{url}}"
        with open_existing(db, config, read_only=False, remote=remote) as ctl:
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
