"""``routewise migrate --from routewise.db --to postgresql://…``: copy an SQLite store into
PostgreSQL, where several sidecar replicas can share it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from routewise.cli.common import EXIT_STORE_UNUSABLE, app, console, err_console, is_db_url
from routewise.errors import ConfigError, RoutewiseError

__all__ = ["migrate"]


@app.command()
def migrate(
    source: Annotated[
        Path,
        typer.Option("--from", metavar="PATH", help="The SQLite store to copy (a state file)."),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="An empty PostgreSQL store: postgresql://user:password@host:5432/db.",
        ),
    ],
) -> None:
    """Copy an SQLite store into PostgreSQL.

    For replicated sidecars. Meta, decisions, feedback, events and snapshots keep their sequence numbers; the target
    must be empty (its tables are created); the counts are verified after the copy. Stop
    the sidecar that writes the SQLite store first. Exit code 1 when refused, 3 when the
    source is corrupt or not a routewise store."""
    try:
        if not is_db_url(target):
            raise ConfigError("--to", "expected a postgresql:// (or postgres://) URL")
        from routewise.state.pgmigrate import migrate_sqlite_to_postgres

        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, transient=False) as bar:
            task = bar.add_task("copying (seq)", total=None)

            def tick(seq: int, top: int) -> None:
                bar.update(task, completed=seq, total=max(top, seq, 1))

            report = migrate_sqlite_to_postgres(source, target, progress=tick)
    except RoutewiseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        from routewise.state.integrity import NotAStore, StoreCorrupt

        unusable = isinstance(exc, NotAStore | StoreCorrupt)
        raise typer.Exit(EXIT_STORE_UNUSABLE if unusable else 1) from None
    table = Table(title=f"migrated {report.source} → {report.target} in {report.seconds:.1f} s")
    table.add_column("copied")
    table.add_column("rows", justify="right")
    for name, n in (
        ("decisions", report.decisions),
        ("feedback", report.feedback),
        ("events", report.events),
        ("snapshots", report.snapshots),
        ("meta", int(report.meta)),
    ):
        table.add_row(name, f"{n:,}")
    console.print(table)
    console.print(f"verified: row counts match; the log continues after seq {report.max_seq:,}")
