"""Store maintenance: ``routewise check`` (verify a store offline) and ``routewise backup``
(a consistent copy while a sidecar runs). Both are read-only on the store and take no writer
lock, so they are safe next to a running sidecar."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from routewise.cli.common import ConfigOption, DbOption, app, console, is_db_url
from routewise.errors import ConfigError, RoutewiseError

__all__ = ["backup", "check"]

# the parts of the learned state a replay of the log rebuilds exactly, random generators left
# out (decisions draw from them; a replay learns from the logged decisions without drawing)
_REPLAYED = ("policy", "featurizer", "stats", "transitions")
_CONTEXTS = 20  # contexts of the last decisions before the snapshot ranked by both


@dataclass(slots=True)
class Result:
    """One line of the report: the check, whether it passed (``None``: not applicable),
    and what it found."""

    check: str
    ok: bool | None
    detail: str


def _canonical(value: Any) -> str:
    """``value`` as canonical JSON, without its random generators' states."""
    from routewise.state.base import json_default

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "rng"}
        if isinstance(v, list | tuple):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(value), sort_keys=True, default=json_default)


def _sqlite_checks(path: str) -> Iterator[Result]:
    """The file: a routewise store, SQLite's full integrity check, the acklog."""
    from routewise.state.integrity import acklog_summary, integrity_problems, verify_existing

    real = os.path.realpath(path)
    conn = sqlite3.connect(f"file:{real}?mode=ro", uri=True)
    try:
        verify_existing(conn, path, quick_check=False, read_only=True)
        size = os.path.getsize(real)
        problems = integrity_problems(conn, full=True)
        if problems:
            shown = "; ".join(problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            yield Result("sqlite integrity", False, f"PRAGMA integrity_check: {shown}{more}")
            return
        yield Result("sqlite integrity", True, f"PRAGMA integrity_check: ok ({size:,} bytes)")
        top = int(
            conn.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM decisions), 0), "
                "coalesce((SELECT max(seq) FROM feedback), 0), "
                "coalesce((SELECT max(seq) FROM events), 0))"
            ).fetchone()[0]
        )
    finally:
        conn.close()
    ack = acklog_summary(real + ".acklog", top)
    if not ack.exists:
        yield Result("acklog", True, "none (a cleanly closed store)")
        return
    torn = f"{ack.bad} torn" + (
        " (the last: an interrupted write, never acknowledged)" if ack.ok and ack.bad else ""
    )
    detail = (
        f"{ack.lines} line(s), {torn}; {ack.pending} row(s) not in the tables yet "
        f"({ack.decisions} decisions, {ack.feedback} feedback, {ack.events} events past seq "
        f"{top}: a running writer commits them, a crashed one's next open recovers them)"
    )
    if not ack.ok:
        detail = f"a bad line before an intact one: an acknowledged record is unreadable; {detail}"
    yield Result("acklog", ack.ok, detail)


def _replay_check(store: Any, settings: Any) -> Result:
    """Replaying the log from the start (snapshots hidden) up to the latest snapshot's
    ``seq`` gives the state that snapshot restores."""
    from routewise.controller import Controller
    from routewise.state.prefix import LogPrefix

    snap = store.latest_snapshot()
    if snap is None:
        return Result("replay = snapshot", None, "no snapshot yet (a restart replays the log)")
    seq = snap[0]
    kw: dict[str, Any] = {"read_only": True, "log_events": False}
    with (
        Controller.from_settings(settings, store=LogPrefix(store, seq), **kw) as restored,
        Controller.from_settings(
            settings, store=LogPrefix(store, seq, snapshots=False), **kw
        ) as replayed,
    ):
        a, b = restored.learned_state(), replayed.learned_state()
        differ = [k for k in _REPLAYED if _canonical(a.get(k)) != _canonical(b.get(k))]
        recent = LogPrefix(store, seq).recent_decisions(_CONTEXTS)
        contexts: list[dict[str, Any] | None] = [None, *(d.context for d in recent)]
        worst = 0.0
        for ctx in contexts:
            ra = {r.arm.id: r.expected_reward for r in restored.best_policy(ctx)}
            rb = {r.arm.id: r.expected_reward for r in replayed.best_policy(ctx)}
            if ra.keys() != rb.keys():
                worst = float("inf")
                break
            worst = max([worst, *(abs(ra[k] - rb[k]) for k in ra)])
    n = replayed.status().feedbacks
    if not differ and worst == 0.0:
        return Result(
            "replay = snapshot",
            True,
            f"replaying seq 1..{seq} ({n:,} feedbacks) gives the snapshot's {', '.join(_REPLAYED)} "
            f"exactly; best_policy agrees on {len(contexts)} contexts",
        )
    return Result(
        "replay = snapshot",
        False,
        f"replaying seq 1..{seq} differs from the snapshot at seq {seq}: "
        f"{', '.join(differ) or 'no state part'} differ; best_policy differs by up to "
        f"{worst:.3g} over {len(contexts)} contexts",
    )


def _store_checks(db: str, settings: Any) -> Iterator[Result]:
    """Open the store read-only (no writer lock) and compare replay with the snapshot."""
    from routewise.controller.setup import open_store

    store = open_store(db, "feedback", True, integrity_check=False)  # checked above
    try:
        if is_db_url(db):
            yield Result("schema", True, "a routewise PostgreSQL store of a supported version")
        snap = store.latest_snapshot()
        yield Result(
            "snapshot",
            True,
            "none yet"
            if snap is None
            else f"latest at seq {snap[0]:,}; the log reaches seq {store.max_seq():,}",
        )
        yield _replay_check(store, settings)
    finally:
        store.close()


def _run_checks(db: str, settings: Any) -> list[Result]:
    results: list[Result] = []
    steps = [] if is_db_url(db) else [_sqlite_checks(db)]
    steps.append(_store_checks(db, settings))
    for step in steps:
        try:
            for r in step:
                results.append(r)
                if r.ok is False and r.check == "sqlite integrity":
                    return results  # a damaged file: reading it further means nothing
        except (RoutewiseError, sqlite3.Error) as exc:
            results.append(Result("store", False, str(exc)))
            return results
    return results


@app.command()
def check(
    db: DbOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Verify a store offline: integrity, acklog, replay.

    SQLite's full PRAGMA integrity_check; the acknowledgement log (torn lines, rows the
    tables lack); and that replaying the log from the start reproduces the latest snapshot's
    learned state. Read-only: safe next to a running sidecar (give its --config, so the
    replay runs its Guardian settings). A PostgreSQL URL gets the schema and replay checks.
    Exit code 0 when every check passes, 1 otherwise."""
    from routewise.config import load_settings

    settings = load_settings(config, db=db)
    if settings.db is None:
        raise ConfigError("db", "no store given (use --db PATH or --db postgresql://…)")
    if not is_db_url(settings.db) and not Path(settings.db).is_file():
        raise ConfigError("db", f"{settings.db!r} does not exist")
    results = _run_checks(settings.db, settings)
    passed = all(r.ok is not False for r in results)
    if as_json:
        rows = [{"check": r.check, "ok": r.ok, "detail": r.detail} for r in results]
        console.print_json(json.dumps({"ok": passed, "checks": rows}))
    else:
        name = "(PostgreSQL)" if is_db_url(settings.db) else settings.db  # no password shown
        table = Table(title=f"routewise check {escape(name)}: {'ok' if passed else 'FAILED'}")
        table.add_column("check")
        table.add_column("result")
        table.add_column("detail", overflow="fold")
        for r in results:
            mark = "[green]pass[/]" if r.ok else "[red]FAIL[/]" if r.ok is False else "–"
            table.add_row(r.check, mark, escape(r.detail))
        console.print(table)
    raise typer.Exit(0 if passed else 1)


@app.command()
def backup(
    out: Annotated[Path, typer.Option("--out", "-o", metavar="PATH", help="The copy to write.")],
    db: DbOption = None,
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Copy a store consistently, even while a sidecar writes it.

    SQLite's online backup API from a read-only connection (no writer lock), plus the
    acknowledged records still only in the acklog: the copy holds every record acknowledged
    before the backup started. Written atomically; an existing --out needs --force."""
    from routewise.config import load_settings
    from routewise.state.backup import backup_sqlite

    settings = load_settings(config, db=db)
    if settings.db is None:
        raise ConfigError("db", "no store given (use --db PATH)")
    if is_db_url(settings.db):
        raise ConfigError("--db", "backup copies an SQLite store; back up PostgreSQL with pg_dump")
    report = backup_sqlite(settings.db, out, force=force)
    console.print(
        f"backed up {report.source} → {report.target}: {report.decisions:,} decisions, "
        f"{report.feedback:,} feedback, {report.events:,} events, {report.snapshots:,} "
        f"snapshots up to seq {report.max_seq:,} ({report.from_acklog:,} rows from the "
        f"acklog); {report.bytes:,} bytes in {report.seconds:.2f} s",
        highlight=False,
    )
