"""What the commands share: the typer app, the consoles, the common options, opening a
store (a file or a ``postgresql://`` URL) and reaching a sidecar."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from routewise.errors import ConfigError, RoutewiseError, StateError

__all__ = [
    "EXIT_REFUSED",
    "EXIT_STORE_UNUSABLE",
    "STATE_STYLE",
    "ConfigOption",
    "DbOption",
    "NameArgument",
    "UrlOption",
    "app",
    "console",
    "err_console",
    "fmt",
    "is_db_url",
    "json_arg",
    "main",
    "open_existing",
    "sidecar_client",
]

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
    str | None,
    typer.Option(
        "--db",
        help="SQLite state file or postgresql:// URL (default: the config's 'db').",
    ),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (see routewise.config).")
]


def fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def open_existing(
    db: str | None, config: Path | None, *, read_only: bool = True, remote: str = ""
) -> Any:
    """Open an existing store. Queries open it read-only (safe next to a running sidecar);
    operator actions open it for writing; while a sidecar holds the store, the refusal gives
    the command that sends the action to it (``remote``; ``{url}``: the sidecar's address)."""
    from routewise.config import load_settings
    from routewise.controller import Controller
    from routewise.state.lock import StoreInUse

    settings = load_settings(config, db=db)
    if settings.db is None:
        raise ConfigError(
            "db", "no store given (use --db PATH or --db postgresql://…, or set 'db' in the config)"
        )
    if not is_db_url(settings.db) and not Path(settings.db).is_file():
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
def sidecar_client(url: str) -> Iterator[Any]:
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
STATE_STYLE = {"healthy": "green", "quarantined": "red", "probing": "yellow", "pinned": "cyan"}


def json_arg(value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(name, f"not valid JSON ({exc.msg} at char {exc.pos})") from None


EXIT_REFUSED = 2
"""Exit code of a command that a library error refused (a bad option, a store in use…)."""
EXIT_STORE_UNUSABLE = 3
"""Exit code when the store is corrupt or is not a routewise store (``StoreCorrupt``,
``NotAStore``; ``routewise serve`` included)."""


def main() -> None:
    """Console-script entry point: a library error is one line on stderr and exit code
    :data:`EXIT_REFUSED` (:data:`EXIT_STORE_UNUSABLE` for an unusable store); so is an SQLite
    error that escapes while a store is read (damage ``quick_check`` could not see)."""
    import sqlite3

    try:
        app()
    except RoutewiseError as exc:
        from routewise.state.integrity import NotAStore, StoreCorrupt

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        unusable = isinstance(exc, StoreCorrupt | NotAStore)
        raise SystemExit(EXIT_STORE_UNUSABLE if unusable else EXIT_REFUSED) from None
    except sqlite3.DatabaseError as exc:
        err_console.print(
            f"[bold red]error:[/] store: SQLite error while reading it ({escape(str(exc))}); "
            "inspect it with `routewise check --db PATH`",
            highlight=False,
        )
        locked = isinstance(exc, sqlite3.OperationalError)  # busy, locked, I/O: not damage
        raise SystemExit(EXIT_REFUSED if locked else EXIT_STORE_UNUSABLE) from None


def is_db_url(db: str | Path | None) -> bool:
    """Whether ``db`` names a PostgreSQL store (``postgresql://`` or ``postgres://``).

    >>> is_db_url("postgresql://rw@127.0.0.1/rw"), is_db_url("routewise.db")
    (True, False)
    """
    return isinstance(db, str) and db.lower().startswith(("postgresql://", "postgres://"))
