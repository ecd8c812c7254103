#!/usr/bin/env python
"""Hostile input against a real sidecar: memory, event-loop stalls and restart (issue 13, D1).

Setup: ``routewise serve`` runs as a subprocess on 127.0.0.1 (a free port) with a fresh
SQLite store in a temporary directory and the demo arm set (as ``benchmarks/sidecar.py``).
The script then sends, one after another on a keep-alive connection, ``--n`` rounds of

* one ``POST /v1/decide`` whose context carries ``--keys`` (default 70,000) keys never seen
  before — ~930 KB, under the 1 MiB body limit (with the default ``max_context_keys`` it is
  refused with 422; it is measured anyway), and
* one normal decide + feedback pair,

while a second thread sends ``GET /healthz`` every 10 ms on its own connection: its latency
is how long the event loop was busy with something else, so its maximum bounds the longest
stall one request caused.

Reported: the answers by status, the server's RSS (``VmRSS``) and peak (``VmHWM``) before and
after, the store's size (database, WAL and acklog), the time SIGTERM took to stop the server,
then the restart on the same store — the time until ``/readyz`` answers 200 and the new
process's peak RSS — and the acceptance of issue 13: RSS < 400 MB, restart peak < 500 MB,
restart < 5 s, ``/healthz`` never blocked > 50 ms. Linux only (``/proc``).

Run it on a quiet machine: the stall and restart numbers are wall-clock times::

    python benchmarks/hostile.py              # 1,000 rounds of 70,000 new keys
    python benchmarks/hostile.py --n 100 --json out/hostile.json

Exit status: 0 when every acceptance line is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import proc_status

ACCEPT_RSS_MB = 400.0
ACCEPT_RESTART_PEAK_MB = 500.0
ACCEPT_RESTART_S = 5.0
ACCEPT_STALL_MS = 50.0
BODY_LIMIT = 1 << 20  # the sidecar's default max_body_bytes
NORMAL_CONTEXTS = [
    {
        "task": "extraction",
        "schema_depth": 3,
        "n_fields": 12,
        "input_tokens": 900,
        "language": "zh",
    },
    {"task": "classification", "schema_depth": 1, "n_fields": 2, "input_tokens": 250},
    {"task": "qa", "schema_depth": 2, "n_fields": 6, "input_tokens": 1500, "language": "en"},
]


# ---------------------------------------------------------------------------- the server
def store_mb(db: Path) -> float:
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}.acklog")]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def start_server(workdir: Path, log_name: str) -> tuple[subprocess.Popen[bytes], str, float]:
    """``routewise serve`` on a free port; returns it, its URL and the seconds until
    ``/readyz`` answered 200."""
    cmd = [sys.executable, "-m", "routewise.cli", "serve", "--port", "0", "--log-json"]
    cmd += ["--db", str(workdir / "hostile.db")]
    env = {k: v for k, v in os.environ.items() if k != "ROUTEWISE_TOKEN"}
    log_path = workdir / log_name
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    deadline = t0 + 120.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"routewise serve exited ({proc.returncode}):\n{log_path.read_text()}")
        for line in log_path.read_text().splitlines():
            if '"serve.listening"' in line:
                url = json.loads(line)["url"]
                if _ready(url):
                    return proc, url, time.monotonic() - t0
        time.sleep(0.02)
    proc.kill()
    raise SystemExit(f"routewise serve did not start:\n{log_path.read_text()}")


def _ready(url: str) -> bool:
    try:
        conn = _connect(url, timeout=2.0)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def stop_server(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM, then the seconds until the process exited (killed after 60 s)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.monotonic() - t0


# ------------------------------------------------------------------------------ the load
def _connect(url: str, timeout: float = 60.0) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def hostile_body(round_no: int, keys: int) -> bytes:
    """A decide whose context has ``keys`` keys never sent before: short keys unique to the
    round, two in three numeric and one in three a one-letter string (70,000 keys: ~1 MB,
    under the 1 MiB body limit, so the request reaches the featurizer)."""
    parts = []
    for i in range(keys):
        value = '"s"' if i % 3 == 0 else str(i % 10)
        parts.append(f'"{round_no:x}_{i:x}":{value}')
    return ('{"context":{' + ",".join(parts) + "}}").encode()


class HealthProbe(threading.Thread):
    """``GET /healthz`` every ``interval`` seconds on its own connection; keeps the
    latencies (ms)."""

    def __init__(self, url: str, interval: float = 0.010) -> None:
        super().__init__(name="healthz-probe", daemon=True)
        self.url, self.interval = url, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        conn = _connect(self.url, timeout=30.0)
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    self.failures += 1
                self.latencies.append((time.perf_counter() - t0) * 1000.0)
            except OSError:
                self.failures += 1
                conn.close()
                conn = _connect(self.url, timeout=30.0)
            self._halt.wait(self.interval)
        conn.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30.0)


def run_load(url: str, rounds: int, keys: int) -> dict[str, Any]:
    """The hostile and normal requests; returns their status counts and timings."""
    conn = _connect(url)
    hostile: dict[int, int] = {}
    normal: dict[int, int] = {}
    hostile_s: list[float] = []
    body_bytes = 0
    for n in range(rounds):
        body = hostile_body(n, keys)
        body_bytes = max(body_bytes, len(body))
        t0 = time.perf_counter()
        status, _ = _post(conn, "/v1/decide", body)
        hostile_s.append(time.perf_counter() - t0)
        hostile[status] = hostile.get(status, 0) + 1
        ctx = NORMAL_CONTEXTS[n % len(NORMAL_CONTEXTS)]
        status, raw = _post(conn, "/v1/decide", json.dumps({"context": ctx}).encode())
        normal[status] = normal.get(status, 0) + 1
        if status == 200:
            did = json.loads(raw)["decision_id"]
            outcome = {"valid": n % 4 != 0, "latency_ms": 400.0 + n % 500, "cost_usd": 0.0004}
            fb = json.dumps({"decision_id": did, "outcome": outcome}).encode()
            status, _ = _post(conn, "/v1/feedback", fb)
            normal[status] = normal.get(status, 0) + 1
    conn.close()
    hostile_s.sort()
    return {
        "hostile_status": hostile,
        "normal_status": normal,
        "body_bytes": body_bytes,
        "hostile_p50_ms": hostile_s[len(hostile_s) // 2] * 1000.0 if hostile_s else 0.0,
        "hostile_max_ms": hostile_s[-1] * 1000.0 if hostile_s else 0.0,
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---------------------------------------------------------------------------------- main
def measure(rounds: int, keys: int, workdir: Path) -> dict[str, Any]:
    proc, url, start_s = start_server(workdir, "server.log")
    res: dict[str, Any] = {"rounds": rounds, "keys": keys, "start_s": start_s}
    try:
        res["before"] = proc_status(proc.pid)
        probe = HealthProbe(url)
        probe.start()
        t0 = time.monotonic()
        res.update(run_load(url, rounds, keys))
        res["load_s"] = time.monotonic() - t0
        probe.stop()
        res["healthz_n"] = len(probe.latencies)
        res["healthz_failures"] = probe.failures
        res["healthz_p99_ms"] = _percentile(probe.latencies, 0.99)
        res["healthz_max_ms"] = max(probe.latencies, default=float("nan"))
        res["after"] = proc_status(proc.pid)
    finally:
        res["sigterm_s"] = stop_server(proc)
    res["store_mb"] = store_mb(workdir / "hostile.db")
    proc2, _, restart_s = start_server(workdir, "restart.log")
    try:
        res["restart_s"] = restart_s
        res["restart"] = proc_status(proc2.pid)
    finally:
        stop_server(proc2)
    return res


def report(res: dict[str, Any]) -> bool:
    before, after, restart = res["before"], res["after"], res["restart"]
    rows = [
        ("rounds (hostile decide + normal pair)", f"{res['rounds']:,}", ""),
        ("keys per hostile context", f"{res['keys']:,}", f"{res['body_bytes'] / 1e3:,.0f} KB body"),
        ("hostile answers by status", _counts(res["hostile_status"]), "expect 422"),
        ("normal answers by status", _counts(res["normal_status"]), "expect 200"),
        ("hostile request p50 / max", f"{res['hostile_p50_ms']:.1f} / {res['hostile_max_ms']:.1f} ms", ""),
        ("load duration", f"{res['load_s']:.1f} s", ""),
        ("/healthz probes (failures)", f"{res['healthz_n']:,} ({res['healthz_failures']})", ""),
        ("/healthz latency p99 / max", f"{res['healthz_p99_ms']:.1f} / {res['healthz_max_ms']:.1f} ms",
         f"max < {ACCEPT_STALL_MS:.0f} ms"),
        ("server RSS before / after", f"{before['VmRSS']:.0f} / {after['VmRSS']:.0f} MB",
         f"after < {ACCEPT_RSS_MB:.0f} MB"),
        ("server peak RSS (VmHWM)", f"{after['VmHWM']:.0f} MB", ""),
        ("store size (db + WAL + acklog)", f"{res['store_mb']:.2f} MB", ""),
        ("SIGTERM to exit", f"{res['sigterm_s']:.2f} s", ""),
        ("restart to /readyz 200", f"{res['restart_s']:.2f} s", f"< {ACCEPT_RESTART_S:.0f} s"),
        ("restart peak RSS (VmHWM)", f"{restart['VmHWM']:.0f} MB",
         f"< {ACCEPT_RESTART_PEAK_MB:.0f} MB"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  note")
    print("-" * (width + vwidth + 20))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {note}")
    checks = [
        (f"RSS after < {ACCEPT_RSS_MB:.0f} MB", after["VmRSS"] < ACCEPT_RSS_MB),
        (f"restart peak < {ACCEPT_RESTART_PEAK_MB:.0f} MB", restart["VmHWM"] < ACCEPT_RESTART_PEAK_MB),
        (f"restart < {ACCEPT_RESTART_S:.0f} s", res["restart_s"] < ACCEPT_RESTART_S),
        (f"/healthz never blocked > {ACCEPT_STALL_MS:.0f} ms", res["healthz_max_ms"] <= ACCEPT_STALL_MS),
        ("no failed /healthz probe", res["healthz_failures"] == 0),
        ("every normal request answered 200", set(res["normal_status"]) == {200}),
    ]  # fmt: skip
    print()
    for name, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {name}")
    return all(ok for _, ok in checks)


def _counts(counts: dict[int, int]) -> str:
    return ", ".join(f"{n:,}×{status}" for status, n in sorted(counts.items())) or "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000, help="rounds (default 1,000)")
    ap.add_argument("--keys", type=int, default=70_000, help="new keys per hostile context")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not Path("/proc/self/status").exists():
        print("this benchmark reads /proc/<pid>/status (Linux)", file=sys.stderr)
        return 2
    size = len(hostile_body(args.n, args.keys))
    if size > BODY_LIMIT:
        print(
            f"note: a hostile body is {size:,} bytes, over the sidecar's {BODY_LIMIT:,}-byte "
            "limit: it is refused with 413 before it is parsed (use fewer --keys)",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="routewise-hostile-") as tmp:
        res = measure(args.n, args.keys, Path(tmp))
    print(f"routewise serve, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    ok = report(res)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        res["hostile_status"] = {str(k): v for k, v in res["hostile_status"].items()}
        res["normal_status"] = {str(k): v for k, v in res["normal_status"].items()}
        args.json.write_text(json.dumps(res, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
