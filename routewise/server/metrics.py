"""Prometheus metrics of the sidecar (``GET /metrics``).

Counters and histograms are observed as requests are answered (HTTP requests and latency by
route, decisions, feedback, rewards, error classes); gauges and the Guardian's transition
counts are read from the controller at scrape time, so they survive restarts; so are the
hits of the memory bounds (``routewise_bound_hits_total{bound=…}``, counted since the process
started); so are the webhook deliveries of the notifiers subscribed to the controller
(``routewise_webhook_deliveries_total{webhook, result}``, attempts, retries, queue depth:
:mod:`~routewise.controller.notify.webhook`). Each app has its own registry (never the global
one). ``deploy/prometheus/routewise-alerts.yml`` holds example alerting rules over these names.

Every label value comes from a bounded set, never from request input: ``arm`` from the
controller's arms, ``route`` from the route templates (``other`` for none), ``method`` from
the HTTP methods (``other`` for the rest), ``status`` from the status codes the app answers,
``error`` from the error classes, ``bound`` from the bounds, ``webhook`` from the configured
webhooks' names, ``result`` from delivered / failed / dropped.

Examples
--------
>>> import routewise as rw
>>> from prometheus_client import CollectorRegistry
>>> ctl = rw.Controller(arms=["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"], seed=0)
>>> metrics = Metrics(ctl, CollectorRegistry())
>>> metrics.observe_decision(ctl.decide({"task": "extraction"}))
>>> b"routewise_pending_decisions 1.0" in metrics.exposition()
True
>>> b'routewise_bound_hits_total{bound="max_pending"} 0.0' in metrics.exposition()
True
>>> ctl.close()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from routewise.controller import Controller
from routewise.controller.notify import WebhookNotifier
from routewise.controller.replica import ReplicationStatus
from routewise.types import Decision, FeedbackResult, HealthState, Outcome

__all__ = ["Labelled", "Metrics", "StatusCollector"]

_HEALTH_STATES: tuple[str, ...] = get_args(HealthState)
_M = TypeVar("_M", Counter, Histogram)


class StatusCollector(Collector):
    """Gauges read from the controller at scrape time (they survive restarts)."""

    def __init__(self, controller: Controller) -> None:
        self._ctl = controller

    def collect(self) -> Iterable[Metric]:
        """The arm gauges, the bound hits and, with the Guardian on, its transition
        counters."""
        families = self._status()
        families.append(self._bound_hits())
        if self._ctl.guardian is not None:
            families.append(self._transitions())
        hooks = [x for x in self._ctl.listeners if isinstance(x, WebhookNotifier)]
        if hooks:
            families.extend(_webhooks(hooks))
        rep = self._ctl.replication()
        if rep is not None:
            families.extend(_replication(rep))
        return families

    def _status(self) -> list[Metric]:
        st = self._ctl.status()
        pending = GaugeMetricFamily("routewise_pending_decisions", "Decisions awaiting feedback")
        pending.add_metric([], st.pending)
        learned = GaugeMetricFamily(
            "routewise_arm_feedbacks",
            "Feedbacks learned from, by arm (incl. before restart)",
            labels=["arm"],
        )
        mean = GaugeMetricFamily(
            "routewise_arm_mean_reward", "Mean learned reward by arm", labels=["arm"]
        )
        validity = GaugeMetricFamily(
            "routewise_arm_validity", "Share of schema-valid outcomes by arm", labels=["arm"]
        )
        health = GaugeMetricFamily(
            "routewise_arm_health",
            "Guardian state by arm (1 for the current state, else 0)",
            labels=["arm", "state"],
        )
        for arm_id, s in st.arms.items():
            learned.add_metric([arm_id], s["feedbacks"])
            if s["mean_reward"] is not None:
                mean.add_metric([arm_id], s["mean_reward"])
            if s["validity"] is not None:
                validity.add_metric([arm_id], s["validity"])
            state = s.get("health")
            if state is not None:
                for name in _HEALTH_STATES:
                    health.add_metric([arm_id, name], 1.0 if state == name else 0.0)
        return [pending, learned, mean, validity, health]

    def _bound_hits(self) -> Metric:
        hits = CounterMetricFamily(
            "routewise_bound_hits",
            "Hits of a memory bound since the process started (README: Bounds), by bound",
            labels=["bound"],
        )
        for bound, n in self._ctl.bound_hits().items():
            hits.add_metric([bound], n)
        return hits

    def _transitions(self) -> Metric:
        transitions = CounterMetricFamily(
            "routewise_guardian_transitions",
            "Guardian state transitions (incl. before restart), by arm, new state and source",
            labels=["arm", "to", "source"],
        )
        for (arm_id, to, source), n in sorted(self._ctl.transition_counts().items()):
            transitions.add_metric([arm_id, to, source], n)
        return transitions


def _webhooks(hooks: list[WebhookNotifier]) -> list[Metric]:
    """The delivery counters and queue depth of each subscribed webhook notifier."""
    deliveries = CounterMetricFamily(
        "routewise_webhook_deliveries",
        "Webhook events by result: delivered, failed (attempted, given up) or dropped (never "
        "attempted: queue full or shutdown)",
        labels=["webhook", "result"],
    )
    attempts = CounterMetricFamily(
        "routewise_webhook_attempts",
        "Webhook HTTP attempts (first tries and retries)",
        labels=["webhook"],
    )
    retries = CounterMetricFamily(
        "routewise_webhook_retries", "Webhook retries", labels=["webhook"]
    )
    depth = GaugeMetricFamily(
        "routewise_webhook_queue_depth", "Webhook events waiting or in delivery", labels=["webhook"]
    )
    for hook in hooks:
        st = hook.stats()
        for result in ("delivered", "failed", "dropped"):
            deliveries.add_metric([hook.name, result], getattr(st, result))
        attempts.add_metric([hook.name], st.attempts)
        retries.add_metric([hook.name], st.retries)
        depth.add_metric([hook.name], st.queued)
    return [deliveries, attempts, retries, depth]


def _replication(rep: ReplicationStatus) -> list[Metric]:
    """The replica's gauges and its apply-lag histogram (a shared store only)."""
    out: list[Metric] = []
    for name, doc, value in (
        ("routewise_replication_applied_seq", "Last shared-log sequence number applied here",
         rep["applied_seq"]),
        ("routewise_replication_head_seq", "Newest shared-log sequence number known here",
         rep["head_seq"]),
        ("routewise_replication_lag_seconds",
         "Seconds this replica has been behind the shared log (0 when caught up)", rep["lag_s"]),
        ("routewise_replication_connected", "1 while the shared store is reachable",
         1.0 if rep["connected"] else 0.0),
        ("routewise_replication_snapshot_leader", "1 on the replica that takes the snapshots",
         1.0 if rep["leader"] else 0.0),
    ):  # fmt: skip
        g = GaugeMetricFamily(name, doc)
        g.add_metric([], value)
        out.append(g)
    hist = HistogramMetricFamily(
        "routewise_replication_apply_lag_seconds",
        "Time from a record being written (on any replica) to being applied on this one",
    )
    buckets = [
        (repr(float(b)), c) for b, c in zip(rep["lag_buckets"], rep["lag_counts"], strict=False)
    ]
    buckets.append(("+Inf", rep["lag_count"]))
    hist.add_metric([], buckets, rep["lag_sum"])
    out.append(hist)
    return out


class Labelled(Generic[_M]):
    """A labelled metric with its children cached by label values (``labels()`` costs about
    a microsecond a call, and a decide+feedback pair makes nine of them)."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: _M) -> None:
        self.metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        """The child of these label values (``metric.labels(*values)``)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    """The sidecar's metrics in ``registry`` (which also gets a :class:`StatusCollector`)."""

    def __init__(self, controller: Controller, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self.http_requests = Labelled(
            Counter(
                "routewise_http_requests",
                "HTTP requests by route, method and status",
                ["route", "method", "status"],
                registry=r,
            )
        )
        self.http_latency = Labelled(
            Histogram(
                "routewise_http_request_duration_seconds",
                "Time spent handling a request, by route",
                ["route"],
                registry=r,
                buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            )
        )
        self.decisions = Labelled(
            Counter("routewise_decisions", "Decisions by arm", ["arm", "explored"], registry=r)
        )
        self.feedback = Labelled(
            Counter(
                "routewise_feedback",
                "Feedback learned from, by arm and validity",
                ["arm", "valid"],
                registry=r,
            )
        )
        self.duplicates = Counter(
            "routewise_feedback_duplicates", "Repeated feedback (ignored)", registry=r
        )
        self.reward = Labelled(
            Histogram(
                "routewise_reward",
                "Rewards learned, by arm",
                ["arm"],
                registry=r,
                buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            )
        )
        self.outcome_latency = Labelled(
            Histogram(
                "routewise_outcome_latency_seconds",
                "Latency of the served requests (from feedback), by arm",
                ["arm"],
                registry=r,
                buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
            )
        )
        self.cost = Labelled(
            Counter(
                "routewise_outcome_cost_usd",
                "Cost of the served requests, by arm",
                ["arm"],
                registry=r,
            )
        )
        self.outcome_errors = Labelled(
            Counter(
                "routewise_outcome_errors",
                "Served requests that failed with an error (timeout, rate limit…), by arm",
                ["arm"],
                registry=r,
            )
        )
        for arm in controller.arms:  # every arm's series exists from the start (rate() needs it)
            self.outcome_errors(arm.id)
        self.errors = Labelled(
            Counter("routewise_api_errors", "Error responses by error class", ["error"], registry=r)
        )
        registry.register(StatusCollector(controller))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request."""
        self.http_requests(route, method, str(status)).inc()
        self.http_latency(route).observe(seconds)

    def observe_decision(self, d: Decision) -> None:
        """One decision made."""
        self.decisions(d.arm.id, "true" if d.explored else "false").inc()

    def observe_feedback(self, r: FeedbackResult, outcome: Outcome) -> None:
        """One feedback acknowledged (a duplicate is only counted)."""
        if r.duplicate:
            self.duplicates.inc()
            return
        arm = r.arm.id
        self.feedback(arm, "true" if outcome.valid else "false").inc()
        self.reward(arm).observe(r.reward)
        self.outcome_latency(arm).observe(outcome.latency_ms / 1000.0)
        self.cost(arm).inc(outcome.cost_usd)
        if outcome.error is not None:
            self.outcome_errors(arm).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
