"""The sidecar daemon: a thin FastAPI adapter over one :class:`~routewise.Controller`.

``routewise serve`` runs it with uvicorn (:mod:`~routewise.server.run`); tests build it with
:func:`create_app` (:mod:`~routewise.server.app`) and talk to it in-process through
``httpx.ASGITransport``. One ``APIRouter`` per resource (:mod:`routewise.server.routes`);
each handler parses its request model (:mod:`~routewise.server.models`), calls the controller
and answers with a wire type of :mod:`routewise.types` (whose classes are the OpenAPI schema).

Endpoints (JSON unless noted; OpenAPI at ``/openapi.json``, Swagger UI at ``/docs``)::

    POST /v1/decide     {context, arms?, reward?, request_id?, unit_id?} → decision (id, arm,
                        propensity, scores…, experiment, variant)
    POST /v1/feedback   {decision_id, outcome: {valid, latency_ms, cost_usd, error?, score?}}
                        → {decision_id, arm, reward, duplicate, defaulted}; idempotent per id
    GET  /v1/policy     ?context=<JSON object>&arms=<id>… → arms ranked by expected reward
    GET  /v1/arms       per-arm statistics and Guardian state (the controller's ``status()``)
    GET  /v1/health     {enabled, pinned, arms: {arm id: healthy|quarantined|probing|pinned}}
    GET  /v1/events     ?limit=N → the Guardian's and operators' transitions, oldest first
    POST /v1/arms/{arm_id}/pin|quarantine|release
                        operator actions → {arm, action, state, pinned}; ``arm_id`` is the
                        plain arm id (``/v1/arms/openai:gpt-5.4/direct_emit/pin``) or URL-encoded
                        (``openai%3Agpt-5.4%2Fdirect_emit``); the action is the last segment
    GET  /v1/experiments                 every experiment's spec, in creation order
    POST /v1/experiments                 {name, variants, split?, salt?, alpha?, guardrails?}
                                         → 201 the draft spec (operator action)
    GET  /v1/experiments/{name}          the status report (per-variant numbers, comparisons, SRM)
    POST /v1/experiments/{name}/start|stop|abort   operator actions → the updated spec
    POST /v1/experiments/{name}/promote  {variant} operator action → the updated spec
    GET  /v1/trace      ?since=<unix seconds> → the JSON-Lines trace (streamed)
    GET  /healthz       liveness (never needs the token)
    GET  /readyz        readiness (never needs the token)
    GET  /metrics       Prometheus text format
    GET  /docs, /redoc  Swagger UI and ReDoc, their assets served from the installed package
                        (``/docs/static/{name}``; no CDN); the reference is docs/api.md

Errors (:mod:`~routewise.server.errors`)
    Every error is a JSON body ``{"error", "field", "reason", "message", …}`` naming the
    offending request field: a :class:`~routewise.errors.RoutewiseError` keeps its class name
    (``InvalidContext``, ``InvalidOutcome``, ``ConfigError``, ``UnknownArm`` → 422;
    ``UnknownDecision`` → 404; ``FeedbackTooLate`` → 409; ``StateError`` → 503; an unknown
    ``arm_id`` in an operator action path is ``UnknownArm`` → 404; an unknown experiment
    ``name`` is ``UnknownExperiment`` → 404, field ``name``; a lifecycle step the experiment's
    state forbids is ``ExperimentConflict`` → 409 naming the field, e.g. ``status``; a bad
    experiment spec is ``ConfigError`` → 422 naming the field, e.g. ``variants.candidate.arms``,
    and request-shape errors in experiment bodies are ``ConfigError`` too); request-shape
    errors are ``InvalidContext`` / ``InvalidOutcome`` / ``InvalidRequest`` (422); malformed JSON
    is ``MalformedJSON`` (400); an oversized body ``PayloadTooLarge`` (413); a missing or wrong
    token ``Unauthorized`` (401); an operator action on a server without a token ``Forbidden``
    (403). A disabled Guardian makes operator actions a ``ConfigError`` on field ``guardian``
    (422). :class:`routewise.Client` turns them back into exceptions.

Durability (:mod:`~routewise.server.durability`)
    A response is sent only once what it acknowledges is durable: every write handler awaits a
    *group commit* — one ``store.sync()`` per event-loop turn (for SQLite one acklog line,
    one ``write(2)``, the mechanism that acknowledges a library ``feedback()``), shared by every
    request handled in that turn — before answering (a no-op with ``durability="always"``).
    So with any durability mode an acknowledged decision, feedback or operator action
    survives ``kill -9``; the rows reach the SQLite tables in batches.

Concurrency
    Every controller call runs on the event-loop thread: the calls take tens of microseconds,
    a thread hop would cost more, and it makes the store's writer path single-threaded. (So
    every dependency and handler is ``async def``: FastAPI would run a plain ``def`` in a
    thread pool.)

Security (:mod:`~routewise.server.deps`, :mod:`~routewise.server.middleware`)
    Binds ``127.0.0.1`` by default. With a token (``ROUTEWISE_TOKEN`` or ``token`` in the
    config) every endpoint except ``/healthz`` and ``/readyz`` requires
    ``Authorization: Bearer <token>`` (compared in constant time). Operator actions (pin,
    quarantine, release, and creating, starting, stopping, promoting or aborting an
    experiment) always need the token: without one configured they answer 403.
    Request bodies are limited to ``max_body_bytes``. Tokens, headers and request contexts are
    never logged.

Webhooks (:mod:`~routewise.controller.notify`)
    ``routewise serve`` subscribes a :class:`~routewise.controller.notify.WebhookNotifier` per
    ``[[webhooks]]`` table to the controller: every Guardian transition and operator action is
    POSTed, signed, from a background thread (never on the request path); ``/metrics`` counts
    the deliveries; on shutdown the queues get ``WEBHOOK_DRAIN_S`` after the final snapshot.

Logs (:mod:`~routewise.server.logline`)
    One canonical structlog line per request (``event="request"``: method, path, status,
    ``duration_ms`` and, where they apply, decision id, arm, propensity, reward, operator
    action and resulting state, error and field); JSON when stdout is not a TTY, console
    rendering otherwise.
"""

from routewise.server.app import DEFAULT_MAX_BODY_BYTES, create_app
from routewise.server.run import DEFAULT_DB, DEMO_BACKENDS, configure_logging, serve

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_MAX_BODY_BYTES",
    "DEMO_BACKENDS",
    "configure_logging",
    "create_app",
    "serve",
]
