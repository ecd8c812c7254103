"""Running the sidecar: ``routewise serve`` (:func:`serve`), its logging and its socket."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from routewise.config import RoutewiseSettings, load_settings
from routewise.controller import Controller
from routewise.controller.notify import WebhookNotifier
from routewise.errors import ConfigError
from routewise.server.app import create_app
from routewise.types import Arm, make_arms

__all__ = [
    "DEFAULT_DB",
    "DEMO_BACKENDS",
    "DRAIN_TIMEOUT_S",
    "WEBHOOK_DRAIN_S",
    "close_webhooks",
    "configure_logging",
    "open_webhooks",
    "serve",
]

DEMO_BACKENDS: tuple[str, ...] = (
    "openai:gpt-5.4",
    "google_genai:gemini-2.5-flash-lite",
    "ollama:devstral-2",
)
"""Backends of the demo arm set (× the three output modes) that ``routewise serve`` uses when
it creates a new store and no arms are configured."""

DEFAULT_DB = "routewise.db"
"""State file ``routewise serve`` uses when neither ``--db`` nor the config names one."""

DRAIN_TIMEOUT_S = 10
"""On SIGTERM/SIGINT, how long requests in flight may take to finish; the sidecar then answers
what still runs (``408`` a request still waiting for its body, else ``503``) and exits."""

WEBHOOK_DRAIN_S = 5.0
"""On shutdown, after the final snapshot, how long the webhooks may take to deliver what is
still queued (all of them together); what is left is dropped and counted."""


class _BatchedWriter:
    """A text stream for JSON log lines that writes them out every ``interval`` seconds from a
    daemon thread (and on :meth:`close`) instead of one ``write`` syscall per line, which costs
    ~10% of the sidecar's throughput. A ``kill -9`` loses at most the last ``interval`` of log
    lines (never state: that is in the store)."""

    def __init__(self, stream: Any, interval: float = 0.05) -> None:
        self._stream = stream
        self._interval = interval
        self._buf: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routewise-log-writer", daemon=True)
        self._thread.start()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf.append(text)
        return len(text)

    def flush(self) -> None:
        """structlog flushes after every line: deferred to the writer thread."""

    def isatty(self) -> bool:
        return False

    def drain(self) -> None:
        with self._lock:
            buf, self._buf = self._buf, []
        if buf:
            self._stream.write("".join(buf))
            self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.drain()


def configure_logging(
    json_lines: bool | None = None, *, stream: Any = None, batched: bool = False
) -> _BatchedWriter | None:
    """Configure structlog: JSON lines (``json_lines=True``, or when ``stream`` is not a TTY)
    or console rendering, written to ``stream`` (default stdout) at INFO and above.

    With ``batched=True`` JSON lines are written by a background thread every 50 ms; the
    returned writer must then be closed at exit (``routewise serve`` does)."""
    out = stream if stream is not None else sys.stdout
    if json_lines is None:
        json_lines = not (hasattr(out, "isatty") and out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    writer = _BatchedWriter(out) if batched and json_lines else None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(
            file=cast(TextIO, writer) if writer is not None else out
        ),
        cache_logger_on_first_use=True,
    )
    return writer


def _open_controller(settings: RoutewiseSettings) -> tuple[Controller, list[Arm] | None]:
    """Build the controller; a new store with no arms configured gets the demo arm set."""
    try:
        return Controller.from_settings(settings), None
    except ConfigError as exc:
        if exc.field != "arms" or settings.arm_list() is not None:
            raise
    demo = make_arms(DEMO_BACKENDS)
    ctl = Controller.from_settings(settings.model_copy(update={"arms": [a.id for a in demo]}))
    return ctl, demo


def open_webhooks(ctl: Controller, settings: RoutewiseSettings) -> list[WebhookNotifier]:
    """A notifier per ``[[webhooks]]`` table, subscribed to ``ctl``."""
    hooks = [WebhookNotifier.from_settings(w) for w in settings.webhooks]
    for hook in hooks:
        ctl.subscribe(hook)
    return hooks


def close_webhooks(hooks: list[WebhookNotifier], timeout_s: float = WEBHOOK_DRAIN_S) -> None:
    """Close ``hooks``, flushing their queues for at most ``timeout_s`` seconds in all."""
    deadline = time.monotonic() + timeout_s
    for hook in hooks:
        hook.close(max(0.0, deadline - time.monotonic()))


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError("host", f"cannot resolve {host!r} ({exc.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)  # connections queue from now on, before uvicorn starts accepting
    except OSError as exc:
        sock.close()
        raise ConfigError("port", f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.set_inheritable(True)
    return sock


def serve(
    config: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    db: str | Path | None = None,
    log_json: bool | None = None,
    check_on_open: bool | None = None,
) -> None:
    """Run the sidecar until SIGTERM/SIGINT (``routewise serve``).

    Settings precedence: arguments > config file > ``ROUTEWISE_*`` environment > defaults.
    Unless ``durability`` is configured, the store runs in ``"batch"`` mode: the app's group
    commit (one acklog line per event-loop turn) makes every acknowledgement durable, and the
    rows reach the tables in batches. With no ``db`` anywhere the state lives in ``routewise.db`` in the
    working directory; a new store with no arms configured starts with the demo arm set
    (:data:`DEMO_BACKENDS` × every output mode). On SIGTERM/SIGINT the server stops accepting,
    finishes in-flight requests (for at most :data:`DRAIN_TIMEOUT_S`; a request body must
    arrive within ``body_timeout_s`` anyway), then the controller snapshots its learned state
    and closes the store. An existing SQLite store is checked first (``PRAGMA quick_check``,
    unless ``check_on_open`` is false; logged as ``store.checked`` with its seconds): a
    damaged one, or a file that is not a routewise store, raises ``StoreCorrupt`` /
    ``NotAStore`` (``StateError``) before anything listens (``routewise serve`` exits 3).
    """
    settings = load_settings(
        config,
        host=host,
        port=port,
        db=str(db) if db is not None else None,
        log_json=log_json,
        check_on_open=check_on_open,
    )
    if settings.db is None:
        settings = settings.model_copy(update={"db": DEFAULT_DB})
    if "durability" not in settings.model_fields_set:
        # Acknowledgements are durable in every mode (the app's group commit: store.sync());
        # "batch" writes one acklog line per event-loop turn, shared by its requests
        # (benchmarks/durability.py: cheaper than a line per feedback beyond ~8 per turn).
        settings = settings.model_copy(update={"durability": "batch"})
    writer = configure_logging(settings.log_json, batched=True)
    try:
        _serve(settings)
    finally:
        if writer is not None:
            writer.close()


def _serve(settings: RoutewiseSettings) -> None:
    log = structlog.get_logger("routewise.server")
    ctl, demo = _open_controller(settings)
    hooks = open_webhooks(ctl, settings)
    checked = getattr(ctl.store, "check_seconds", None)
    if checked is not None:
        db_name = str(getattr(ctl.store, "path", settings.db))
        log.info("store.checked", db=db_name, check="quick_check", seconds=round(checked, 4))
    elif not settings.check_on_open:
        log.info("store.check_skipped", db=str(getattr(ctl.store, "path", settings.db)))
    original = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        app = create_app(
            ctl,
            token=settings.token,
            max_lag_s=settings.max_lag_s,
            body_timeout_s=settings.body_timeout_s,
        )
        sock = _bind(settings.host, settings.port)
        bound_host, bound_port = sock.getsockname()[:2]
        if demo is not None:
            log.warning(
                "serve.demo_arms",
                message=f"new store {str(getattr(ctl.store, 'path', settings.db))!r} and no arms configured: using the demo arm set "
                f"({', '.join(DEMO_BACKENDS)} x every output mode); configure 'backends' or 'arms' "
                "in routewise.toml for real routing",
                arms=[a.id for a in demo],
            )
        uv = _uvicorn_server(app)
        # From here a SIGTERM/SIGINT asks the server to stop: before uvicorn installs its own
        # handlers (inside run) the request is recorded and startup returns at once; after
        # run, uvicorn re-raises the signal that stopped it, which lands here harmlessly.
        for sig in original:
            signal.signal(sig, _stop(uv))
        # Everything built so far (modules, app, learned state) lives for the whole run: move it
        # out of the collector's view, so full collections stay short (no 50-100 ms pauses).
        gc.collect()
        gc.freeze()
        log.info(
            "serve.listening",
            url=f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}",
            host=bound_host,
            port=bound_port,
            db=str(getattr(ctl.store, "path", settings.db)),  # a URL's password masked
            policy=ctl.policy.name,
            arms=len(ctl.arms),
            durability=getattr(ctl.store, "durability", None),
            auth="bearer" if settings.token is not None else "none",
            webhooks=[hook.name for hook in hooks],
        )
        try:
            uv.run(sockets=[sock])
        finally:
            sock.close()
    finally:
        # a second SIGTERM/SIGINT while the final snapshot is written must not cut it short
        # (orchestrators and impatient operators repeat the signal): ignored until closed
        for sig in original:
            signal.signal(sig, signal.SIG_IGN)
        try:
            ctl.close()
        finally:
            close_webhooks(hooks)
            for sig, handler in original.items():
                if handler is not None:
                    signal.signal(sig, handler)
        log.info("serve.stopped", db=str(getattr(ctl.store, "path", settings.db)), snapshot=True)


def _uvicorn_server(app: Any) -> Any:
    """The uvicorn server for ``app``, its protocol and event loop imported now (not after
    ``gc.freeze()``), with what the hot path would import lazily preloaded."""
    import uvicorn

    uv_config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=DRAIN_TIMEOUT_S,
        lifespan="on",
    )
    uv_config.load()
    _preload()
    return uvicorn.Server(uv_config)


def _stop(uv: Any) -> Callable[[int, object], None]:
    """A signal handler that asks ``uv`` to exit (uvicorn checks the flag at startup and in
    its main loop, so a signal that arrives before it runs is not lost)."""

    def handler(signum: int, frame: object) -> None:
        uv.should_exit = True

    return handler


def _preload() -> None:
    """Import what the hot path would import lazily (a first import in a request stalls
    every request in flight, and lands after ``gc.freeze()``)."""
    for name in ("scipy.linalg",):  # ridge-based policies refresh their inverse with it
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
