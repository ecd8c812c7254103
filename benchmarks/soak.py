#!/usr/bin/env python
"""Soak: a real ``routewise serve`` under mixed, partly hostile traffic for a long time.

Does memory stay bounded (issue 13)? Setup: ``routewise serve`` runs as a subprocess on
127.0.0.1 (a free port) with a fresh SQLite store in a temporary directory, the default
settings and a bearer token (``ROUTEWISE_TOKEN``, so operator endpoints can be exercised; every
request below sends it). For ``--duration`` seconds it gets, at once:

* **normal pairs** (most of the load): ``wrk`` (``apt-get install wrk``) at ``--connections``
  connections (default 8) with a Lua script sending decide + feedback pairs, as
  ``benchmarks/sidecar.py``;
* **decide-only** traffic: a second ``wrk`` (4 connections, paced with Lua's ``delay()``)
  sending decides that never get feedback, at most at a rate that brings the pending
  decisions to ``max_pending`` (100,000) after a quarter of the run (at least 20/s, at most
  500/s: 222/s for 30 minutes; a saturated server gives it less) — past it the oldest leave
  memory, counted as ``max_pending`` hits;
* **hostile** contexts, ~10 requests/s from a Python thread (httpx), in turn: 20 new random
  keys (expect 200; past ``max_feature_keys`` ignored), random 1,000-character string values
  (200; high cardinality: past ``max_dim`` no column), a 20,000-element array (4xx: nested
  values are refused), a body nested 10,000 deep (400), 300 keys (422: ``max_context_keys``),
  a 2,000-character value (422: ``max_value_chars``), invalid UTF-8 (400) and a 1.1 MiB body
  (413);
* **readers and an operator**, from another thread: every 2 s one of ``GET /v1/policy``,
  ``/v1/arms``, ``/v1/health``, ``/v1/events``, ``/v1/experiments``; every 15 s
  ``/v1/trace?since=`` (the last 15 s), and the whole trace at a third and two thirds of the
  run (at most every 10 min), streamed and discarded; every 30 s a quarantine or a pin of an
  arm, released 10 s later; experiments created, started, stopped and aborted in a cycle.

Every ``--sample`` seconds (default 10) it samples the server's RSS (``VmRSS``) and peak
(``VmHWM``) from ``/proc/<pid>/status``, its open file descriptors (``/proc/<pid>/fd``), the
sizes of the database, its WAL and the acklog, the latency of decide + feedback pairs timed by
a probe thread every 50 ms on its own connection (p50/p99/max over the interval; apart from
wrk, so it is the latency a well-behaved client sees), requests/s (the delta of
``routewise_http_requests_total`` in ``/metrics``), the pending decisions and
``routewise_bound_hits_total`` by bound.

**Plateau** (the verdict): a least-squares line through the RSS samples of the last third of
the run; RSS has plateaued when the line's rise over that third is less than 5% of its value
at the start of the third (for a 30-minute run: under ~7 MB in the last 10 minutes of a
~150 MB process, i.e. less than ~45 MB/hour). The fitted slope is also printed in MB/hour.
The pending decisions grow by design until they reach ``max_pending`` (≈ 1.3 KB each at the
default ``max_dim``): the run is sized so that this happens before the last third; a run too
short for it (``--quick``) says so, and its verdict then reflects that growth.

Output: a PNG with four panels over time (RSS; file descriptors; database / WAL / acklog
size; probe latency, with requests/s) and a JSON of every sample plus the totals, written to
``benchmarks/out/soak-<timestamp>.{png,json}`` (or ``--out DIR``); a table of the samples at
1/6, 1/2 and the end of the run (5, 15 and 30 minutes for ``--duration 1800``); the answers
by kind and status; the verdict. Linux only (``/proc``).

Example::

    python benchmarks/soak.py --duration 1800          # the issue-13 soak: 30 minutes
    python benchmarks/soak.py --quick                  # 2 minutes, a sample every 5 s
    python benchmarks/soak.py --duration 600 --connections 16 --out /tmp/soak --keep

Exit status: 0 when RSS plateaued, the server stayed up and never answered 5xx; 1 otherwise;
2 when ``wrk`` or ``/proc`` is missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from _common import proc_status

from routewise.controller.bounds import BOUNDS, DEFAULT_MAX_PENDING

PLATEAU_PCT = 5.0  # the last third's fitted RSS rise, in % of its start, must stay below this
PROBE_INTERVAL_S = 0.050
HOSTILE_INTERVAL_S = 0.100
DECIDE_ONLY_CONNS = 4
BODY_LIMIT = 1 << 20  # the sidecar's default max_body_bytes
OUT_DIR = Path(__file__).resolve().parent / "out"
NORMAL_CONTEXT = {"task": "qa", "schema_depth": 2, "n_fields": 6, "input_tokens": 1500}

LUA = r"""
local contexts = {
  '{"task":"extraction","schema_depth":3,"n_fields":12,"input_tokens":900,"language":"zh"}',
  '{"task":"extraction","schema_depth":5,"n_fields":40,"input_tokens":3100,"language":"en"}',
  '{"task":"classification","schema_depth":1,"n_fields":2,"input_tokens":250,"language":"en"}',
  '{"task":"classification","schema_depth":2,"n_fields":4,"input_tokens":600,"language":"de"}',
  '{"task":"qa","schema_depth":2,"n_fields":6,"input_tokens":1500,"language":"en"}',
  '{"task":"qa","schema_depth":4,"n_fields":18,"input_tokens":5200,"language":"ja"}',
  '{"task":"summarization","schema_depth":2,"n_fields":5,"input_tokens":8000,"language":"en"}',
  '{"task":"summarization","schema_depth":3,"n_fields":9,"input_tokens":12000,"language":"fr"}',
}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer @TOKEN@"}
local feedback_on = @FEEDBACK@
local delay_ms = @DELAY_MS@
local queue = {}
local head, tail = 1, 0
local n = 0
decides, feedbacks, bad, s5xx = 0, 0, 0, 0

if delay_ms > 0 then
  function delay() return delay_ms end
end

function request()
  if head <= tail then
    local item = queue[head]
    queue[head] = nil
    head = head + 1
    local body = '{"decision_id":"' .. item[1] .. '","outcome":{"valid":' .. item[2] ..
      ',"latency_ms":' .. item[3] .. ',"cost_usd":0.0004}}'
    return wrk.format("POST", "/v1/feedback", headers, body)
  end
  n = n + 1
  return wrk.format("POST", "/v1/decide", headers,
                    '{"context":' .. contexts[(n % #contexts) + 1] .. '}')
end

function response(status, hdrs, body)
  if status >= 500 then s5xx = s5xx + 1 end
  if status ~= 200 then
    bad = bad + 1
    return
  end
  if string.find(body, '"propensity"', 1, true) then
    decides = decides + 1
    if not feedback_on then return end
    local id = string.match(body, '"decision_id":"(%x+)"')
    local arm = string.match(body, '"id":"([^"]+)"')
    local valid = "true"
    if string.find(arm, "ollama", 1, true) and (decides % 3 == 0) then valid = "false" end
    local latency = "900.0"
    if string.find(arm, "local_reconstructed", 1, true) then latency = "400.0" end
    tail = tail + 1
    queue[tail] = {id, valid, latency}
  else
    feedbacks = feedbacks + 1
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local d, f, b, s = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    d = d + t:get("decides")
    f = f + t:get("feedbacks")
    b = b + t:get("bad")
    s = s + t:get("s5xx")
  end
  io.write(string.format("ROUTEWISE decides=%d\nROUTEWISE feedbacks=%d\n", d, f))
  io.write(string.format("ROUTEWISE non200=%d\nROUTEWISE s5xx=%d\n", b, s))
  for _, p in ipairs({50, 99, 99.9}) do
    io.write(string.format("ROUTEWISE p%s=%.1f\n", tostring(p), latency:percentile(p)))
  end
  io.write(string.format("ROUTEWISE max=%.1f\nROUTEWISE requests=%d\n", latency.max,
                         summary.requests))
end
"""


# ---------------------------------------------------------------------------- the server
def start_server(workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``routewise serve`` on a free port with the default settings and ``token``."""
    cmd = [sys.executable, "-m", "routewise.cli", "serve", "--port", "0", "--log-json"]
    cmd += ["--db", str(workdir / "soak.db")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEWISE_")}
    env["ROUTEWISE_TOKEN"] = token
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"routewise serve exited ({proc.returncode}):\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if '"serve.listening"' in line:
                url = json.loads(line)["url"]
                try:
                    if httpx.get(url + "/readyz", timeout=2.0).status_code == 200:
                        return proc, url, log_path
                except httpx.HTTPError:
                    pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"routewise serve did not start:\n{log_path.read_text()}")


def file_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1e6
    except FileNotFoundError:
        return 0.0


_METRIC = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, Any]:
    """From ``/metrics``: HTTP requests (all, and 5xx by route), pending decisions and the
    bound hits."""
    requests = 0.0
    errors: dict[str, float] = {}
    hits: dict[str, float] = {}
    pending = 0.0
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))
        if name == "routewise_http_requests_total":
            requests += value
            if labels.get("status", "").startswith("5"):
                key = f"{labels.get('method')} {labels.get('route')} {labels['status']}"
                errors[key] = errors.get(key, 0.0) + value
        elif name == "routewise_bound_hits_total":
            hits[labels["bound"]] = value
        elif name == "routewise_pending_decisions":
            pending = value
    return {"requests": requests, "errors_5xx": errors, "bound_hits": hits, "pending": pending}


# ------------------------------------------------------------------------------ the load
def wrk_script(workdir: Path, name: str, token: str, feedback: bool, delay_ms: float) -> Path:
    path = workdir / name
    lua = LUA.replace("@TOKEN@", token).replace("@FEEDBACK@", "true" if feedback else "false")
    path.write_text(lua.replace("@DELAY_MS@", f"{delay_ms:.3f}"))
    return path


def start_wrk(url: str, script: Path, connections: int, duration: float) -> subprocess.Popen[str]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{round(duration)}s", "--timeout", "10s"]
    cmd += ["-s", str(script), url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(proc: subprocess.Popen[str], grace: float) -> dict[str, Any]:
    """Wait for ``wrk`` (its own ``-d`` ends it; interrupted after ``grace`` seconds) and parse
    its summary."""
    try:
        out, _ = proc.communicate(timeout=max(grace, 0.1))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        out, _ = proc.communicate(timeout=30)
    res: dict[str, Any] = {"returncode": proc.returncode}
    for key, val in re.findall(r"ROUTEWISE ([\w.]+)=([\d.]+)", out):
        res[key] = float(val)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = sum(int(x) for x in re.findall(r"\d+", m.group(1))) if m else 0
    if "requests" not in res:
        res["output"] = out[-2000:]
    return res


class Worker(threading.Thread):
    """A daemon thread with a stop event and a count of answers by kind and status."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.halt = threading.Event()
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.lock = threading.Lock()

    def count(self, kind: str, status: int | str) -> None:
        with self.lock:
            self.counts[kind][str(status)] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: dict(sorted(v.items())) for k, v in sorted(self.counts.items())}

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60.0)


class Probe(Worker):
    """A decide + feedback pair every 50 ms on its own keep-alive connection; the pairs'
    latencies (ms) are taken by the sampler at each sample."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__("probe")
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.latencies: list[float] = []

    def take(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
            return out

    def _post(self, conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
        conn.request("POST", path, body=json.dumps(body).encode(), headers=self.headers)
        r = conn.getresponse()
        raw = r.read()
        self.count(path, r.status)
        return r.status, (json.loads(raw) if r.status == 200 else None)

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30.0)
        n = 0
        while not self.halt.is_set():
            n += 1
            t0 = time.perf_counter()
            try:
                status, d = self._post(conn, "/v1/decide", {"context": NORMAL_CONTEXT})
                if status == 200:
                    outcome = {"valid": n % 5 != 0, "latency_ms": 700.0, "cost_usd": 0.0003}
                    fb = {"decision_id": d["decision_id"], "outcome": outcome}
                    status, _ = self._post(conn, "/v1/feedback", fb)
                if status == 200:
                    with self.lock:
                        self.latencies.append((time.perf_counter() - t0) * 1000.0)
            except (OSError, http.client.HTTPException) as exc:
                self.count("error", type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30.0)
            self.halt.wait(max(0.0, PROBE_INTERVAL_S - (time.perf_counter() - t0)))
        conn.close()


# kind -> the statuses that kind should get
EXPECTED: dict[str, set[str]] = {
    "new_keys": {"200"},
    "random_strings": {"200"},
    "large_array": {"422"},
    "deep_nesting": {"400"},
    "over_key_cap": {"422"},
    "long_value": {"422"},
    "invalid_utf8": {"400"},
    "oversize_body": {"413"},
}


def _rand(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def hostile_body(kind: str, rng: random.Random) -> bytes:
    """The body of one hostile ``POST /v1/decide`` of ``kind`` (see :data:`EXPECTED`)."""
    ctx: dict[str, Any]
    if kind == "new_keys":  # 20 keys never seen before: the featurizer's vocabulary
        ctx = {f"k_{_rand(rng, 12)}": rng.random() for _ in range(20)}
    elif kind == "random_strings":  # high-cardinality categorical values of ~1 KB
        ctx = {"user": _rand(rng, 1000), "prompt": _rand(rng, 1000), "task": "qa"}
    elif kind == "large_array":
        ctx = {"task": "qa", "tags": [rng.randrange(10**6) for _ in range(20_000)]}
    elif kind == "deep_nesting":
        return b'{"context":{"task":' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    elif kind == "over_key_cap":
        ctx = {f"c_{_rand(rng, 8)}": i for i in range(300)}
    elif kind == "long_value":
        ctx = {"task": "qa", "note": _rand(rng, 2000)}
    elif kind == "invalid_utf8":
        return b'{"context":{"task":"\xff\xfe\xfd"}}'
    elif kind == "oversize_body":
        return b'{"context":{"pad":"' + b"x" * (BODY_LIMIT + BODY_LIMIT // 10) + b'"}}'
    else:
        raise ValueError(kind)
    return json.dumps({"context": ctx}).encode()


class Hostile(Worker):
    """Hostile decides, one kind after the other, every 100 ms (no feedback)."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__("hostile")
        self.url, self.token = url, token

    def run(self) -> None:
        rng = random.Random(13)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        kinds = list(EXPECTED)
        with httpx.Client(base_url=self.url, headers=headers, timeout=30.0) as client:
            i = 0
            while not self.halt.is_set():
                kind = kinds[i % len(kinds)]
                i += 1
                try:
                    r = client.post("/v1/decide", content=hostile_body(kind, rng))
                    self.count(kind, r.status_code)
                except httpx.HTTPError as exc:  # e.g. the 413 closing the connection early
                    self.count(kind, type(exc).__name__)
                self.halt.wait(HOSTILE_INTERVAL_S)


class Periodic:
    """A task due every ``period`` seconds from ``first`` (missed turns are skipped)."""

    def __init__(self, period: float, first: float) -> None:
        self.period, self.next = period, first

    def due(self, now: float) -> bool:
        if now < self.next:
            return False
        while self.next <= now:
            self.next += self.period
        return True


class Readers(Worker):
    """The read endpoints, the trace, operator actions and experiments (see the module
    docstring for the schedule)."""

    def __init__(self, url: str, token: str, duration: float) -> None:
        super().__init__("readers")
        self.url, self.token, self.duration = url, token, duration
        self.traces: list[dict[str, float]] = []
        context = quote(json.dumps(NORMAL_CONTEXT))
        self.gets = [
            f"/v1/policy?context={context}",
            "/v1/arms",
            "/v1/health",
            "/v1/events?limit=50",
            "/v1/experiments",
        ]

    def _get(self, client: httpx.Client, path: str) -> httpx.Response | None:
        try:
            r = client.get(path)
        except httpx.HTTPError as exc:
            self.count("GET " + path.split("?")[0], type(exc).__name__)
            return None
        self.count("GET " + path.split("?")[0], r.status_code)
        return r

    def _post(self, client: httpx.Client, path: str, kind: str, body: Any = None) -> None:
        try:
            self.count(kind, client.post(path, json=body).status_code)
        except httpx.HTTPError as exc:
            self.count(kind, type(exc).__name__)

    def _trace(self, client: httpx.Client, since: float | None, kind: str) -> None:
        t0 = time.perf_counter()
        size = lines = 0
        params = {} if since is None else {"since": f"{since:.3f}"}
        try:
            with client.stream("GET", "/v1/trace", params=params, timeout=600.0) as r:
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            self.count(kind, r.status_code)
        except httpx.HTTPError as exc:
            self.count(kind, type(exc).__name__)
        if since is None:
            took = time.perf_counter() - t0
            self.traces.append({"lines": lines, "mb": size / 1e6, "seconds": took})

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        d = self.duration
        reads, recent = Periodic(2.0, 1.0), Periodic(15.0, 15.0)
        full = Periodic(min(600.0, d / 3), min(600.0, d / 3))
        operator = Periodic(30.0, 5.0)
        cycle = min(300.0, d / 2)
        exp_start, exp_end = Periodic(cycle, 3.0), Periodic(cycle, 3.0 + 0.6 * cycle)
        t0 = time.monotonic()
        n_get = n_op = n_exp = 0
        release: tuple[float, str] | None = None
        with httpx.Client(base_url=self.url, headers=headers, timeout=60.0) as client:
            r = self._get(client, "/v1/arms")
            arms = sorted(r.json()["arms"]) if r is not None and r.status_code == 200 else []
            while not self.halt.is_set():
                now = time.monotonic() - t0
                if reads.due(now):
                    self._get(client, self.gets[n_get % len(self.gets)])
                    n_get += 1
                if recent.due(now):
                    self._trace(client, time.time() - 15.0, "GET /v1/trace?since")
                if full.due(now) and now < d - 10.0:
                    self._trace(client, None, "GET /v1/trace (all)")
                if arms and operator.due(now):
                    action = ("quarantine", "pin")[n_op % 2]
                    arm = arms[n_op % len(arms)]
                    self._post(client, f"/v1/arms/{arm}/{action}", f"POST {action}")
                    release, n_op = (now + 10.0, arm), n_op + 1
                if release is not None and now >= release[0]:
                    self._post(client, f"/v1/arms/{release[1]}/release", "POST release")
                    release = None
                if exp_start.due(now):
                    n_exp += 1
                    self._experiment_start(client, f"soak-{n_exp}")
                if exp_end.due(now) and n_exp:
                    self._experiment_end(client, f"soak-{n_exp}")
                self.halt.wait(0.25)

    def _experiment_start(self, client: httpx.Client, name: str) -> None:
        variants = {"control": {"policy": "squarecb"}, "candidate": {"policy": "linucb"}}
        self._post(
            client, "/v1/experiments", "POST experiment", {"name": name, "variants": variants}
        )
        self._post(client, f"/v1/experiments/{name}/start", "POST experiment start")

    def _experiment_end(self, client: httpx.Client, name: str) -> None:
        self._get(client, f"/v1/experiments/{name}")
        self._post(client, f"/v1/experiments/{name}/stop", "POST experiment stop")
        self._post(client, f"/v1/experiments/{name}/abort", "POST experiment abort")


# ------------------------------------------------------------------------------ sampling
class Sampler:
    """One sample of the server every ``--sample`` seconds."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, token: str, db: Path) -> None:
        self.proc, self.db = proc, db
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )
        self.samples: list[dict[str, Any]] = []
        self.last: tuple[float, float] | None = None  # (monotonic time, requests counter)
        self.metrics_failures: list[str] = []

    def metrics(self) -> dict[str, Any] | None:
        """``/metrics`` parsed; one retry (an idle keep-alive connection may have been closed
        by the server just as it is reused); ``None`` (counted) when it fails."""
        for attempt in (1, 2):
            try:
                r = self.client.get("/metrics")
            except httpx.TransportError as exc:
                if attempt == 1:
                    continue
                self.metrics_failures.append(type(exc).__name__)
                return None
            if r.status_code == 200:
                return parse_metrics(r.text)
            self.metrics_failures.append(str(r.status_code))
            return None
        return None

    def sample(self, t_s: float, latencies: list[float]) -> dict[str, Any]:
        pid = self.proc.pid
        st = proc_status(pid)
        s: dict[str, Any] = {
            "t_s": round(t_s, 2),
            "rss_mb": st["VmRSS"],
            "hwm_mb": st["VmHWM"],
            "threads": st["Threads"],
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "db_mb": file_mb(self.db),
            "wal_mb": file_mb(Path(f"{self.db}-wal")),
            "acklog_mb": file_mb(Path(f"{self.db}.acklog")),
            "probe_n": len(latencies),
        }
        lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
        s["p50_ms"], s["p99_ms"] = (float(np.percentile(lat, q)) for q in (50, 99))
        s["max_ms"] = float(np.max(lat))
        m = self.metrics()
        now = time.monotonic()
        if m is not None:
            s["pending"], s["bound_hits"] = m["pending"], m["bound_hits"]
            s["errors_5xx"] = m["errors_5xx"]
            if self.last is not None:
                s["req_s"] = (m["requests"] - self.last[1]) / (now - self.last[0])
            self.last = (now, m["requests"])
        self.samples.append(s)
        return s

    def close(self) -> None:
        self.client.close()


def plateau(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The verdict: the least-squares rise of RSS over the last third of the run, in % of the
    fitted RSS at the start of that third; plateaued below :data:`PLATEAU_PCT`."""
    t = np.array([s["t_s"] for s in samples], dtype=float)
    rss = np.array([s["rss_mb"] for s in samples], dtype=float)
    start = t[-1] * 2.0 / 3.0 if len(t) else 0.0
    window = t >= start
    res: dict[str, Any] = {"window_s": [float(start), float(t[-1]) if len(t) else 0.0]}
    res["samples"] = int(window.sum())
    if res["samples"] < 4:
        res.update(ok=False, reason="fewer than 4 samples in the last third")
        return res
    slope, intercept = np.polyfit(t[window], rss[window], 1)
    fit_start = slope * start + intercept
    rise = slope * (t[-1] - start)
    res.update(
        rss_start_mb=float(fit_start),
        rise_mb=float(rise),
        rise_pct=float(100.0 * rise / fit_start),
        slope_mb_per_h=float(slope * 3600.0),
        rss_first_mb=float(rss[window][0]),
        rss_last_mb=float(rss[-1]),
    )
    res["ok"] = bool(res["rise_pct"] < PLATEAU_PCT)
    return res


# -------------------------------------------------------------------------------- output
def plot(
    samples: list[dict[str, Any]], verdict: dict[str, Any], meta: dict[str, Any], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t_s"] for s in samples]) / 60.0

    def col(key: str) -> np.ndarray:
        return np.array([s.get(key, np.nan) for s in samples], dtype=float)

    fig, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    ax = axes[0]
    ax.plot(t, col("rss_mb"), color="tab:blue", label="RSS (VmRSS)")
    ax.plot(t, col("hwm_mb"), color="tab:blue", ls=":", label="peak (VmHWM)")
    if "slope_mb_per_h" in verdict:
        w0, w1 = verdict["window_s"]
        ax.axvspan(w0 / 60, w1 / 60, color="0.9", label="plateau window (last third)")
        fit = verdict["rss_start_mb"] + np.array([0.0, verdict["rise_mb"]])
        ax.plot([w0 / 60, w1 / 60], fit, color="tab:red", lw=2, label="least-squares fit")
    if meta.get("max_pending_hit_s") is not None:
        ax.axvline(meta["max_pending_hit_s"] / 60, color="tab:green", ls="--",
                   label="pending reach max_pending")  # fmt: skip
    ax.set_ylabel("server memory (MB)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    pending = col("pending") / 1000.0
    ax2.plot(t, pending, color="tab:green", lw=0.8, label="pending decisions (right)")
    ax2.set_ylabel("pending decisions (thousands)")
    ax2.set_ylim(0, max(DEFAULT_MAX_PENDING / 1000.0, float(np.nanmax(pending))) * 1.05)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(x.get_label()) for x in lines], loc="lower right", fontsize=8)
    ax.set_title(meta["title"], fontsize=10)

    ax = axes[1]
    ax.plot(t, col("fds"), color="tab:purple", label="open file descriptors")
    ax.plot(t, col("threads"), color="tab:gray", ls="--", label="threads")
    ax.set_ylabel("count")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[2]
    ax.plot(t, col("db_mb"), color="tab:brown", label="database (left)")
    ax.set_ylabel("database (MB)")
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    ax2.plot(t, col("wal_mb"), color="tab:orange", label="WAL (right)")
    ax2.plot(t, col("acklog_mb"), color="tab:olive", ls="--", label="acklog (right)")
    ax2.set_ylabel("WAL, acklog (MB)")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(x.get_label()) for x in lines], loc="upper left", fontsize=8)

    ax = axes[3]
    ax.plot(t, col("p99_ms"), color="tab:red", label="p99")
    ax.plot(t, col("p50_ms"), color="tab:blue", label="p50")
    ax.set_yscale("log")
    ax.set_ylabel("probe decide+feedback (ms)")
    ax.set_xlabel("minutes")
    ax2 = ax.twinx()
    ax2.plot(t, col("req_s"), color="0.6", lw=0.8, label="requests/s (right)")
    ax2.set_ylabel("requests/s (all, /metrics)")
    ax2.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [str(x.get_label()) for x in lines], loc="upper left", fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SHORT = {
    "max_context_keys": "ctxkeys",
    "max_value_chars": "chars",
    "max_feature_keys": "featkeys",
    "max_dim": "dim",
    "max_pending": "pending",
}


def table(samples: list[dict[str, Any]], duration: float) -> None:
    """The samples at the start, 1/6, 1/2 and the end of the run."""
    picks = [samples[0]]
    for frac in (1 / 6, 1 / 2, 1.0):
        best = min(samples, key=lambda s: abs(s["t_s"] - frac * duration))
        if best not in picks:
            picks.append(best)
    head = f"{'t min':>6} {'RSS MB':>7} {'peak MB':>7} {'fds':>4} {'db MB':>7} {'WAL MB':>6} "
    head += f"{'ack MB':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>6} {'pending':>8}  bound hits"
    print(head)
    print("-" * (len(head) + 40))
    for s in picks:
        hits = ", ".join(
            f"{SHORT.get(k, k)} {int(v):,}" for k, v in s.get("bound_hits", {}).items() if v
        )
        print(
            f"{s['t_s'] / 60:>6.1f} {s['rss_mb']:>7.1f} {s['hwm_mb']:>7.1f} {s['fds']:>4} "
            f"{s['db_mb']:>7.1f} {s['wal_mb']:>6.2f} {s['acklog_mb']:>6.2f} "
            f"{_num(s['p50_ms'], 7, 1)} {_num(s['p99_ms'], 7, 1)} {_num(s.get('req_s'), 6, 0)} "
            f"{_num(s.get('pending'), 8, 0)}  {hits or '-'}"
        )


def _num(x: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if x is None or np.isnan(x) else f"{x:>{width},.{digits}f}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,}×{status}" for status, n in counts.items()) or "-"


# ---------------------------------------------------------------------------------- main
def decide_only_rate(duration: float) -> float:
    """Decide-only requests/s that fill ``max_pending`` in a quarter of the run (20–500/s)."""
    return min(500.0, max(20.0, DEFAULT_MAX_PENDING / (duration / 4.0)))


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start the server and the load, sample until ``--duration`` has passed, stop."""
    token = secrets.token_urlsafe(24)
    db = workdir / "soak.db"
    proc, url, log_path = start_server(workdir, token)
    rate = decide_only_rate(args.duration)
    pairs = wrk_script(workdir, "pairs.lua", token, True, 0.0)
    only = wrk_script(workdir, "decide_only.lua", token, False, 1000.0 * DECIDE_ONLY_CONNS / rate)
    sampler = Sampler(proc, url, token, db)
    workers: list[Worker] = [
        Probe(url, token),
        Hostile(url, token),
        Readers(url, token, args.duration),
    ]
    probe = workers[0]
    assert isinstance(probe, Probe)
    res: dict[str, Any] = {"url": url, "decide_only_rate": rate, "died": None}
    wrks: list[subprocess.Popen[str]] = []
    try:
        t0 = time.monotonic()
        sampler.sample(0.0, [])
        wrks = [start_wrk(url, pairs, args.connections, args.duration)]
        wrks.append(start_wrk(url, only, DECIDE_ONLY_CONNS, args.duration))
        for w in workers:
            w.start()
        k = 0
        while True:
            k += 1
            target = min(t0 + k * args.sample, t0 + args.duration)
            time.sleep(max(0.0, target - time.monotonic()))
            try:
                if proc.poll() is not None:
                    raise ProcessLookupError
                s = sampler.sample(time.monotonic() - t0, probe.take())
            except (ProcessLookupError, FileNotFoundError, KeyError):  # gone, or a zombie
                proc.wait()
                res["died"] = f"exited with {proc.returncode} at {time.monotonic() - t0:.0f} s"
                break
            print(
                f"  t={s['t_s']:>7.1f} s  RSS {s['rss_mb']:6.1f} MB  fds {s['fds']:>3}  "
                f"db {s['db_mb']:7.1f} MB  p99 {s['p99_ms']:7.1f} ms  "
                f"{s.get('req_s', 0.0):6.0f} req/s  pending {int(s.get('pending', 0)):,}",
                flush=True,
            )
            if target >= t0 + args.duration:
                break
        for w in workers:
            w.stop()
        left = max(0.0, t0 + args.duration - time.monotonic()) if res["died"] is None else 0.0
        res["wrk_pairs"], res["wrk_decide_only"] = (finish_wrk(w, left + 30.0) for w in wrks)
        res["final_metrics"] = sampler.metrics() if proc.poll() is None else None
    finally:
        for w in wrks:
            if w.poll() is None:
                w.kill()
        for w in workers:
            w.halt.set()
        sampler.close()
        res["sigterm_s"], res["exit_code"] = stop_server(proc)
    res["samples"] = sampler.samples
    res["metrics_failures"] = sampler.metrics_failures
    res["workers"] = {w.name: w.snapshot() for w in workers}
    readers = workers[2]
    assert isinstance(readers, Readers)
    res["full_traces"] = readers.traces
    res["logged_bounds"] = sorted(
        {json.loads(line).get("bound", "?") for line in log_path.open() if '"bound.hit"' in line}
    )
    return res


def stop_server(proc: subprocess.Popen[bytes]) -> tuple[float, int | None]:
    """SIGTERM; the seconds until the process exited (killed after 60 s) and its exit code."""
    t0 = time.monotonic()
    if proc.poll() is not None:
        return 0.0, proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - t0, proc.returncode


def report(res: dict[str, Any], args: argparse.Namespace) -> bool:
    """Print the table, the answers and the verdict; True when the run passed."""
    samples = res["samples"]
    print()
    table(samples, args.duration)
    print()
    for name in ("wrk_pairs", "wrk_decide_only"):
        w = {"rps": float("nan"), **(res.get(name) or {})}
        n = {k: int(w.get(k, 0)) for k in ("requests", "decides", "feedbacks", "non200", "s5xx")}
        ms = "/".join(f"{w.get(k, 0) / 1000:.1f}" for k in ("p50", "p99", "max"))
        print(
            f"{name}: {n['requests']:,} requests ({w['rps']:,.0f}/s), {n['decides']:,} decides, "
            f"{n['feedbacks']:,} feedbacks, non-200 {n['non200']:,} (5xx {n['s5xx']:,}), "
            f"socket errors {w.get('socket_errors', 0)}, p50/p99/max {ms} ms"
        )
    for worker, kinds in res["workers"].items():
        print(f"{worker}:")
        for kind, counts in kinds.items():
            expected = EXPECTED.get(kind)
            note = ""
            if expected is not None and set(counts) - expected:
                note = f"   (expected {'/'.join(sorted(expected))})"
            print(f"  {kind:<28} {_counts(counts)}{note}")
    for tr in res["full_traces"]:
        print(f"full trace: {tr['lines']:,} lines, {tr['mb']:.1f} MB in {tr['seconds']:.1f} s")
    final = res.get("final_metrics") or {}
    hits = final.get("bound_hits", {})
    print("bound hits (/metrics): " + ", ".join(f"{k} {int(v):,}" for k, v in hits.items()))
    print(f"bounds logged (bound.hit): {', '.join(res['logged_bounds']) or '-'}")
    hit_s = res["max_pending_hit_s"]
    print(
        f"decide-only at {res['decide_only_rate']:.0f}/s: pending reached max_pending "
        f"({DEFAULT_MAX_PENDING:,}) at {hit_s:.0f} s"
        if hit_s is not None
        else f"decide-only at {res['decide_only_rate']:.0f}/s: pending never reached max_pending "
        f"({DEFAULT_MAX_PENDING:,}; {int(samples[-1].get('pending', 0)):,} at the end): their "
        "memory still grows by design (run longer for a plateau)"
    )
    if res["metrics_failures"]:
        print(f"failed /metrics samples: {', '.join(res['metrics_failures'])}")
    if res["died"] is None:
        print(f"SIGTERM to exit: {res['sigterm_s']:.1f} s (exit code {res['exit_code']})")
    return verdict_lines(res)


def verdict_lines(res: dict[str, Any]) -> bool:
    v = res["verdict"]
    if "rise_pct" in v:
        plateaued = v["ok"]
        print(
            f"\nRSS plateau: least-squares rise over the last third (t = {v['window_s'][0]:.0f}–"
            f"{v['window_s'][1]:.0f} s, {v['samples']} samples) {v['rise_mb']:+.1f} MB = "
            f"{v['rise_pct']:+.1f}% of {v['rss_start_mb']:.1f} MB at its start (limit "
            f"{PLATEAU_PCT:.0f}%); slope {v['slope_mb_per_h']:+.1f} MB/hour; "
            f"RSS {v['rss_first_mb']:.1f} → {v['rss_last_mb']:.1f} MB in the window — "
            f"{'plateaued' if plateaued else 'NOT plateaued'}"
        )
        hit_s = res["max_pending_hit_s"]
        if hit_s is None or hit_s > v["window_s"][0]:
            when = "only after the window started" if hit_s is not None else "before the end"
            print(
                f"  note: the pending decisions did not reach max_pending {when}: their growth "
                "(by design, bounded) is part of this rise"
            )
    else:
        plateaued = False
        print(f"\nRSS plateau: no verdict ({v.get('reason')}) — NOT plateaued")
    client_5xx = res["client_5xx"]
    server_5xx = res["server_5xx"]
    print(f"server alive to the end: {'yes' if res['died'] is None else 'NO, ' + res['died']}")
    where = ", ".join(f"{k}: {int(n)}" for k, n in server_5xx.items())
    print(
        f"5xx answers: {sum(server_5xx.values()):,.0f} counted by the server"
        f"{f' ({where})' if where else ''}, {client_5xx:,} seen by the clients"
    )
    ok = plateaued and res["died"] is None and not server_5xx and client_5xx == 0
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    return ok


def summarize(res: dict[str, Any]) -> None:
    """Derived fields: the verdict, when max_pending was first hit, the 5xx counts."""
    samples = res["samples"]
    res["verdict"] = plateau(samples)
    res["max_pending_hit_s"] = next(
        (s["t_s"] for s in samples if s.get("bound_hits", {}).get("max_pending", 0) > 0), None
    )
    final = res.get("final_metrics") or (samples[-1] if samples else {})
    res["server_5xx"] = final.get("errors_5xx", {})
    client = sum(int((res.get(w) or {}).get("s5xx", 0)) for w in ("wrk_pairs", "wrk_decide_only"))
    for kinds in res["workers"].values():
        for counts in kinds.values():
            client += sum(n for status, n in counts.items() if status.startswith("5"))
    res["client_5xx"] = client


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples (10)")
    ap.add_argument("--connections", type=int, default=8, help="wrk connections for pairs (8)")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="where the PNG and JSON go")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--quick", action="store_true", help="= --duration 120 --sample 5")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.sample = 120.0, 5.0
    if not Path("/proc/self/status").exists():
        print("this benchmark reads /proc/<pid>/status (Linux)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="routewise-soak-"))
    print(
        f"soak: {args.duration:.0f} s, a sample every {args.sample:g} s, wrk pairs at "
        f"{args.connections} connections, decide-only at {decide_only_rate(args.duration):.0f}/s; "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; store in {workdir}",
        flush=True,
    )
    try:
        res = soak(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    summarize(res)
    res["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    res["bounds"] = BOUNDS
    ok = report(res, args)
    v = res["verdict"]
    title = (
        f"routewise serve soak, {args.duration / 60:g} min ({stamp}): RSS "
        + (f"{v['rise_pct']:+.1f}% over the last third — " if "rise_pct" in v else "")
        + f"{'plateaued' if v['ok'] else 'NOT plateaued'}; {'PASS' if ok else 'FAIL'}"
    )
    png, js = args.out / f"soak-{stamp}.png", args.out / f"soak-{stamp}.json"
    plot(res["samples"], v, {"title": title, "max_pending_hit_s": res["max_pending_hit_s"]}, png)
    js.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {png} and {js}" + (f"; kept {workdir}" if args.keep else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
