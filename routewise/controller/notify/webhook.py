"""Delivering notices to one webhook: :class:`WebhookNotifier`, and the signature it sends.

Each delivery is a ``POST`` of the notice's JSON body (:meth:`Notice.to_dict
<routewise.controller.notify.base.Notice.to_dict>`) with the headers

* ``X-Routewise-Delivery``: the notice's stable id (the same on every attempt: dedupe on it);
* ``X-Routewise-Timestamp``: Unix seconds when this attempt was sent;
* ``X-Routewise-Signature``: ``sha256=<hex>``, the HMAC-SHA256 with the shared secret of
  ``f"{timestamp}.".encode() + body`` — the exact bytes sent (:func:`sign`, :func:`verify`);
* ``X-Routewise-Attempt``: 1 for the first attempt.

A 2xx answer delivers it. Connection errors, timeouts, 5xx and 429 are retried up to
``max_attempts`` attempts in all, after ``backoff_s``, doubling per retry with jitter, capped
at ``max_backoff_s`` (a ``Retry-After`` of seconds is honoured up to the cap); any other
answer (4xx, a redirect: it is not followed) fails it at once. One thread per webhook
delivers in order, so a receiver sees the transitions in the order they were recorded.

Never on the request path: the controller only appends the notice to a bounded queue (a full
queue drops it, counted — never waited for). Counted: ``delivered``, ``failed`` (attempted,
given up), ``dropped`` (never attempted: queue full, or still queued when :meth:`close`'s
time ran out), ``attempts``, ``retries`` and the events ``queued`` (waiting or in delivery) —
what ``/metrics`` exports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog
from pydantic import SecretStr, ValidationError

from routewise.config import WebhookSettings
from routewise.controller.notify.base import Notice
from routewise.errors import ConfigError

__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "WebhookStats", "sign", "verify"]

SIGNATURE_HEADER = "X-Routewise-Signature"

_log = structlog.get_logger("routewise")
_USER_AGENT = "routewise-webhook/1"

Verdict = Literal["delivered", "retry", "final"]


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Routewise-Signature`` value of ``body`` sent at ``timestamp``.

    Examples
    --------
    >>> body = b'{"id":"x"}'
    >>> mac = hmac.new(b"a-long-random-shared-secret", b"1700000000." + body, hashlib.sha256)
    >>> sign("a-long-random-shared-secret", "1700000000", body) == "sha256=" + mac.hexdigest()
    True
    """
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` signs ``body`` at ``timestamp`` with ``secret``, and the timestamp
    is within ``tolerance_s`` of ``now`` (a replayed old delivery fails). Constant time.

    Examples
    --------
    >>> body = b'{"id":"x"}'
    >>> sig = sign("a-long-random-shared-secret", "1700000000", body)
    >>> verify("a-long-random-shared-secret", "1700000000", body, sig, now=1700000010)
    True
    >>> verify("a-long-random-shared-secret", "1700000000", body + b" ", sig, now=1700000010)
    False
    >>> verify("a-long-random-shared-secret", "1700000000", body, sig, now=1700009999)
    False
    """
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True, slots=True)
class WebhookStats:
    """A webhook's counts since its notifier started (see the module docstring)."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0
    retries: int = 0
    queued: int = 0


def _checked(**fields: Any) -> WebhookSettings:
    """The settings of a notifier built with keywords (``ConfigError`` naming the field; the
    message never holds the secret or the URL)."""
    try:
        return WebhookSettings(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "webhook"
        raise ConfigError(field, err["msg"].removeprefix("Value error, ")) from None


class WebhookNotifier:
    """Delivers every notice it is given to one webhook, from a background thread (a
    :class:`~routewise.controller.notify.base.Listener`: attach it with
    ``Controller.subscribe``). Close it when done (:meth:`close`, or ``with``): it flushes
    the queue for at most ``timeout_s``.

    Parameters
    ----------
    url, secret, name, timeout_s, max_attempts, backoff_s, max_backoff_s, queue_size, events
        As in a ``[[webhooks]]`` table (:class:`~routewise.config.WebhookSettings`); a bad
        value is a :class:`~routewise.errors.ConfigError` naming the field.
    seed
        Seed of the retry jitter.

    Examples
    --------
    >>> import routewise as rw
    >>> from structlog.testing import capture_logs
    >>> ctl = rw.Controller(arms=["a:x/direct_emit", "b:y/direct_emit"], log_events=False)
    >>> with capture_logs() as logs:
    ...     with WebhookNotifier("http://127.0.0.1:9/hook", "a-long-random-shared-secret",
    ...                          max_attempts=1) as hook:  # nothing listens on port 9
    ...         ctl.subscribe(hook)
    ...         ctl.quarantine("a:x/direct_emit")
    ...         hook.flush(timeout_s=10.0)
    True
    >>> hook.stats().failed, hook.stats().attempts, logs[-1]["event"], logs[-1]["webhook"]
    (1, 1, 'webhook.failed', '127.0.0.1:9')
    >>> WebhookNotifier("http://127.0.0.1:9/hook", "a-long-random-shared-secret", max_attempts=0)
    Traceback (most recent call last):
    routewise.errors.ConfigError: max_attempts: Input should be greater than or equal to 1
    """

    def __init__(
        self,
        url: str,
        secret: str | SecretStr,
        *,
        name: str | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        queue_size: int = 1000,
        events: list[str] | None = None,
        seed: int | None = None,
    ) -> None:
        s = _checked(
            url=url,
            secret=secret,
            name=name,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            queue_size=queue_size,
            events=events,
        )
        self.settings = s
        self.name = s.label
        self.timeout_s = s.timeout_s
        self.max_attempts = s.max_attempts
        self.backoff_s = s.backoff_s
        self.max_backoff_s = s.max_backoff_s
        self.queue_size = s.queue_size
        self.events = None if s.events is None else frozenset(s.events)
        self.seed = seed
        self._key = s.secret.get_secret_value().encode()
        self._rng = random.Random(seed)
        self._queue: deque[Notice] = deque()
        self._inflight: Notice | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closing = False
        self._dropping = False
        self._counts = dict.fromkeys(("delivered", "failed", "dropped", "attempts", "retries"), 0)
        self._thread = threading.Thread(
            target=self._run, name=f"routewise-webhook-{self.name}", daemon=True
        )
        self._thread.start()

    @classmethod
    def from_settings(
        cls, settings: WebhookSettings, *, seed: int | None = None
    ) -> WebhookNotifier:
        """The notifier of one ``[[webhooks]]`` table."""
        return cls(**settings.model_dump(), seed=seed)

    # ------------------------------------------------------------ the request side
    def __call__(self, notice: Notice) -> None:
        """Queue ``notice`` for delivery (if the ``events`` filter lets it through); never
        waits: with the queue full, or the notifier closed, it is dropped and counted."""
        if self.events is not None and not notice.matches(self.events):
            return
        with self._cond:
            if not self._closing and len(self._queue) < self.queue_size:
                self._queue.append(notice)
                self._dropping = False
                self._cond.notify()
                return
            self._counts["dropped"] += 1
            first = not self._dropping
            self._dropping = True
        if first:  # once per run of drops (each one is counted)
            reason = "closed" if self._closing else "queue_full"
            _log.warning("webhook.dropped", webhook=self.name, reason=reason, delivery=notice.id)

    def stats(self) -> WebhookStats:
        """The counts so far (pure)."""
        with self._cond:
            queued = len(self._queue) + (self._inflight is not None)
            return WebhookStats(**self._counts, queued=queued)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued notice was delivered or given up, for at most
        ``timeout_s``; returns whether the queue is empty."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and self._inflight is None, timeout=timeout_s
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking notices, deliver what is queued for at most ``timeout_s`` seconds, then
        stop (a notice still queued is dropped and counted; a retry waiting is abandoned and
        counted as failed). Idempotent."""
        with self._cond:
            self._closing = True
        self.flush(timeout_s)
        self._stop.set()
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._counts["dropped"] += left
            self._cond.notify_all()
        if left:
            _log.warning("webhook.dropped", webhook=self.name, reason="shutdown", count=left)
        self._thread.join(timeout=0.5)  # an attempt in flight ends by its own timeout

    def __enter__(self) -> WebhookNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WebhookNotifier(name={self.name!r}, max_attempts={self.max_attempts})"

    # ------------------------------------------------------------ the delivery thread
    def _run(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(
            timeout=self.timeout_s,
            follow_redirects=False,
            limits=limits,
            headers={"user-agent": _USER_AGENT},
            trust_env=False,
        ) as client:
            while (notice := self._next()) is not None:
                try:
                    self._deliver(client, notice)
                except Exception as exc:  # a bug here must not end the deliveries
                    self._finish("failed", notice, type(exc).__name__, 0)
                finally:
                    with self._cond:
                        self._inflight = None
                        self._cond.notify_all()

    def _next(self) -> Notice | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._queue) or self._stop.is_set())
            if self._stop.is_set():
                return None
            self._inflight = self._queue.popleft()
            return self._inflight

    def _bump(self, counter: str) -> None:
        with self._cond:
            self._counts[counter] += 1

    def _deliver(self, client: httpx.Client, notice: Notice) -> None:
        body = json.dumps(notice.to_dict(), separators=(",", ":")).encode()
        delivery = notice.id
        outcome, retry_after = "", None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                delay = self._delay(attempt - 1, retry_after)
                _log.info(
                    "webhook.retry",
                    webhook=self.name,
                    delivery=delivery,
                    attempt=attempt,
                    after=outcome,
                    delay_s=round(delay, 3),
                )
                if self._stop.wait(delay):
                    self._finish("failed", notice, f"{outcome} (closed)", attempt - 1)
                    return
                self._bump("retries")
            self._bump("attempts")
            verdict, outcome, retry_after = self._post(client, body, delivery, attempt)
            if verdict != "retry":
                self._finish(
                    "delivered" if verdict == "delivered" else "failed", notice, outcome, attempt
                )
                return
        self._finish("failed", notice, outcome, self.max_attempts)

    def _post(
        self, client: httpx.Client, body: bytes, delivery: str, attempt: int
    ) -> tuple[Verdict, str, float | None]:
        """One attempt: the verdict, what happened (status or error class), ``Retry-After``."""
        ts = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-routewise-delivery": delivery,
            "x-routewise-timestamp": ts,
            SIGNATURE_HEADER: sign(self._key, ts, body),
            "x-routewise-attempt": str(attempt),
        }
        try:
            with client.stream("POST", self.settings.url, content=body, headers=headers) as r:
                status = r.status_code
                retry_after = r.headers.get("retry-after")
        except httpx.TimeoutException:
            return "retry", "timeout", None
        except httpx.TransportError as exc:
            return "retry", type(exc).__name__, None
        if 200 <= status < 300:
            return "delivered", str(status), None
        if status >= 500 or status == 429:
            return "retry", str(status), _seconds(retry_after)
        return "final", str(status), None

    def _delay(self, retry: int, retry_after: float | None) -> float:
        """Wait before retry number ``retry`` (1 first): exponential, jittered, capped."""
        cap = min(self.max_backoff_s, self.backoff_s * 2.0 ** min(retry - 1, 60))
        delay = cap / 2 + self._rng.uniform(0.0, cap / 2)
        if retry_after is not None:
            delay = min(self.max_backoff_s, max(delay, retry_after))
        return delay

    def _finish(self, result: str, notice: Notice, outcome: str, attempts: int) -> None:
        self._bump(result)
        ev = notice.event
        fields = {
            "webhook": self.name,
            "delivery": notice.id,
            "arm": ev.arm,
            "to_state": ev.to_state,
            "attempts": attempts,
            "outcome": outcome,
        }
        if result == "delivered":
            _log.info("webhook.delivered", **fields)
        else:
            _log.warning("webhook.failed", **fields)


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` of seconds (an HTTP date is ignored: the backoff applies)."""
    if retry_after is None:
        return None
    try:
        value = float(retry_after)
    except ValueError:
        return None
    return value if 0.0 <= value < float("inf") else None
