#!/usr/bin/env python
"""Replicated sidecars on PostgreSQL (issue 14): throughput, replication lag, quarantine
propagation, and learning through replicas.

Every sidecar is a real ``routewise serve`` subprocess on 127.0.0.1 (a free port, the 9-arm
demo set, the default policy, the JSON request log written to a file, durability as ``serve``
picks it: ``batch`` + group commit, so every acknowledgement is durable). A PostgreSQL
configuration gets a fresh database (``CREATE DATABASE rw_bench_<hex>`` on the server of
``--pg``, dropped after); its replicas all use it (``ROUTEWISE_DB=postgresql://…``). Sidecars
are stopped with SIGTERM and their exit codes checked. Load generators run on the same
machine: all processes (sidecars, PostgreSQL, wrk / the Python generator) share its cores.

a) **Throughput** — aggregate decide+feedback pairs/s and per-request p50/p99, for 1 replica
   on SQLite (the default ``routewise serve``), 1 replica on PostgreSQL and 3 replicas on
   PostgreSQL. Load: one ``wrk`` per replica (``--connections`` each, one thread), all started
   at once for the same duration, with the Lua pair script of ``benchmarks/sidecar.py``: each
   wrk sends both halves of a pair to *its own* replica (wrk's Lua only talks to its host; the
   cross-replica path is measured in b) and c) and tested in tests/test_replicas_subprocess.py).
   Percentiles are over every request of every wrk (their quantile functions are merged).
   After the run every replica must have learned the same number of feedbacks.
b) **Replication lag** at a fixed rate (``--rate``, default 1,000 pairs/s) over 3 replicas:
   Debian has no ``wrk2``, so a Python asyncio generator (raw HTTP/1.1 keep-alive connections)
   paces the pairs open-loop: pair ``i`` starts at ``i / rate``, decides on replica ``i % 3``
   and sends its feedback to replica ``(i + 1) % 3``. It measures the replicas, not itself, as
   long as it keeps the rate: the achieved rate and the start slip are reported. Lag is each
   replica's ``routewise_replication_apply_lag_seconds`` histogram (record written on any
   replica → applied on this one), differenced over the measured window; p50/p99 are
   interpolated within buckets (as Prometheus' ``histogram_quantile``), the max over replicas
   per quantile.
c) **Quarantine propagation** — ``--trials`` times: ``POST /v1/arms/{arm}/quarantine`` on
   replica A (the sidecars run with ``ROUTEWISE_TOKEN``), then poll ``GET /v1/health`` on B
   and C every 2 ms until both show the arm quarantined (time from sending the POST); then
   release it and wait the same way. No other load.
d) ``--learning``: a routing simulation through 1 Controller vs 3 in-process replicas
   round-robin (the code of tests/test_replicas_learning.py, which asserts the 10% bound).

Example::

    python benchmarks/replicas.py                      # a), b), c): 10 s runs after 3 s warm-up
    python benchmarks/replicas.py --quick --learning   # a smoke check of everything
    python benchmarks/replicas.py --only learning --json out.json

Goals: 3 replicas on PostgreSQL >= 1 replica on SQLite in aggregate pairs/s; replication lag
p99 <= 250 ms at 1,000 pairs/s; quarantine propagation p99 <= 1 s; learning through 3
replicas within 10% of one replica's regret.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.util
import json
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import environment
from sidecar import LUA as PAIRS_LUA

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
SECTIONS = ("throughput", "lag", "quarantine", "learning")

# wrk's done() of the pair script, plus its latency quantile function on a grid of
# QUANTILES points (wrk 4.1's Lua cannot read the histogram itself), so the latencies of
# several wrk processes can be merged (each point weighs requests / QUANTILES).
QUANTILES = 2000
LUA = (
    PAIRS_LUA
    + r"""
local pairs_done = done
function done(summary, latency, requests)
  pairs_done(summary, latency, requests)
  io.write(string.format("ROUTEWISE seconds=%.6f\n", summary.duration / 1e6))
  for i = 1, QUANTILES do
    io.write(string.format("QUANT %d\n", latency:percentile(100 * (i - 0.5) / QUANTILES)))
  end
end
""".replace("QUANTILES", str(QUANTILES))
)

CONTEXTS = [
    {"task": "extraction", "schema_depth": 3, "n_fields": 12, "input_tokens": 900},
    {"task": "extraction", "schema_depth": 5, "n_fields": 40, "input_tokens": 3100},
    {"task": "classification", "schema_depth": 1, "n_fields": 2, "input_tokens": 250},
    {"task": "classification", "schema_depth": 2, "n_fields": 4, "input_tokens": 600},
    {"task": "qa", "schema_depth": 2, "n_fields": 6, "input_tokens": 1500},
    {"task": "qa", "schema_depth": 4, "n_fields": 18, "input_tokens": 5200},
    {"task": "summarization", "schema_depth": 2, "n_fields": 5, "input_tokens": 8000},
    {"task": "summarization", "schema_depth": 3, "n_fields": 9, "input_tokens": 12000},
]


# ----------------------------------------------------------------------------- machine, db
def _pg_version(admin_url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        out = {}
        for key, stmt in (
            ("version", "SELECT version()"),
            ("synchronous_commit", "SHOW synchronous_commit"),
            ("max_connections", "SHOW max_connections"),
        ):
            row = conn.execute(stmt).fetchone()
            out[key] = str(row[0]) if row else "?"
        return out


def machine_info(admin_url: str) -> dict[str, Any]:
    info = environment()
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    info.update(
        cpu_model=cpu,
        postgresql=_pg_version(admin_url),
        wrk=(wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?",
    )
    return info


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database ``rw_bench_<hex>`` on ``admin_url``'s server, dropped afterwards."""
    import psycopg

    name = f"rw_bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ----------------------------------------------------------------------------- sidecars
def _get(url: str, timeout: float = 5.0, token: str | None = None) -> Any:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


@dataclass
class Sidecar:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    exit_code: int | None = None
    signalled: bool = False

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (once: drain, snapshot, close), then the exit code (-9 if it had to be
        killed)."""
        if self.proc.poll() is None and not self.signalled:
            self.proc.send_signal(signal.SIGTERM)
            self.signalled = True
        try:
            self.exit_code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.exit_code = -9
        return self.exit_code


def _launch(workdir: Path, name: str, db: str, token: str | None) -> Sidecar:
    exe = shutil.which("routewise") or str(Path(sys.executable).parent / "routewise")
    cmd = [exe, "serve", "--port", "0", "--log-json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
    if db.startswith("postgresql://"):
        env["ROUTEWISE_DB"] = db  # (a URL, not a path)
    else:
        cmd += ["--db", db]
    if token is not None:
        env["ROUTEWISE_TOKEN"] = token
    log_path = workdir / f"{name}.log"
    proc = subprocess.Popen(
        cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=workdir
    )
    return Sidecar(name, proc, log_path)


def _wait_ready(sc: Sidecar, deadline: float) -> None:
    while time.monotonic() < deadline:
        if sc.proc.poll() is not None:
            raise SystemExit(
                f"{sc.name} exited with {sc.proc.returncode}:\n{sc.log_path.read_text()[-4000:]}"
            )
        if not sc.url:
            for line in sc.log_path.read_text(errors="replace").splitlines():
                if '"serve.listening"' in line:
                    sc.url = json.loads(line)["url"]
        if sc.url:
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                _get(sc.url + "/readyz")
                return
        time.sleep(0.05)
    raise SystemExit(f"{sc.name} did not become ready:\n{sc.log_path.read_text()[-4000:]}")


def start_sidecars(
    workdir: Path, db: str, n: int, token: str | None = None, prefix: str = "replica"
) -> list[Sidecar]:
    """``n`` sidecars on ``db``, started at once (replicas of an empty database race to
    create its tables, as a real deployment's would)."""
    cars = [_launch(workdir, f"{prefix}{chr(ord('A') + i)}", db, token) for i in range(n)]
    deadline = time.monotonic() + 60
    try:
        for sc in cars:
            _wait_ready(sc, deadline)
    except BaseException:
        for sc in cars:
            sc.stop(10)
        raise
    return cars


def stop_all(cars: Sequence[Sidecar]) -> dict[str, int]:
    for sc in cars:  # signal all first: they drain in parallel
        if sc.proc.poll() is None:
            sc.proc.send_signal(signal.SIGTERM)
            sc.signalled = True
    return {sc.name: sc.stop() for sc in cars}


_METRIC = re.compile(r'^(routewise_replication_\w+?)(?:\{le="([^"]+)"\})? ([0-9.eE+-]+|NaN)$')


def replication_metrics(url: str) -> dict[str, Any]:
    """This replica's ``routewise_replication_*`` gauges and its apply-lag histogram
    (``buckets``: ``[(upper bound, cumulative count)]``, ``+Inf`` last)."""
    text = _get(url + "/metrics")
    out: dict[str, Any] = {"buckets": []}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        name, le, value = m.group(1), m.group(2), float(m.group(3))
        if name == "routewise_replication_apply_lag_seconds_bucket" and le is not None:
            out["buckets"].append((float(le), value))
        else:
            out[name.removeprefix("routewise_replication_")] = value
    return out


def wait_converged(cars: Sequence[Sidecar], timeout: float = 60.0) -> float:
    """Seconds until every replica applied the same sequence number, unchanged for 0.2 s.
    (Not ``head_seq``: a record dropped as a duplicate last leaves the head one past what
    can be applied.)"""
    t0 = time.monotonic()
    last: set[float] = set()
    stable_since = t0
    while time.monotonic() - t0 < timeout:
        applied = {replication_metrics(sc.url).get("applied_seq", -1.0) for sc in cars}
        if applied != last or len(applied) != 1:
            last, stable_since = applied, time.monotonic()
        elif time.monotonic() - stable_since >= 0.2:
            return stable_since - t0
        time.sleep(0.01)
    raise SystemExit(f"replicas did not converge in {timeout:g} s: applied {sorted(last)}")


# ----------------------------------------------------------------------------- CPU
_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _pg_backends(dbname: str | None) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving ``dbname`` (by process title)."""
    out: dict[int, float] = {}
    if dbname is None:
        return out
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ")
                if title.startswith(b"postgres: ") and f" {dbname} ".encode() in title:
                    out[int(d.name)] = _proc_cpu(int(d.name))
    return out


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = vals[3] + vals[4]
    return (sum(vals) - idle) / _TICK, sum(vals) / _TICK


class CpuMeter:
    """Cores used during a window: the sidecars, PostgreSQL's backends for their database,
    this process's children that exited in it (wrk), this process (the Python generator),
    and the rest of the machine (PostgreSQL's background processes, anything else)."""

    def __init__(self, pids: Sequence[int], dbname: str | None) -> None:
        self.pids, self.dbname = list(pids), dbname

    def __enter__(self) -> CpuMeter:
        self.t0 = time.monotonic()
        self.sc0 = sum(_proc_cpu(p) for p in self.pids)
        self.pg0 = _pg_backends(self.dbname)
        self.ch0 = _rusage(resource.RUSAGE_CHILDREN)
        self.me0 = _rusage(resource.RUSAGE_SELF)
        self.m0 = _machine()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        m1 = _machine()
        pg1 = _pg_backends(self.dbname)
        used = {
            "sidecars": sum(_proc_cpu(p) for p in self.pids) - self.sc0,
            "postgres": sum(v - self.pg0.get(pid, 0.0) for pid, v in pg1.items()),
            "wrk": _rusage(resource.RUSAGE_CHILDREN) - self.ch0,
            "generator": _rusage(resource.RUSAGE_SELF) - self.me0,
        }
        busy = m1[0] - self.m0[0]
        used["other"] = max(0.0, busy - sum(used.values()))
        self.cores = {k: v / wall for k, v in used.items()}
        self.cores["machine_busy"] = busy / wall


def _rusage(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _fmt_cores(c: dict[str, float]) -> str:
    parts = [f"{k} {c[k]:.2f}" for k in ("sidecars", "postgres", "wrk", "generator", "other")]
    return ", ".join(p for p in parts if not p.endswith(" 0.00")) + (
        f" (machine busy {c['machine_busy']:.2f} of {os.cpu_count()})"
    )


# ----------------------------------------------------------------------------- wrk
def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for key, val in re.findall(r"ROUTEWISE (\w+(?:\.\d)?)=([\d.]+)", text):
        res[key] = float(val)
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text)
    res["requests"] = int(m.group(1)) if m else 0
    if "seconds" not in res and m:
        res["seconds"] = _seconds(m.group(2), m.group(3))
    m = re.search(r"Socket errors: (.*)", text)
    res["socket_errors"] = sum(int(x) for x in re.findall(r"\d+", m.group(1))) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non2xx"] = int(m.group(1)) if m else 0
    res["quantiles"] = [int(us) for us in re.findall(r"^QUANT (\d+)$", text, re.M)]
    return res


def run_wrks(
    urls: Sequence[str], script: Path, connections: int, duration: float
) -> list[dict[str, Any]]:
    """One ``wrk -t1`` per URL, all at once, for ``duration`` seconds."""
    procs = [
        subprocess.Popen(
            [
                *("wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s"),
                *("-s", str(script), url),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=duration + 120)
        if p.returncode != 0:
            raise SystemExit(f"wrk failed ({p.returncode}):\n{stdout}\n{stderr}")
        out.append(parse_wrk(stdout))
    return out


def merged_percentile(runs: Sequence[dict[str, Any]], p: float) -> float:
    """The ``p``-th percentile (µs) of the requests of several wrk runs, from their quantile
    grids (each point stands for ``requests / QUANTILES`` requests)."""
    points = sorted(
        (us, r["requests"] / len(r["quantiles"])) for r in runs for us in r["quantiles"]
    )
    total = sum(w for _, w in points)
    if total == 0:
        return float("nan")
    run = 0.0
    for us, w in points:
        run += w
        if run >= p / 100.0 * total:
            return float(us)
    return float(points[-1][0])


# ----------------------------------------------------------------------------- a) throughput
def _arms_status(cars: Sequence[Sidecar]) -> list[dict[str, Any]]:
    return [_get(sc.url + "/v1/arms") for sc in cars]


def throughput_config(
    label: str, db: str | None, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One configuration: ``n`` sidecars on ``db`` (``None``: a new SQLite file), warm-up and
    measured wrk runs, convergence check, SIGTERM."""
    script = workdir / "pairs.lua"
    script.write_text(LUA)
    store = db if db is not None else str(workdir / f"{label.replace(' ', '_')}.db")
    cars = start_sidecars(workdir, store, n, prefix=f"{label.replace(' ', '_')}-")
    try:
        urls = [sc.url for sc in cars]
        acked = 0.0
        if args.warmup > 0:
            acked += sum(r.get("feedbacks", 0) for r in run_wrks(urls, script, args.c, args.warmup))
        dbname = db.rsplit("/", 1)[1] if db is not None else None
        with CpuMeter([sc.proc.pid for sc in cars], dbname) as meter:
            runs = run_wrks(urls, script, args.c, args.duration)
        acked += sum(r.get("feedbacks", 0) for r in runs)
        converge_s = wait_converged(cars) if db is not None else 0.0
        status = _arms_status(cars)
    finally:
        codes = stop_all(cars)
    return {
        "config": label,
        "replicas": n,
        "store": "sqlite" if db is None else "postgresql",
        "pairs_per_s": sum(r.get("feedbacks", 0) / r["seconds"] for r in runs),
        "requests_per_s": sum(r["requests"] / r["seconds"] for r in runs),
        "p50_ms": merged_percentile(runs, 50) / 1000,
        "p99_ms": merged_percentile(runs, 99) / 1000,
        "max_ms": max(r.get("max", 0.0) for r in runs) / 1000,
        "errors": sum(int(r.get("bad", 0)) + r["non2xx"] + r["socket_errors"] for r in runs),
        "acked_feedbacks": int(acked),
        "learned_feedbacks": [int(s["feedbacks"]) for s in status],
        "converge_s": converge_s,
        "exit_codes": codes,
        "cores": meter.cores,
        "wrk": [{k: v for k, v in r.items() if k != "quantiles"} for r in runs],
    }


def throughput(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    rows = [throughput_config("1 x SQLite", None, 1, args, workdir)]
    for n in (1, 3):
        with fresh_database(args.pg) as url:
            rows.append(throughput_config(f"{n} x PostgreSQL", url, n, args, workdir))
    return rows


def print_throughput(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\na) Throughput: decide+feedback pairs, one wrk per replica (-t1 -c{args.c}), all at "
        f"once, {args.duration:g} s after {args.warmup:g} s warm-up; each wrk sends both halves "
        "of a pair to its own replica.\n   All processes share the machine's "
        f"{os.cpu_count()} cores. Latency: per request (decide or feedback), all wrks merged."
    )
    head = (
        f"{'configuration':<17}{'pairs/s':>9}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>8}{'errors':>7}  learned feedbacks (acked)      exit codes"
    )
    print(head + "\n" + "-" * len(head))
    for r in rows:
        learned = "/".join(f"{x:,}" for x in r["learned_feedbacks"])
        learned = f"{learned} ({r['acked_feedbacks']:,})"
        print(
            f"{r['config']:<17}{r['pairs_per_s']:>9,.0f}{r['requests_per_s']:>9,.0f}"
            f"{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['max_ms']:>8.1f}{r['errors']:>7}  "
            f"{learned:<31}{' '.join(str(c) for c in r['exit_codes'].values())}"
        )
    print("cores used in the measured run (user + system CPU seconds / wall seconds):")
    for r in rows:
        print(f"  {r['config']:<15}{_fmt_cores(r['cores'])}")
    base = next(r for r in rows if r["config"] == "1 x SQLite")
    three = next(r for r in rows if r["config"] == "3 x PostgreSQL")
    ok = three["pairs_per_s"] >= base["pairs_per_s"]
    print(
        f"goal (3 x PostgreSQL >= 1 x SQLite in aggregate pairs/s): "
        f"{'met' if ok else 'NOT met'} ({three['pairs_per_s']:,.0f} vs {base['pairs_per_s']:,.0f}"
        f", x{three['pairs_per_s'] / base['pairs_per_s']:.2f})"
    )


# ----------------------------------------------------------------------------- b) lag
class Conn:
    """A minimal HTTP/1.1 keep-alive client connection (JSON bodies, Content-Length)."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""

    async def open(self) -> Conn:
        self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.w.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{self.auth}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        data = await self.r.readexactly(int(m.group(1))) if m else b""
        return int(head[9:12]), data

    def close(self) -> None:
        self.w.close()


class Pool:
    def __init__(self, conns: list[Conn]) -> None:
        self.free: asyncio.Queue[Conn] = asyncio.Queue()
        for c in conns:
            self.free.put_nowait(c)
        self.conns = conns

    @classmethod
    async def open(cls, port: int, size: int, token: str | None) -> Pool:
        return cls([await Conn(port, token).open() for _ in range(size)])

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            return await conn.call(method, path, body)
        finally:
            self.free.put_nowait(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()


@dataclass
class PairLog:
    """Per completed pair: when it was due (open-loop schedule), when its task started (the
    generator's own lateness), when its feedback was acknowledged."""

    due: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def _pair(i: int, pools: list[Pool], log: PairLog, due: float) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    n = len(pools)
    try:
        decide = json.dumps({"context": CONTEXTS[i % len(CONTEXTS)]}).encode()
        status, body = await pools[i % n].call("POST", "/v1/decide", decide)
        if status != 200:
            return log.error(f"decide {status}: {body[:200]!r}")
        d = json.loads(body)
        arm = d["arm"]["id"]
        outcome = {
            "valid": not ("ollama" in arm and i % 3 == 0),
            "latency_ms": 400.0 if "local_reconstructed" in arm else 900.0,
            "cost_usd": 0.0004,
        }
        fb = json.dumps({"decision_id": d["decision_id"], "outcome": outcome}).encode()
        status, body = await pools[(i + 1) % n].call("POST", "/v1/feedback", fb)
        if status != 200:
            return log.error(f"feedback {status}: {body[:200]!r}")
    except (OSError, asyncio.IncompleteReadError) as exc:
        return log.error(type(exc).__name__)
    log.due.append(due)
    log.started.append(started)
    log.finished.append(loop.time())


class Window:
    """The measured window: the replicas' metrics scraped and a :class:`CpuMeter` started at
    its start, both read again at its end."""

    def __init__(self, cars: Sequence[Sidecar], dbname: str, start: float, end: float) -> None:
        self.cars, self.start, self.end = cars, start, end
        self.meter = CpuMeter([sc.proc.pid for sc in cars], dbname)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.start - loop.time()))
        self.before = await self._scrape()
        await asyncio.to_thread(self.meter.__enter__)
        await asyncio.sleep(max(0.0, self.end - loop.time()))
        await asyncio.to_thread(self.meter.__exit__)
        self.after = await self._scrape()

    async def _scrape(self) -> list[dict[str, Any]]:
        urls = [sc.url for sc in self.cars]
        return list(
            await asyncio.gather(*(asyncio.to_thread(replication_metrics, u) for u in urls))
        )


async def paced_load(
    cars: Sequence[Sidecar], dbname: str, rate: float, warmup: float, duration: float
) -> dict[str, Any]:
    """Pairs at ``rate``/s for ``warmup + duration`` s, open loop (a pair is started when it
    is due, whether or not earlier ones finished); 64 connections per replica."""
    loop = asyncio.get_running_loop()
    pools = [await Pool.open(sc.port, 64, None) for sc in cars]
    log, tasks = PairLog(), set()
    t0 = loop.time() + 0.05
    window = Window(cars, dbname, t0 + warmup, t0 + warmup + duration)
    measuring = asyncio.create_task(window.run())
    total, i = int(rate * (warmup + duration)), 0
    while i < total:
        due = min(total, int((loop.time() - t0) * rate) + 1)
        while i < due:
            task = asyncio.create_task(_pair(i, pools, log, t0 + i / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.sleep(0.0005)
    await measuring
    drained = loop.time()
    while tasks:
        await asyncio.gather(*list(tasks))
    drain_s = loop.time() - drained
    for p in pools:
        p.close()
    w0, w1 = window.start, window.end
    slips = sorted(s - d for d, s in zip(log.due, log.started, strict=True) if w0 <= d < w1)
    open_loop = sorted(
        (f - d) * 1000 for d, f in zip(log.due, log.finished, strict=True) if w0 <= d < w1
    )
    return {
        "before": window.before,
        "after": window.after,
        "cores": window.meter.cores,
        "pairs": len(log.finished),
        "errors": log.errors,
        "completed_rate": sum(1 for f in log.finished if w0 <= f < w1) / duration,
        "slip_p99_ms": _pct(slips, 99) * 1000,
        "pair_p50_ms": _pct(open_loop, 50),
        "pair_p99_ms": _pct(open_loop, 99),
        "drain_s": drain_s,
    }


def _pct(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def bucket_quantile(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The ``q`` quantile of the observations between two scrapes of a cumulative histogram,
    linearly interpolated within its bucket (``inf`` past the last finite bound)."""
    delta = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    total = delta[-1][1]
    if total <= 0:
        return float("nan")
    target, lo, lo_count = q * total, 0.0, 0.0
    for bound, count in delta:
        if count >= target:
            if bound == float("inf"):
                return float("inf")
            frac = (target - lo_count) / (count - lo_count) if count > lo_count else 0.0
            return lo + frac * (bound - lo)
        lo, lo_count = bound, count
    return float("inf")


def _lag_per_replica(
    cars: Sequence[Sidecar], before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = []
    for sc, b, a in zip(cars, before, after, strict=True):
        n = a["buckets"][-1][1] - b["buckets"][-1][1]
        total = a["apply_lag_seconds_sum"] - b["apply_lag_seconds_sum"]
        rows.append(
            {
                "replica": sc.name,
                "observations": n,
                "p50_ms": bucket_quantile(b["buckets"], a["buckets"], 0.50) * 1000,
                "p99_ms": bucket_quantile(b["buckets"], a["buckets"], 0.99) * 1000,
                "mean_ms": total / n * 1000 if n else float("nan"),
            }
        )
    return rows


def lag_at(rate: float, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """3 replicas on a fresh database under ``rate`` pairs/s."""
    with fresh_database(args.pg) as url:
        cars = start_sidecars(workdir, url, 3, prefix=f"lag{rate:g}-")
        try:
            dbname = url.rsplit("/", 1)[1]
            load = asyncio.run(paced_load(cars, dbname, rate, args.warmup, args.duration))
            converge_s = wait_converged(cars)
            status = _arms_status(cars)
        finally:
            codes = stop_all(cars)
    per_replica = _lag_per_replica(cars, load.pop("before"), load.pop("after"))
    return {
        **load,
        "rate": rate,
        "duration": args.duration,
        "replicas": per_replica,
        "p50_ms": max(r["p50_ms"] for r in per_replica),
        "p99_ms": max(r["p99_ms"] for r in per_replica),
        "learned_feedbacks": [int(s["feedbacks"]) for s in status],
        "converge_s": converge_s,
        "exit_codes": codes,
    }


def lag(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    return [lag_at(rate, args, workdir) for rate in args.rate]


def print_lag(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nb) Replication lag over 3 replicas on PostgreSQL, {args.duration:g} s window after "
        f"{args.warmup:g} s warm-up. Load: a Python asyncio generator (no wrk2 in Debian), open "
        "loop, 64 connections per replica;\n   pair i decides on replica i % 3 and sends its "
        "feedback to (i + 1) % 3. Lag = record written on one replica → applied on this one "
        "(routewise_replication_apply_lag_seconds,\n   bucket-interpolated; 'max' = the worst "
        "replica per quantile). 'completed' = pairs acknowledged per second in the window; "
        "'pair' = due → feedback acknowledged."
    )
    head = (
        f"{'target/s':>8}{'completed/s':>12}{'replica':>9}{'records':>9}{'lag p50':>9}"
        f"{'lag p99':>9}{'mean ms':>9}"
    )
    print(head + "\n" + "-" * len(head))
    for r in runs:
        for k, x in enumerate(r["replicas"]):
            lead = f"{r['rate']:>8,.0f}{r['completed_rate']:>12,.0f}" if k == 0 else " " * 20
            print(
                f"{lead}{x['replica'].split('-')[-1]:>9}{x['observations']:>9,.0f}"
                f"{x['p50_ms']:>9.2f}{x['p99_ms']:>9.2f}{x['mean_ms']:>9.2f}"
            )
        print(f"{'':>20}{'max':>9}{'':>9}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    for r in runs:
        kept = r["completed_rate"] >= 0.98 * r["rate"]
        print(
            f"at {r['rate']:,.0f}/s: generator start slip p99 {r['slip_p99_ms']:.1f} ms; pair "
            f"p50/p99 {r['pair_p50_ms']:,.1f}/{r['pair_p99_ms']:,.1f} ms; "
            f"errors: {r['errors'] or 0}; "
            f"backlog drained {r['drain_s']:.1f} s after the window; every replica learned "
            f"{'/'.join(f'{x:,}' for x in r['learned_feedbacks'])} of {r['pairs']:,} feedbacks; "
            f"exit codes {' '.join(str(c) for c in r['exit_codes'].values())}\n   cores: "
            f"{_fmt_cores(r['cores'])}\n   goal (lag p99 <= 250 ms at {r['rate']:,.0f} pairs/s): "
            f"{'met' if r['p99_ms'] <= 250.0 else 'NOT met'}"
            f"{'' if kept else ' — but the replicas did NOT keep up with this rate'}"
        )


# ----------------------------------------------------------------------------- c) quarantine
class Client:
    """A blocking keep-alive JSON client (http.client) for the polling loop."""

    def __init__(self, url: str, token: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str) -> Any:
        self.conn.request(
            method, path, body=b"" if method == "POST" else None, headers=self.headers
        )
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"{method} {path}: {resp.status} {body[:300]!r}")
        return json.loads(body)


def _until(clients: Sequence[Client], arm: str, state: str, poll_s: float) -> float:
    """Poll ``GET /v1/health`` on every client every ``poll_s`` until each shows ``arm`` in
    ``state``; the perf_counter time the last one did (``inf`` after 10 s)."""
    pending, seen = set(range(len(clients))), 0.0
    start = next_poll = time.perf_counter()
    while pending:
        for k in sorted(pending):
            if clients[k].call("GET", "/v1/health")["arms"].get(arm) == state:
                seen = time.perf_counter()
                pending.discard(k)
        if not pending:
            break
        if time.perf_counter() - start > 10.0:
            return float("inf")
        next_poll += poll_s
        time.sleep(max(0.0, next_poll - time.perf_counter()))
    return seen


def quarantine(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    with fresh_database(args.pg) as url:
        cars = start_sidecars(workdir, url, 3, token=token, prefix="quarantine-")
        try:
            a, b, c = (Client(sc.url, token) for sc in cars)
            arm = sorted(a.call("GET", "/v1/health")["arms"])[0]
            path = f"/v1/arms/{arm}"
            to_quarantine, to_release, acks = [], [], []
            for _ in range(args.trials):
                t0 = time.perf_counter()
                assert a.call("POST", path + "/quarantine")["state"] == "quarantined"
                acks.append(time.perf_counter() - t0)
                to_quarantine.append(_until([b, c], arm, "quarantined", 0.002) - t0)
                t0 = time.perf_counter()
                assert a.call("POST", path + "/release")["state"] == "healthy"
                to_release.append(_until([b, c], arm, "healthy", 0.002) - t0)
        finally:
            codes = stop_all(cars)
    return {
        "arm": arm,
        "trials": args.trials,
        "quarantine_s": to_quarantine,
        "release_s": to_release,
        "ack_s": acks,
        "exit_codes": codes,
    }


def _summary_ms(values: Sequence[float]) -> dict[str, float]:
    s = sorted(values)
    return {f"p{p}": _pct_interp(s, p) * 1000 for p in (50, 90, 99)} | {"max": s[-1] * 1000}


def _pct_interp(s: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (numpy's default) of sorted values."""
    pos = p / 100 * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def print_quarantine(r: dict[str, Any]) -> None:
    print(
        f"\nc) Quarantine propagation: {r['trials']} trials of POST .../quarantine on replica A "
        f"({r['arm']}), then GET /v1/health on B and C every 2 ms until both show it; then the "
        "same for release.\n   Time from sending the POST until both show it; no other load."
    )
    head = f"{'':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(head + "\n" + "-" * len(head))
    for label, key in (
        ("quarantine → B and C", "quarantine_s"),
        ("release → B and C", "release_s"),
        ("(POST acknowledged)", "ack_s"),
    ):
        s = _summary_ms(r[key])
        print(f"{label:<22}{s['p50']:>9.1f}{s['p90']:>9.1f}{s['p99']:>9.1f}{s['max']:>9.1f}")
    ok = _summary_ms(r["quarantine_s"])["p99"] <= 1000.0
    print(
        f"exit codes {' '.join(str(c) for c in r['exit_codes'].values())}; "
        f"goal (quarantine p99 <= 1 s): {'met' if ok else 'NOT met'}"
    )


# ----------------------------------------------------------------------------- d) learning
def _learning_module() -> ModuleType:
    """tests/test_replicas_learning.py: the acceptance test's loop is the one measured here."""
    path = ROOT / "tests" / "test_replicas_learning.py"
    spec = importlib.util.spec_from_file_location("test_replicas_learning", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def learning(args: argparse.Namespace) -> list[dict[str, Any]]:
    from _common import quiet_logs

    quiet_logs()
    mod = _learning_module()
    rounds = args.rounds or (500 if args.quick else mod.ROUNDS)
    out = []
    for policy in args.policy or [mod.POLICY]:
        with contextlib.ExitStack() as stack:
            rows = mod.compare(
                lambda _seed: stack.enter_context(fresh_database(args.pg)),
                args.seeds,
                rounds,
                policy,
                args.reference_seeds,
            )
        table = [
            {
                "seed": r["seed"],
                "one": r["one"].regret,
                "reference": [x.regret for x in r["reference"]],
                "three": r["three"].regret,
                "three_s": r["three"].seconds,
                "behind_mean": r["three"].behind_mean,
                "behind_max": r["three"].behind_max,
            }
            for r in rows
        ]
        out.append({"scenario": mod.SCENARIO, "policy": policy, "rounds": rounds, "rows": table})
    return out


def print_learning(runs: list[dict[str, Any]]) -> None:
    r0 = runs[0]
    print(
        f"\nd) Learning through replicas: scenario {r0['scenario']!r}, Guardian off, "
        f"{r0['rounds']:,} rounds per seed. 'one' = one Controller (memory store), policy seeded "
        "with the seed; 'ref' = its mean over\n   policy seeds s, s+1000, … (min–max), on the "
        "same requests; 'three' = three in-process Controllers on one PostgreSQL database, "
        "decisions round-robin,\n   each feedback to the next replica; 'behind' = log records "
        "the deciding replica had not applied yet (mean, max)."
    )
    head = (
        f"{'policy':<8}{'seed':>5}{'one':>9}{'ref':>9}{'ref min–max':>15}{'three':>9}"
        f"{'3/one':>7}{'3/ref':>7}{'behind':>11}{'3: s':>7}"
    )
    print(head + "\n" + "-" * len(head))
    for r in runs:
        for x in r["rows"]:
            ref = sum(x["reference"]) / len(x["reference"])
            spread = f"{min(x['reference']):.0f}–{max(x['reference']):.0f}"
            print(
                f"{r['policy']:<8}{x['seed']:>5}{x['one']:>9.2f}{ref:>9.2f}{spread:>15}"
                f"{x['three']:>9.2f}{x['three'] / x['one']:>7.3f}{x['three'] / ref:>7.3f}"
                f"{x['behind_mean']:>7.2f}{x['behind_max']:>4}{x['three_s']:>7.1f}"
            )
        n = len(r["rows"])
        one = sum(x["one"] for x in r["rows"]) / n
        ref = sum(sum(x["reference"]) / len(x["reference"]) for x in r["rows"]) / n
        three = sum(x["three"] for x in r["rows"]) / n
        print(
            f"{r['policy']:<8}{'mean':>5}{one:>9.2f}{ref:>9.2f}{'':>15}{three:>9.2f}"
            f"{three / one:>7.3f}{three / ref:>7.3f}   goal (three <= 1.10 x ref): "
            f"{'met' if three <= 1.10 * ref else 'NOT met'}"
        )


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (default 10)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (default 3)")
    ap.add_argument("--quick", action="store_true", help="short runs: a smoke check")
    ap.add_argument("-c", type=int, default=16, help="wrk connections per replica (default 16)")
    ap.add_argument(
        "--rate",
        type=float,
        action="append",
        help="pairs/s for b) (repeatable; default 1000 and 500)",
    )
    ap.add_argument("--trials", type=int, default=50, help="quarantine trials (default 50)")
    ap.add_argument("--learning", action="store_true", help="also run d) the learning table")
    ap.add_argument("--rounds", type=int, default=None, help="d): rounds per seed (3000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="d): seeds")
    ap.add_argument(
        "--policy", action="append", help="d): policy (repeatable; default the test's, linucb)"
    )
    ap.add_argument(
        "--reference-seeds", type=int, default=8, help="d): one-replica policy seeds per seed"
    )
    ap.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    ap.add_argument("--pg", default=PG_ADMIN, help=f"admin database URL (default {PG_ADMIN})")
    ap.add_argument(
        "--wait-idle", type=float, default=0.0, help="wait up to this many s for an idle machine"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.trials = min(args.duration, 3.0), 1.0, min(args.trials, 10)
    args.rate = args.rate or [1000.0, 500.0]
    args.sections = args.only or [*SECTIONS[:3], *(["learning"] if args.learning else [])]
    return args


def _busy_before(wait_s: float) -> float:
    """Cores busy over 2 s; with ``wait_s``, sampled until below 0.3 (at most that long)."""
    deadline = time.monotonic() + wait_s
    while True:
        b0, t0 = _machine()
        time.sleep(2.0)
        b1, t1 = _machine()
        busy = (b1 - b0) / (t1 - t0) * (os.cpu_count() or 1)
        if busy <= 0.3 or time.monotonic() >= deadline:
            return busy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None and "throughput" in args.sections:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    info = machine_info(args.pg)
    print(
        f"{info['cpu_count']} cores ({info['cpu_model']}), Python {info['python']}, "
        f"{info['postgresql']['version'].split(' on ')[0]} (synchronous_commit="
        f"{info['postgresql']['synchronous_commit']}), {info['wrk'].split(' [')[0]}, "
        f"routewise {info['versions']['routewise']}"
    )
    info["busy_before"] = _busy_before(args.wait_idle)
    print(
        f"machine busy before the runs (other processes): {info['busy_before']:.2f} of "
        f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}"
        + (
            "  — WARNING: not idle, the numbers below are disturbed"
            if info["busy_before"] > 0.3
            else ""
        )
    )
    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="routewise-replicas-") as tmp:
        workdir = Path(tmp)
        if "throughput" in args.sections:
            results["throughput"] = throughput(args, workdir)
            print_throughput(results["throughput"], args)
        if "lag" in args.sections:
            results["lag"] = lag(args, workdir)
            print_lag(results["lag"], args)
        if "quarantine" in args.sections:
            results["quarantine"] = quarantine(args, workdir)
            print_quarantine(results["quarantine"])
    if "learning" in args.sections:
        results["learning"] = learning(args)
        print_learning(results["learning"])
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    runs = [*results.get("throughput", []), *results.get("lag", [])]
    if "quarantine" in results:
        runs.append(results["quarantine"])
    codes = [c for r in runs for c in r["exit_codes"].values()]
    return 1 if any(codes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
