"""Telling the operators: every Guardian transition and operator action reaches the configured
webhooks once, signed, retried with backoff, never on the decide/feedback path; on a single
writer and across replicas on a shared PostgreSQL store; ``routewise serve`` wires
``[[webhooks]]`` and ``/metrics`` counts the deliveries; the example alerting rules name
metrics the sidecar really exports.

Every receiver is a real HTTP server on 127.0.0.1 (``http.server`` in a thread).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from test_server_subprocess import Daemon

import routewise as rw
from routewise.config import load_settings
from routewise.controller.notify import Notice, WebhookNotifier, verify

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "routewise-alerts.yml"
SECRET = "whsec-test-4f1c9a7be2d85c3a"
ARMS = rw.make_arms(["openai:gpt-5.4", "gemini:flash"], ["direct_emit", "local_reconstructed"])
IDS = [a.id for a in ARMS]
CTX = {"task": "extraction", "schema_depth": 2, "input_tokens": 800}


# ------------------------------------------------------------------------- the receiver
@dataclass
class Received:
    """One request the receiver got (every attempt, whatever it answered)."""

    delivery: str
    attempt: int
    timestamp: str
    signature: str
    body: bytes
    status: int

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        status = self.server.receiver.take(self.headers, body)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class Receiver:
    """A webhook receiver on 127.0.0.1: records every request and answers ``answer(request,
    n)`` (``n``: how many requests with this delivery id it has seen, this one included).
    With ``gate`` set to an unset Event, every request blocks until the gate opens."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer: Callable[[Received, int], int] = lambda r, n: 200
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/path-token-9d2e"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def take(self, headers: Any, body: bytes) -> int:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        rec = Received(
            headers["x-routewise-delivery"],
            int(headers["x-routewise-attempt"]),
            headers["x-routewise-timestamp"],
            headers["x-routewise-signature"],
            body,
            0,
        )
        with self._lock:
            n = 1 + sum(r.delivery == rec.delivery for r in self.received)
            rec.status = self.answer(rec, n)
            self.received.append(rec)
        return rec.status

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies answered 2xx, in the order they arrived."""
        with self._lock:
            return [r.json() for r in self.received if 200 <= r.status < 300]

    def wait_delivered(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(got := self.delivered()) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} deliveries arrived"
            time.sleep(0.01)
        return got

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rx = Receiver()
    yield rx
    rx.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _pair(
    ctl: rw.Controller,
    clock: Clock,
    arm: str | None = None,
    *,
    error: str | None = None,
    latency: float = 100.0,
) -> None:
    d = ctl.decide(CTX, arms=None if arm is None else [arm])
    outcome = rw.Outcome(valid=error is None, latency_ms=latency, cost_usd=0.0, error=error)
    ctl.feedback(d.decision_id, outcome)
    clock.t += 1.0


def _until(ctl: rw.Controller, arm: str, state: str, step: Callable[[], None], n: int) -> None:
    for _ in range(n):
        if ctl.health()[arm] == state:
            return
        step()
    assert ctl.health()[arm] == state, (arm, ctl.health(), ctl.events())


def _key(e: dict[str, Any] | rw.GuardianEvent) -> dict[str, Any]:
    """An event's JSON form (a delivered body holds it, plus the delivery fields)."""
    d = e.to_dict() if isinstance(e, rw.GuardianEvent) else e
    return rw.GuardianEvent.from_dict(d).to_dict()


# ----------------------------------------------------- 1. degradation and recovery, once each
def test_every_transition_of_a_degradation_and_recovery_is_delivered_once(
    receiver: Receiver,
) -> None:
    first: list[str] = []

    def answer(r: Received, n: int) -> int:  # the first event: 500, 500, then 200
        if not first:
            first.append(r.delivery)
        return 500 if r.delivery == first[0] and n <= 2 else 200

    receiver.answer = answer
    clock = Clock()
    guardian = rw.Guardian(min_samples=30, cooldown_s=60.0, probe_n=10)
    ctl = rw.Controller(arms=ARMS, seed=0, clock=clock, guardian=guardian, log_events=False)
    hook = WebhookNotifier(receiver.url, SECRET, backoff_s=0.02, max_backoff_s=0.1, seed=1)
    ctl.subscribe(hook)
    bad, other = IDS[0], IDS[1]
    rng = np.random.default_rng(0)
    for _ in range(400):  # healthy traffic on every arm
        _pair(ctl, clock, latency=100.0 * float(rng.lognormal(0, 0.1)))
    assert ctl.events() == []
    _until(ctl, bad, "quarantined", lambda: _pair(ctl, clock, bad, error="rate_limited"), 20)
    clock.t += 61.0
    ctl.tick()  # cooldown over: probing
    _until(ctl, bad, "quarantined", lambda: _pair(ctl, clock, bad, error="rate_limited"), 20)
    clock.t += 121.0  # the cooldown doubled
    ctl.tick()
    _until(ctl, bad, "healthy", lambda: _pair(ctl, clock, bad), 40)  # recovered
    ctl.pin(other)
    _pair(ctl, clock)
    ctl.release(other)

    events = ctl.events()
    reasons = [e.reason.split(":")[0] for e in events]
    assert reasons == [
        "error_burst",
        "cooldown_elapsed",
        "probe_failed",
        "cooldown_elapsed",
        "probe_passed",
        "operator_pin",
        "operator_release",
    ]
    assert hook.flush(timeout_s=30.0)
    bodies = receiver.delivered()
    # every transition exactly once, in the order recorded, with its fields
    assert [_key(b) for b in bodies] == [_key(e) for e in events]
    assert len({b["id"] for b in bodies}) == len(events)
    assert [b["seq"] for b in bodies] == sorted(b["seq"] for b in bodies)
    assert {b["source"] for b in bodies} == {"guardian", "operator"}
    assert all(b["type"] == "routewise.guardian.transition" and b["origin"] is None for b in bodies)
    # the first event: two 500s, then delivered, under one delivery id
    attempts = [(r.attempt, r.status) for r in receiver.received if r.delivery == first[0]]
    assert attempts == [(1, 500), (2, 500), (3, 200)]
    assert all(r.delivery == r.json()["id"] for r in receiver.received)
    # each request is signed over the exact bytes sent; a wrong secret or body does not verify
    for r in receiver.received:
        assert verify(SECRET, r.timestamp, r.body, r.signature)
        assert not verify(SECRET + "x", r.timestamp, r.body, r.signature)
        assert not verify(SECRET, r.timestamp, r.body + b" ", r.signature)
    st = hook.stats()
    assert (st.delivered, st.failed, st.dropped, st.queued) == (len(events), 0, 0, 0)
    assert (st.attempts, st.retries) == (len(events) + 2, 2)
    hook.close()
    ctl.close()


def test_readme_verification_snippet_verifies_a_real_delivery(receiver: Receiver) -> None:
    """The five lines of the README's "Webhooks and alerts" section, run on a real request."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Webhooks and alerts", 1)[1]
    snippet = re.search(r"```python\n(import hashlib.*?)```", section, re.S)
    assert snippet is not None, "the README's verification snippet"
    with WebhookNotifier(receiver.url, SECRET) as hook:
        hook(Notice(rw.GuardianEvent(1.0, IDS[0], "healthy", "quarantined", "latency"), 1))
        (body,) = receiver.wait_delivered(1)
    r = receiver.received[0]
    headers = {
        "X-Routewise-Timestamp": r.timestamp,
        "X-Routewise-Signature": r.signature,
    }
    scope: dict[str, Any] = {"secret": SECRET.encode(), "body": r.body, "headers": headers}
    exec(snippet.group(1), scope)
    assert scope["ok"] is True
    scope.update(body=r.body + b"x")
    exec(snippet.group(1), scope)
    assert scope["ok"] is False
    assert body["arm"] == IDS[0]


def test_retries_back_off_on_5xx_429_and_errors_but_not_on_other_4xx(receiver: Receiver) -> None:
    plan = {"a": [503, 429, 200], "b": [400], "c": [500, 500, 500]}

    def answer(r: Received, n: int) -> int:
        arm = json.loads(r.body)["arm"]
        return plan[arm][n - 1]

    receiver.answer = answer
    hook = WebhookNotifier(receiver.url, SECRET, max_attempts=3, backoff_s=0.01, max_backoff_s=0.02)
    for seq, arm in enumerate(("a", "b", "c"), 1):
        hook(Notice(rw.GuardianEvent(float(seq), arm, "healthy", "quarantined", "latency"), seq))
    assert hook.flush(timeout_s=20.0)
    got = [(json.loads(r.body)["arm"], r.attempt, r.status) for r in receiver.received]
    assert got == [
        ("a", 1, 503),
        ("a", 2, 429),
        ("a", 3, 200),
        ("b", 1, 400),  # a 4xx other than 429: given up at once
        ("c", 1, 500),
        ("c", 2, 500),
        ("c", 3, 500),  # max_attempts
    ]
    st = hook.stats()
    assert (st.delivered, st.failed, st.attempts, st.retries) == (1, 2, 7, 4)
    hook.close()
    # nothing listens: connection errors are retried, then counted as failed
    port = _free_port()
    dead = WebhookNotifier(f"http://127.0.0.1:{port}/x", SECRET, max_attempts=2, backoff_s=0.01)
    dead(Notice(rw.GuardianEvent(1.0, "a", "healthy", "quarantined", "latency"), 1))
    assert dead.flush(timeout_s=20.0)
    assert (dead.stats().failed, dead.stats().attempts) == (1, 2)
    dead.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    hook = WebhookNotifier("http://127.0.0.1:9/x", SECRET, backoff_s=1.0, max_backoff_s=8.0, seed=3)
    delays = [[hook._delay(k, None) for k in range(1, 7)] for _ in range(50)]
    for row in delays:
        for k, d in enumerate(row, 1):
            cap = min(8.0, 2.0 ** (k - 1))
            assert cap / 2 <= d <= cap
    assert len({round(row[0], 9) for row in delays}) > 1  # jittered
    assert hook._delay(1, 5.0) == 5.0 and hook._delay(1, 60.0) == 8.0  # Retry-After, capped
    hook.close()


def test_the_events_filter_and_a_failing_listener() -> None:
    seen: list[Notice] = []
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False)

    def broken(notice: Notice) -> None:
        raise RuntimeError("listener bug")

    ctl.subscribe(broken)
    ctl.subscribe(seen.append)
    ctl.subscribe(seen.append)  # twice: once
    with capture_logs() as logs:
        ctl.pin(IDS[0])  # a failing listener never fails the action
    assert [e["event"] for e in logs] == ["listener.failed"]
    ctl.unsubscribe(broken)
    ctl.release(IDS[0])
    assert [(n.seq, n.event.reason) for n in seen] == [(1, "operator_pin"), (2, "operator_release")]
    only = ["quarantined"]
    assert [n.matches(only) for n in seen] == [False, False]
    q = Notice(rw.GuardianEvent(1.0, "a", "probing", "quarantined", "probe_failed:latency"), 3)
    assert q.matches(only) and q.matches(["probe_failed"]) and q.matches(["latency"])
    assert not q.matches(["operator", "pinned"])
    cap = Notice(rw.GuardianEvent(1.0, "a", "healthy", "healthy", "error_burst:cap_reached"), 4)
    assert cap.matches(["cap_reached"]) and not cap.matches(only)
    ctl.close()


def test_restart_replay_notifies_nothing_and_ids_stay_distinct(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    seen: list[Notice] = []
    with rw.Controller(arms=ARMS, store=db, seed=0, log_events=False) as ctl:
        ctl.subscribe(seen.append)
        ctl.quarantine(IDS[0])
    with rw.Controller(store=db, log_events=False) as ctl:  # replays the quarantine
        ctl.subscribe(seen.append)
        assert seen[1:] == []
        ctl.release(IDS[0])
    assert [n.event.reason for n in seen] == ["operator_quarantine", "operator_release"]
    assert seen[0].id != seen[1].id and seen[1].seq > seen[0].seq


# ------------------------------------------------ 2. a hanging receiver never slows decide
def test_decide_and_feedback_complete_while_the_receiver_hangs(receiver: Receiver) -> None:
    receiver.gate = threading.Event()  # every request blocks until the test ends
    ctl = rw.Controller(arms=ARMS, seed=0, log_events=False)
    hook = WebhookNotifier(receiver.url, SECRET, timeout_s=120.0, queue_size=8)
    ctl.subscribe(hook)
    done: list[int] = []
    failed: list[BaseException] = []

    def traffic() -> None:  # everything that touches the controller runs here, watched
        try:
            ctl.quarantine(IDS[3])
            assert receiver.entered.wait(20.0), "the first delivery never reached the receiver"
            for i in range(2000):
                d = ctl.decide(CTX)
                ctl.feedback(d.decision_id, rw.Outcome(True, 120.0, 0.0))
                if i % 50 == 0:  # transitions keep coming: 80 more events, the queue holds 8
                    ctl.pin(IDS[1])
                    ctl.release(IDS[1])
                done.append(i)
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    worker.join(timeout=120.0)  # a watchdog only: the assertions below are structural
    assert not worker.is_alive(), f"decide/feedback blocked after {len(done)} pairs"
    assert not failed, failed
    # all 2,000 pairs finished while the receiver was still blocked on its first request,
    # with events undelivered: queued up to the bound, the rest dropped and counted
    assert len(done) == 2000
    assert not receiver.gate.is_set() and receiver.received == []
    st = hook.stats()
    assert st.delivered == 0 and st.queued == 9  # 8 queued + 1 in flight
    assert st.dropped == 1 + 80 - 9
    receiver.gate.set()
    assert hook.flush(timeout_s=30.0)
    assert hook.stats().delivered == 9
    hook.close()
    ctl.close()


def test_close_is_bounded_and_counts_what_it_could_not_deliver(receiver: Receiver) -> None:
    receiver.gate = threading.Event()
    hook = WebhookNotifier(receiver.url, SECRET, timeout_s=120.0)
    for seq in range(1, 4):
        hook(Notice(rw.GuardianEvent(float(seq), "a", "healthy", "quarantined", "latency"), seq))
    assert receiver.entered.wait(20.0)
    with capture_logs() as logs:
        hook.close(timeout_s=0.2)  # returns although the receiver never answers
    assert hook.stats().dropped == 2  # the two still queued; the one in flight is not waited for
    assert [e["reason"] for e in logs if e["event"] == "webhook.dropped"] == ["shutdown"]
    hook(Notice(rw.GuardianEvent(9.0, "a", "healthy", "quarantined", "latency"), 9))
    assert hook.stats().dropped == 3  # closed: dropped, counted


# ------------------------------------------------ 3. bad configuration; the secret stays secret
@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('url = "example.com/hook"', "webhooks.0.url"),
        ('url = "ftp://example.com/hook"', "webhooks.0.url"),
        ('url = "http:///hook"', "webhooks.0.url"),
        ("max_attempts = -1", "webhooks.0.max_attempts"),
        ("max_attempts = 0", "webhooks.0.max_attempts"),
        ("timeout_s = 0", "webhooks.0.timeout_s"),
        ("backoff_s = -0.5", "webhooks.0.backoff_s"),
        ("backoff_s = 10.0\nmax_backoff_s = 1.0", "webhooks.0.max_backoff_s"),
        ("queue_size = 0", "webhooks.0.queue_size"),
        ("events = []", "webhooks.0.events"),
        ('name = "has space"', "webhooks.0.name"),
        ('colour = "red"', "webhooks.0.colour"),
    ],
)
def test_bad_webhook_config_names_the_field(tmp_path: Path, table: str, field: str) -> None:
    lines = {"url": 'url = "https://ops.example.com/hook"', "secret": f'secret = "{SECRET}"'}
    key = table.split("=", 1)[0].strip()
    lines[key] = table
    cfg = tmp_path / "routewise.toml"
    cfg.write_text("[[webhooks]]\n" + "\n".join(lines.values()) + "\n")
    with pytest.raises(rw.ConfigError) as ei:
        load_settings(cfg)
    assert ei.value.field == field
    assert SECRET not in str(ei.value)


def test_secret_and_duplicate_names_are_named_without_echoing_values(tmp_path: Path) -> None:
    cfg = tmp_path / "routewise.toml"
    cfg.write_text('[[webhooks]]\nurl = "https://ops.example.com/hook"\nsecret = "tiny-secret"\n')
    with pytest.raises(rw.ConfigError) as ei:
        load_settings(cfg)
    assert ei.value.field == "webhooks.0.secret" and "tiny-secret" not in str(ei.value)
    cfg.write_text('[[webhooks]]\nurl = "https://ops.example.com/hook"\n')
    with pytest.raises(rw.ConfigError) as ei:
        load_settings(cfg)
    assert ei.value.field == "webhooks.0.secret"
    hook = f'[[webhooks]]\nurl = "https://ops.example.com/hook/tok-77c1"\nsecret = "{SECRET}"\n'
    cfg.write_text(hook + hook.replace("tok-77c1", "tok-88d2"))
    with pytest.raises(rw.ConfigError) as ei:
        load_settings(cfg)
    assert ei.value.field == "webhooks" and "webhooks.1.name" in str(ei.value)
    assert "tok-77c1" not in str(ei.value) and SECRET not in str(ei.value)
    cfg.write_text(hook.replace("[[webhooks]]", '[[webhooks]]\nname = "ops"') + hook)
    s = load_settings(cfg)
    assert [w.label for w in s.webhooks] == ["ops", "ops.example.com"]
    assert SECRET not in repr(s) and "tok-77c1" not in repr(s)
    # the library's keyword form gives the same errors, field by field
    for kwargs, field in [
        ({"url": "ops.example.com"}, "url"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"secret": "short"}, "secret"),
    ]:
        args: dict[str, Any] = {"url": "https://ops.example.com/hook", "secret": SECRET, **kwargs}
        with pytest.raises(rw.ConfigError) as ei:
            WebhookNotifier(**args)
        assert ei.value.field == field and "short" not in str(ei.value)


def test_the_secret_and_the_url_never_reach_the_logs(receiver: Receiver) -> None:
    receiver.answer = lambda r, n: 500 if n == 1 else 403
    clock = Clock()
    with capture_logs() as logs:
        ctl = rw.Controller(arms=ARMS, seed=0, clock=clock, log_decisions=True)
        hook = WebhookNotifier(receiver.url, SECRET, backoff_s=0.01, max_attempts=3)
        ctl.subscribe(hook)
        ctl.quarantine(IDS[0])
        _pair(ctl, clock)
        assert hook.flush(timeout_s=20.0)
        hook.close()
        ctl.close()
    events = [e["event"] for e in logs]
    assert "webhook.retry" in events and "webhook.failed" in events
    text = repr(logs) + repr(hook) + repr(hook.settings)
    assert SECRET not in text and "path-token-9d2e" not in text


# ------------------------------------------------ 4. the sidecar: config → delivery → /metrics
TOKEN = "webhook-sidecar-token-5a0b"


@dataclass
class SidecarRun:
    metrics: str
    bodies: list[dict[str, Any]]
    lines: list[str]
    code: int


@pytest.fixture(scope="module")
def sidecar_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarRun]:
    """A sidecar with ``[[webhooks]]``: a decide + feedback (an error outcome), an operator
    quarantine through the HTTP API, then its ``/metrics`` and a SIGTERM."""
    tmp = tmp_path_factory.mktemp("sidecar")
    rx = Receiver()
    cfg = tmp / "routewise.toml"
    cfg.write_text(
        f'arms = {json.dumps(IDS)}\ndb = "{tmp / "s.db"}"\ntoken = "{TOKEN}"\nseed = 0\n'
        f'[[webhooks]]\nname = "ops"\nurl = "{rx.url}"\nsecret = "{SECRET}"\nbackoff_s = 0.05\n'
    )
    daemon = Daemon(tmp, "--config", str(cfg))  # the suite's `routewise serve` harness
    try:
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=daemon.url, headers=auth, timeout=30) as client:
            d = client.post("/v1/decide", json={"context": CTX}).json()
            outcome = {"valid": False, "latency_ms": 900.0, "cost_usd": 0.0, "error": "timeout"}
            fb = client.post(
                "/v1/feedback", json={"decision_id": d["decision_id"], "outcome": outcome}
            )
            assert fb.status_code == 200, fb.text
            q = client.post(f"/v1/arms/{IDS[2]}/quarantine")
            assert q.status_code == 200 and q.json()["state"] == "quarantined", q.text
            bodies = rx.wait_delivered(1)
            deadline = time.monotonic() + 10
            while True:  # the counter moves right after the receiver answered
                metrics = client.get("/metrics").text
                if _sample(metrics, "routewise_webhook_deliveries_total", result="delivered"):
                    break
                assert time.monotonic() < deadline, metrics
                time.sleep(0.02)
        code = daemon.stop(signal.SIGTERM)
        yield SidecarRun(metrics, bodies, daemon.lines, code)
    finally:
        daemon.stop(signal.SIGTERM)
        rx.close()


def _samples(metrics: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    ]


def _sample(metrics: str, name: str, **labels: str) -> float | None:
    for n, lab, value in _samples(metrics):
        if n == name and all(lab.get(k) == v for k, v in labels.items()):
            return value
    return None


def test_a_sidecar_delivers_an_operator_quarantine_and_counts_it(sidecar_run: SidecarRun) -> None:
    (body,) = sidecar_run.bodies
    assert (body["arm"], body["to"], body["reason"], body["source"]) == (
        IDS[2],
        "quarantined",
        "operator_quarantine",
        "operator",
    )
    m = sidecar_run.metrics
    assert _sample(m, "routewise_webhook_deliveries_total", webhook="ops", result="delivered") == 1
    assert _sample(m, "routewise_webhook_deliveries_total", webhook="ops", result="dropped") == 0
    assert _sample(m, "routewise_webhook_attempts_total", webhook="ops") == 1
    assert _sample(m, "routewise_webhook_retries_total", webhook="ops") == 0
    assert _sample(m, "routewise_webhook_queue_depth", webhook="ops") == 0
    assert _sample(m, "routewise_outcome_errors_total", arm=IDS[0]) is not None
    assert sum(v for n, _, v in _samples(m) if n == "routewise_outcome_errors_total") == 1
    assert sidecar_run.code == 0
    logged = [json.loads(x) for x in sidecar_run.lines if x.startswith("{")]
    listening = next(e for e in logged if e["event"] == "serve.listening")
    assert listening["webhooks"] == ["ops"]
    assert any(e["event"] == "webhook.delivered" for e in logged)
    assert not any(SECRET in x or "path-token-9d2e" in x for x in sidecar_run.lines)


_SELECTOR = re.compile(r"\b(routewise_[a-z0-9_]+)\b(?:\{([^}]*)\})?")


def test_the_alerting_rules_parse_and_name_metrics_the_sidecar_exports(
    sidecar_run: SidecarRun,
) -> None:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"RoutewiseArmQuarantined", "RoutewiseArmErrorBurst"} <= names
    exported: dict[str, set[str]] = {}
    for name, labels, _ in _samples(sidecar_run.metrics):
        exported.setdefault(name, set()).update(labels)
    used = 0
    for rule in rules:
        assert rule["labels"]["severity"] in ("page", "ticket", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        for metric, matchers in _SELECTOR.findall(rule["expr"]):
            used += 1
            assert metric in exported, f"{rule['alert']}: {metric} is not in /metrics"
            for key in re.findall(r"(\w+)\s*[=!]~?", matchers):
                assert key in exported[metric], f"{rule['alert']}: {metric} has no label {key}"
    assert used >= len(rules)


# ------------------------------------------------ 5. replicas on a shared PostgreSQL store
def _settle(*ctls: rw.Controller, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    head = max(c.store.max_seq() for c in ctls)
    while not all((c.replication() or {})["applied_seq"] >= head for c in ctls):
        assert time.monotonic() < deadline, [c.replication() for c in ctls]
        time.sleep(0.01)


def test_replicas_deliver_each_transition_once(pg_url: str, receiver: Receiver) -> None:
    """Two replicas on one database, each with its own notifier to one receiver: an operator
    action on either, and a Guardian trip that both replicas' Guardians make from the shared
    log (the store keeps one copy), each reach the receiver once — from the replica whose
    record the store kept."""
    from routewise.state.postgres import PostgresStore

    ctls = [rw.Controller(arms=IDS, store=PostgresStore(pg_url), seed=3) for _ in range(2)]
    hooks = [WebhookNotifier(receiver.url, SECRET, name=f"r{i}") for i in range(2)]
    for ctl, hook in zip(ctls, hooks, strict=True):
        ctl.subscribe(hook)
    a, b = ctls
    origin = {id(c): (c.replication() or {}).get("origin") for c in ctls}
    bad = IDS[3]
    try:
        with capture_logs() as logs:
            a.quarantine(IDS[0])
            b.release(IDS[0])
            for i in range(2000):  # the bad arm starts failing after 60 requests
                d = (a, b)[i % 2].decide(CTX, arms=[bad] if i % 3 == 0 else None)
                late = i > 60 and d.arm.id == bad
                outcome = rw.Outcome(not late, 200.0, 0.0, error="timeout" if late else None)
                (b, a)[i % 2].feedback(d.decision_id, outcome)
                if i % 25 == 0:
                    _settle(a, b)
                    if a.health()[bad] == b.health()[bad] == "quarantined":
                        break
            _settle(a, b)
        assert a.health()[bad] == "quarantined", "the Guardian never quarantined the failing arm"
        trips = [e for e in logs if e["event"] == "guardian.transition" and e["arm"] == bad]
        assert {e["replica"] for e in trips} == set(origin.values())  # both made the trip
        for hook in hooks:
            assert hook.flush(timeout_s=20.0)
        events = a.events()
        assert [(e.arm, e.reason) for e in events] == [
            (IDS[0], "operator_quarantine"),
            (IDS[0], "operator_release"),
            (bad, "error_burst"),
        ]
        bodies = sorted(receiver.delivered(), key=lambda x: x["seq"])
        assert [_key(x) for x in bodies] == [_key(e) for e in events]  # each exactly once
        assert bodies[0]["origin"] == origin[id(a)] and bodies[1]["origin"] == origin[id(b)]
        assert bodies[2]["origin"] in origin.values()
        assert [r.status for r in receiver.received] == [200, 200, 200]
        assert sum(h.stats().delivered for h in hooks) == 3
    finally:
        for ctl in ctls:
            ctl.close()
            ctl.store.close()
        for hook in hooks:
            hook.close()
