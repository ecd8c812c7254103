"""Three ``routewise serve`` replicas on one PostgreSQL, as real processes.

Traffic is spread round-robin over them, every feedback sent to another replica than its
decision (retried on another one after a 503 or a lost connection). Under load: one replica is
killed with ``kill -9`` and restarted; PostgreSQL is restarted (``pg_ctlcluster … restart``);
then stopped for a while (every replica's ``/readyz`` turns 503) and started again. The
sidecars recover by themselves. Afterwards every acknowledged feedback is in the shared trace
exactly once with the acknowledged reward, and every replica ranks the arms the same (relative
1e-9) for 20 fixed contexts. An operator's quarantine on one replica shows on the others within
a second (asserted < 2 s; the distribution is printed). The in-process replica tests are
tests/test_replicas.py. Each replica's log is kept in the test's tmp_path (replica-<port>.log).
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from test_server_subprocess import Daemon

from routewise.state.postgres import PostgresStore

TOKEN = "replica-test-token-5d1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARMS = [
    "openai:gpt-5.4/direct_emit",
    "openai:gpt-5.4/local_reconstructed",
    "google_genai:gemini-2.5-flash-lite/direct_emit",
    "ollama:llama3/direct_emit",
]
QUALITY = dict(zip(ARMS, (0.92, 0.8, 0.7, 0.45), strict=True))
COST = dict(zip(ARMS, (0.004, 0.003, 0.0004, 0.0), strict=True))
TASKS = ("extraction", "classification", "qa", "summarization")
TRAFFIC_CONTEXTS = [
    {"task": t, "schema_depth": d, "n_fields": 2 + 5 * d, "input_tokens": n, "language": lang}
    for t in TASKS
    for d, n, lang in ((1, 300, "en"), (3, 2400, "zh"))
]
FIXED_CONTEXTS = [  # the 20 contexts whose rankings every replica must agree on
    {
        "task": TASKS[i % 4],
        "schema_depth": 1 + i % 3,
        "n_fields": 1 + (7 * i) % 19,
        "input_tokens": 150 + 211 * i,
        "language": ("en", "zh", "de")[i % 3],
    }
    for i in range(20)
]
REL_TOL = 1e-9  # routewise/controller/replica.py: a replica restored from a snapshot may differ
# from one that learned incrementally in the last bits, where a policy recomputes its inverse

STEP_ACKS = 300  # acknowledged feedbacks per phase of the load test
PHASE_TIMEOUT = 25.0  # seconds a phase may take to collect them
FEEDBACK_RETRY_S = 20.0  # how long a feedback is retried (across replicas) before it is dropped


# ---------------------------------------------------------------- PostgreSQL and the sidecars
def pg_cluster(url: str) -> tuple[str, str, int]:
    """The Debian cluster (version, name, port) serving ``url`` (``pg_lsclusters``)."""
    port = urlsplit(url).port or 5432
    out = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(port):
            return fields[0], fields[1], port
    raise AssertionError(f"no PostgreSQL cluster on port {port}:\n{out}")


def pg_ctl(cluster: tuple[str, str, int], action: str) -> None:
    version, name, _ = cluster
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pg_ensure_up(cluster: tuple[str, str, int]) -> None:
    """Start the cluster if it is down, then wait until it accepts connections."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "start"],
        capture_output=True,
        timeout=120,
    )  # fails harmlessly when it is already running
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = subprocess.run(
            ["pg_isready", "-h", "127.0.0.1", "-p", str(cluster[2])], capture_output=True
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"PostgreSQL on port {cluster[2]} is not back up")


class Cluster:
    """Three ``routewise serve --db <pg_url>`` replicas (with a token); ``urls[i]`` is ``None``
    while replica i is down."""

    def __init__(self, tmp_path: Path, pg_url: str, n: int = 3) -> None:
        self.cwd = tmp_path
        self.pg_url = pg_url
        self.config = tmp_path / "routewise.toml"
        self.config.write_text(
            f"arms = {json.dumps(ARMS)}\nseed = 11\nsnapshot_every = 200\n", encoding="utf-8"
        )
        self.daemons: list[Daemon | None] = [None] * n
        self.urls: list[str | None] = [None] * n
        self.retired: list[Daemon] = []

    def start(self, *which: int) -> None:
        """Start the given replicas (concurrently)."""
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                d = Daemon(
                    self.cwd,
                    "--config",
                    str(self.config),
                    "--db",
                    self.pg_url,
                    env={"ROUTEWISE_TOKEN": TOKEN},
                )
            except BaseException as exc:
                errors.append(exc)
                return
            self.daemons[i] = d
            self.urls[i] = d.url

        threads = [threading.Thread(target=one, args=(i,)) for i in which]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def kill(self, i: int) -> None:
        d = self.daemons[i]
        assert d is not None
        self.urls[i] = None
        self.daemons[i] = None
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
        self.retired.append(d)

    def live(self) -> list[tuple[int, str]]:
        return [(i, u) for i, u in enumerate(list(self.urls)) if u is not None]

    def stop_all(self) -> list[int]:
        """SIGTERM every running replica; their exit codes."""
        rcs = []
        for i, d in enumerate(self.daemons):
            if d is not None:
                self.urls[i] = None
                rcs.append(d.stop(signal.SIGTERM))
        return rcs

    def problems(self, most: int = 20) -> str:
        """Each replica's warning and error log lines (the killed one's too)."""
        out = []
        for d in [*self.retired, *(d for d in self.daemons if d is not None)]:
            bad = [ln for ln in d.lines if '"level": "error"' in ln or '"level": "warning"' in ln]
            out.append(f"--- {d.url}: {len(bad)} warnings/errors\n" + "\n".join(bad[:most]))
        return "\n".join(out)

    def save_logs(self) -> None:
        """Every replica's log (the killed one's too) to ``<tmp_path>/replica-<port>.log``."""
        for d in [*self.retired, *(d for d in self.daemons if d is not None)]:
            port = d.url.rsplit(":", 1)[-1]
            (self.cwd / f"replica-{port}.log").write_text("\n".join(d.lines), encoding="utf-8")

    def logs(self, tail: int = 25) -> str:
        out = []
        for i, d in enumerate(self.daemons):
            if d is not None:
                out.append(f"--- replica {i} ({d.url}):\n" + "\n".join(d.lines[-tail:]))
        return "\n".join(out)


@pytest.fixture()
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    cl = Cluster(tmp_path, pg_url)
    try:
        yield cl
    finally:
        for d in cl.daemons:
            if d is not None:
                d.stop(signal.SIGKILL)
        cl.save_logs()


# ----------------------------------------------------------------------------- the traffic
def outcome_for(arm: str, ctx: dict[str, Any], decision_id: str) -> dict[str, Any]:
    """A deterministic outcome: a retried feedback sends the same one (so the same reward)."""
    h = int(hashlib.sha256(decision_id.encode()).hexdigest()[:12], 16) / 16**12
    p = QUALITY[arm] - (0.2 if ctx["schema_depth"] >= 3 and "llama" in arm else 0.0)
    return {"valid": h < p, "latency_ms": round(250.0 + 500.0 * h, 3), "cost_usd": COST[arm]}


class Refused(Exception):
    """An answer that is neither a 2xx nor a 503 (recorded in ``Load.unexpected``)."""


class Load:
    """Worker threads: decide on replica i, feedback on another one (retried across replicas
    on a 503 or a connection error). ``acked`` maps each acknowledged feedback's decision id to
    the reward the sidecar returned."""

    def __init__(self, cl: Cluster, threads: int = 6) -> None:
        self.cl = cl
        self._phase = "warm-up"
        self.phase_times: dict[str, float] = {"warm-up": time.monotonic()}
        self.acked: dict[str, float] = {}
        self.duplicates = 0
        self.failures: Counter[tuple[str, str, str]] = Counter()  # (phase, verb, status)
        self.unexpected: list[str] = []  # answers that are neither 2xx, 503 nor lost
        self.ok_times: list[tuple[float, int]] = []  # (monotonic time, replica) of every 2xx
        self.fail_times: list[float] = []
        self.decided: dict[str, tuple[int, str, float]] = {}  # id -> (replica, phase, time)
        self.acked_on: dict[str, tuple[int, str, float]] = {}  # of the feedback
        self.slowest: dict[str, float] = {}  # phase -> the slowest acknowledged request (s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, name: str) -> None:
        self.phase_times[name] = time.monotonic()
        self._phase = name

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=FEEDBACK_RETRY_S + 15)

    def wait_acked(self, n: int, what: str) -> None:
        deadline = time.monotonic() + PHASE_TIMEOUT
        while len(self.acked) < n:
            assert time.monotonic() < deadline, (
                f"{what}: only {len(self.acked)} of {n} feedbacks acknowledged; "
                f"failures {dict(self.failures)}; unexpected {self.unexpected[:5]}\n"
                + self.cl.logs()
            )
            time.sleep(0.05)

    def first_ok_after(self, t: float, replica: int) -> float | None:
        with self._lock:
            return next((ts for ts, r in self.ok_times if ts >= t and r == replica), None)

    def _ticket(self) -> int:
        with self._lock:
            self._next += 1
            return self._next

    def _call(self, http: httpx.Client, i: int, url: str, verb: str, body: Any) -> Any:
        """POST ``body``; the JSON answer on a 2xx, ``None`` on a 503 or a lost connection
        (worth retrying); any other answer is recorded as unexpected and raises Refused."""
        phase, t0 = self.phase, time.monotonic()
        try:
            r = http.post(f"{url}/v1/{verb}", json=body)
        except httpx.TransportError as exc:
            self._failed(phase, verb, type(exc).__name__)
            return None
        t1 = time.monotonic()
        if r.is_success:
            with self._lock:
                self.ok_times.append((t1, i))
                self.slowest[phase] = max(self.slowest.get(phase, 0.0), t1 - t0)
            return r.json()
        self._failed(phase, verb, str(r.status_code))
        if r.status_code != 503:
            self.unexpected.append(
                f"{phase}: {verb} on replica {i} at {t1:.3f}: {r.status_code} {r.text[:200]}"
            )
            raise Refused(r.status_code)
        return None

    def report_unexpected(self, stored: set[str]) -> str:
        """The unexpected answers, with where and when their decisions were acknowledged and
        whether they are in the store (``stored``: the trace's decision ids)."""
        ids = re.findall(r"decision_id '(\w+)'", " ".join(self.unexpected))
        where = [(self.decided.get(d), d in stored) for d in ids[:10]]
        return (
            f"{len(self.unexpected)} unexpected answers: {self.unexpected[:10]}\n"
            f"their decisions ((replica, phase, time), in the trace): {where}"
            f"\nphase times {self.phase_times}\n{self.cl.problems()}"
        )

    def _failed(self, phase: str, verb: str, status: str) -> None:
        with self._lock:
            self.failures[(phase, verb, status)] += 1
            self.fail_times.append(time.monotonic())

    def _run(self) -> None:
        with httpx.Client(headers=AUTH, timeout=15) as http:
            while not self._stop.is_set():
                k = self._ticket()
                live = self.cl.live()
                if len(live) < 2:
                    time.sleep(0.05)
                    continue
                i, url = live[k % len(live)]
                ctx = TRAFFIC_CONTEXTS[k % len(TRAFFIC_CONTEXTS)]
                try:
                    d = self._call(http, i, url, "decide", {"context": ctx, "request_id": f"r{k}"})
                except Refused:
                    continue
                if d is None:
                    time.sleep(0.02)
                    continue
                with self._lock:
                    self.decided[d["decision_id"]] = (i, self.phase, time.monotonic())
                if k % 10 == 9:
                    continue  # some decisions never get feedback
                self._feedback(
                    http, i, d["decision_id"], outcome_for(d["arm"]["id"], ctx, d["decision_id"])
                )

    def _feedback(self, http: httpx.Client, decided_on: int, did: str, outcome: Any) -> None:
        """Send to the replica after the deciding one; on failure try the next one (never
        the deciding replica while another is up); give up after FEEDBACK_RETRY_S."""
        deadline = time.monotonic() + FEEDBACK_RETRY_S
        attempt = 1
        while time.monotonic() < deadline:
            live = self.cl.live()
            others = [(i, u) for i, u in live if i != decided_on] or live
            if not others:
                time.sleep(0.1)
                continue
            i, url = min(others, key=lambda p: (p[0] - decided_on - attempt) % len(self.cl.urls))
            try:
                r = self._call(http, i, url, "feedback", {"decision_id": did, "outcome": outcome})
            except Refused:
                return  # recorded as unexpected: the test fails
            if r is not None:
                assert r["decision_id"] == did
                with self._lock:
                    if r["duplicate"]:
                        self.duplicates += 1
                    previous = self.acked.setdefault(did, float(r["reward"]))
                    self.acked_on.setdefault(did, (i, self.phase, time.monotonic()))
                if previous != float(r["reward"]):
                    self.unexpected.append(f"{did}: reward {r['reward']} after {previous}")
                return
            attempt += 1
            time.sleep(0.05 if self._stop.is_set() else 0.1)


# ----------------------------------------------------------------------- reading the replicas
def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not in /metrics"
    return float(m.group(1))


def settle(cl: Cluster, http: httpx.Client, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until every replica is ready, applied the whole shared log and counts the same
    feedbacks (twice in a row); returns the last readings."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    agreed = 0
    while time.monotonic() < deadline:
        try:
            ready = [http.get(f"{u}/readyz").status_code for _, u in cl.live()]
            texts = [http.get(f"{u}/metrics").text for _, u in cl.live()]
            counts = [http.get(f"{u}/v1/arms").json()["feedbacks"] for _, u in cl.live()]
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        applied = [metric(t, "routewise_replication_applied_seq") for t in texts]
        heads = [metric(t, "routewise_replication_head_seq") for t in texts]
        last = {"ready": ready, "applied": applied, "heads": heads, "feedbacks": counts}
        same = ready == [200] * 3 and len(set(applied)) == 1 and applied[0] == max(heads)
        agreed = agreed + 1 if same and len(set(counts)) == 1 else 0
        if agreed >= 2:
            return last
        time.sleep(0.2)
    raise AssertionError(f"the replicas did not converge in {timeout} s: {last}\n{cl.logs()}")


def rankings(http: httpx.Client, url: str) -> list[list[tuple[str, float, float]]]:
    out = []
    for ctx in FIXED_CONTEXTS:
        r = http.get(f"{url}/v1/policy", params={"context": json.dumps(ctx)})
        assert r.status_code == 200, r.text
        out.append(
            [(a["arm"]["id"], a["expected_reward"], a["uncertainty"]) for a in r.json()["arms"]]
        )
    return out


def assert_same_rankings(a: list[list[Any]], b: list[list[Any]], who: str) -> None:
    for ctx, ra, rb in zip(FIXED_CONTEXTS, a, b, strict=True):
        assert [x[0] for x in ra] == [x[0] for x in rb], f"{who}: arm order differs for {ctx}"
        for (arm, m_a, u_a), (_, m_b, u_b) in zip(ra, rb, strict=True):
            assert m_a == pytest.approx(m_b, rel=REL_TOL, abs=1e-12), f"{who} {arm} {ctx}"
            assert u_a == pytest.approx(u_b, rel=REL_TOL, abs=1e-12), f"{who} {arm} {ctx}"


def read_trace(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    with http.stream("GET", f"{url}/v1/trace") as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line.strip()]


# -------------------------------------------------------------------------------- the tests
def kill_9_and_restart(cl: Cluster, load: Load, i: int, timings: dict[str, float]) -> None:
    """kill -9 replica ``i`` under load; the others go on; restart it (on a new port)."""
    load.phase = "kill-9"
    cl.kill(i)
    load.wait_acked(len(load.acked) + STEP_ACKS // 2, f"with replica {i} down")
    t = time.monotonic()
    cl.start(i)
    timings["replica_restart_s"] = time.monotonic() - t
    load.phase = "replica-restarted"
    load.wait_acked(len(load.acked) + STEP_ACKS, f"after replica {i} restarted")
    assert load.first_ok_after(t, i) is not None, "the restarted replica served nothing"


def restart_postgres(pg: tuple[str, str, int], load: Load, timings: dict[str, float]) -> None:
    """Restart PostgreSQL under load: the sidecars must recover by themselves."""
    load.phase = "pg-restart"
    t0 = time.monotonic()
    pg_ctl(pg, "restart")
    t1 = time.monotonic()
    timings["pg_restart_s"] = t1 - t0
    load.phase = "pg-back"
    deadline = t1 + 30
    firsts: list[float | None] = [None] * len(load.cl.urls)
    while None in firsts and time.monotonic() < deadline:
        firsts = [load.first_ok_after(t1, i) for i in range(len(firsts))]
        time.sleep(0.02)
    assert None not in firsts, f"not every replica recovered: {firsts}\n{load.cl.logs()}"
    timings["recovery_s"] = max(f for f in firsts if f is not None) - t1
    failed = [t for t in load.fail_times if t >= t0]
    timings["failing_window_s"] = (max(failed) - min(failed)) if failed else 0.0
    load.wait_acked(len(load.acked) + STEP_ACKS, "after the PostgreSQL restart")


def stop_postgres_for_a_while(
    pg: tuple[str, str, int], load: Load, timings: dict[str, float], down_s: float = 2.0
) -> None:
    """Stop PostgreSQL under load, keep it down ``down_s`` (every replica's ``/readyz`` says
    503 and requests fail with 503, not hang), start it: the sidecars recover by themselves."""
    load.phase = "pg-down"
    t0 = time.monotonic()
    pg_ctl(pg, "stop")
    timings["pg_stop_s"] = time.monotonic() - t0
    not_ready: set[int] = set()
    with httpx.Client(timeout=30) as http:
        while time.monotonic() - t0 < down_s or len(not_ready) < len(load.cl.urls):
            assert time.monotonic() - t0 < 30, f"/readyz stayed 200 on {not_ready}"
            for i, u in load.cl.live():
                if i not in not_ready and http.get(f"{u}/readyz").status_code == 503:
                    not_ready.add(i)
            time.sleep(0.05)
    timings["readyz_503_after_s"] = time.monotonic() - t0
    load.phase = "pg-starting"
    t1 = time.monotonic()
    pg_ctl(pg, "start")
    t2 = time.monotonic()
    timings["pg_start_s"] = t2 - t1
    load.phase = "pg-started"
    deadline = t2 + 30
    firsts: list[float | None] = [None] * len(load.cl.urls)
    while None in firsts and time.monotonic() < deadline:
        firsts = [load.first_ok_after(t2, i) for i in range(len(firsts))]
        time.sleep(0.02)
    assert None not in firsts, f"not every replica recovered: {firsts}\n{load.cl.logs()}"
    timings["pg_down_s"] = t2 - t0
    timings["recovery_after_start_s"] = max(f for f in firsts if f is not None) - t2
    load.wait_acked(len(load.acked) + STEP_ACKS // 2, "after PostgreSQL came back")


def check_trace(trace: list[dict[str, Any]], load: Load) -> dict[str, Any]:
    """Every acknowledged feedback is in the shared trace exactly once, with its reward."""
    acked = load.acked
    ids = [line["decision_id"] for line in trace]
    assert len(ids) == len(set(ids)), "a decision appears twice in the trace"
    rewards = {line["decision_id"]: line.get("reward") for line in trace}
    missing = [d for d in acked if d not in rewards]
    assert not missing, f"{len(missing)} acknowledged feedbacks not in the trace: {missing[:5]}"
    wrong = {d: (r, rewards[d]) for d, r in acked.items() if rewards[d] != r}
    assert not wrong, (
        f"{len(wrong)} rewards differ from the acknowledged ones: {list(wrong.items())[:5]}; "
        f"decided (replica, phase, t) {[load.decided.get(d) for d in wrong][:5]}, "
        f"feedback acknowledged {[load.acked_on.get(d) for d in wrong][:5]}, "
        f"phase times {load.phase_times}\n{load.cl.problems()}"
    )
    return rewards


def test_three_replicas_learn_as_one_through_kill_9_and_a_postgres_restart(
    cluster: Cluster, pg_url: str
) -> None:
    pg = pg_cluster(pg_url)
    cl = cluster
    started = time.monotonic()
    cl.start(0)  # the first one creates the tables; the others join
    cl.start(1, 2)
    load = Load(cl)
    timings: dict[str, float] = {}
    marks: dict[str, int] = {}
    try:
        load.start()
        load.wait_acked(STEP_ACKS, "warm-up")
        marks["warm-up"] = len(load.acked)
        kill_9_and_restart(cl, load, 1, timings)
        marks["kill -9 + restart"] = len(load.acked)
        restart_postgres(pg, load, timings)
        marks["PostgreSQL restart"] = len(load.acked)
        stop_postgres_for_a_while(pg, load, timings)
        marks["PostgreSQL down and up"] = len(load.acked)
        load.phase = "stopping"
    finally:
        load.stop()
        pg_ensure_up(pg)

    with httpx.Client(headers=AUTH, timeout=30) as http:
        readings = settle(cl, http)
        trace = read_trace(http, cl.urls[0] or "")
    stored = {line["decision_id"] for line in trace}
    assert not load.unexpected, load.report_unexpected(stored)
    with httpx.Client(headers=AUTH, timeout=30) as http:
        policies = [rankings(http, u) for _, u in cl.live()]
        statuses = [http.get(f"{u}/v1/arms").json() for _, u in cl.live()]

    store = PostgresStore(pg_url, read_only=True)
    try:
        snapshot = store.latest_snapshot()  # snapshot_every = 200: the leader took some
    finally:
        store.close()
    assert snapshot is not None and snapshot[0] > 0
    rewards = check_trace(trace, load)
    with_reward = sum(1 for r in rewards.values() if r is not None)
    for st in statuses:  # every replica learned every stored decision and feedback once
        assert (st["decisions"], st["feedbacks"]) == (len(trace), with_reward), st

    # every replica ranks the arms the same for 20 fixed contexts
    assert len(policies) == 3
    assert_same_rankings(policies[0], policies[1], "replicas 0 and 1 (restarted)")
    assert_same_rankings(policies[0], policies[2], "replicas 0 and 2")

    assert cl.stop_all() == [0, 0, 0], cl.logs()  # and they stop cleanly
    pg_503 = Counter(k[0] for k, v in load.failures.items() for _ in range(v) if k[2] == "503")
    rounded = {k: round(v, 3) for k, v in timings.items()}
    slowest = {k: round(v, 3) for k, v in load.slowest.items()}
    print(
        f"\nacknowledged feedbacks {len(load.acked)} (cumulative by phase {marks}; duplicates "
        f"on retry {load.duplicates}); trace lines {len(trace)} ({with_reward} with a reward)"
        f"\nsettled: {readings}; latest snapshot at seq {snapshot[0]}"
        f"\nfailures by (phase, verb, status): {dict(load.failures)}; 503s by phase {pg_503}"
        f"\ntimings (s): {rounded}\nslowest acknowledged request by phase (s): {slowest}"
        f"\ntest {time.monotonic() - started:.1f} s"
    )


def wait_state(cl: Cluster, http: httpx.Client, urls: list[str], arm: str, state: str) -> None:
    """Poll ``GET /v1/health`` on ``urls`` until each reports ``arm`` in ``state`` (10 s)."""
    t0 = time.perf_counter()
    pending = list(urls)
    while pending:
        r = http.get(f"{pending[0]}/v1/health")
        assert r.status_code == 200, r.text
        if r.json()["arms"][arm] == state:
            pending.pop(0)
            continue
        assert time.perf_counter() - t0 < 10, f"{arm} never became {state}\n{cl.logs()}"
        time.sleep(0.002)


def test_a_quarantine_reaches_the_other_replicas_within_a_second(cluster: Cluster) -> None:
    cl = cluster
    cl.start(0)
    cl.start(1, 2)
    urls = [u for _, u in cl.live()]
    seen: list[float] = []
    released: list[float] = []
    with httpx.Client(headers=AUTH, timeout=10) as http:
        for trial in range(20):
            a = trial % 3  # the replica the operator talks to
            arm = ARMS[trial % len(ARMS)]
            path = f"/v1/arms/{quote(arm, safe='')}"
            t0 = time.perf_counter()
            r = http.post(f"{urls[a]}{path}/quarantine")
            assert r.status_code == 200 and r.json()["state"] == "quarantined", r.text
            wait_state(cl, http, [u for j, u in enumerate(urls) if j != a], arm, "quarantined")
            seen.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = http.post(f"{urls[(a + 1) % 3]}{path}/release")  # released elsewhere
            assert r.status_code == 200 and r.json()["state"] == "healthy", r.text
            wait_state(cl, http, urls, arm, "healthy")
            released.append(time.perf_counter() - t0)
        events = http.get(f"{urls[2]}/v1/events").json()
    # each action is in the shared log once
    assert [(e["arm"], e["to"]) for e in events] == [
        (ARMS[t % len(ARMS)], s) for t in range(20) for s in ("quarantined", "healthy")
    ]
    ms = sorted(1000 * s for s in seen)
    print(
        f"\nquarantine seen by both other replicas (ms): p50 {statistics.median(ms):.1f}, "
        f"max (p99 of 20) {ms[-1]:.1f}, all {[round(x, 1) for x in ms]}; release seen by all "
        f"(ms): p50 {1000 * statistics.median(released):.1f}, max {1000 * max(released):.1f}"
    )
    assert max(seen) < 2.0, ms
    assert max(released) < 2.0, released
