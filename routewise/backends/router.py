"""The routed call: decide an arm, run it against its provider in its output mode, validate,
send feedback, return the value and a receipt.

:class:`Router` is the library face of routewise for callers who want routewise to *run* the
arm, not just pick it. It owns a :class:`~routewise.Controller` (same keyword arguments) and
one provider client per backend; nothing a provider does (timeouts, 429s, 5xx, garbage JSON,
refusals, truncation) escapes :meth:`Router.complete` — each becomes an
:class:`~routewise.Outcome` with an error category that the controller learns from.
"""

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import structlog
from pydantic import BaseModel

from routewise.backends.base import (
    BackendConfig,
    Completion,
    ErrorCategory,
    GenerationRequest,
    ModeResult,
    ProviderError,
    Usage,
)
from routewise.backends.modes import OutputCodec, get_codec
from routewise.backends.modes.tree import (
    ListNode,
    ObjectNode,
    OptionalNode,
    SchemaNode,
    compile_schema,
)
from routewise.backends.pricing import prices_for
from routewise.backends.providers import Provider, make_provider
from routewise.controller import Controller
from routewise.errors import ConfigError
from routewise.types import Arm, Decision, Mode, Outcome, make_arms

__all__ = ["Receipt", "RouteResult", "Router"]

T = TypeVar("T", bound=BaseModel)

_log = structlog.get_logger("routewise.router")

_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one attempt did: the decision, the outcome learned from, and the mode's report.

    ``parse_ok`` / ``schema_valid`` / ``failed_fields`` / ``local_ms`` come from the output
    codec; ``input_tokens`` / ``output_tokens`` from the provider's usage; ``constrain`` says
    how decoding was constrained (``json_schema``, ``grammar`` or ``none``).
    """

    decision_id: str
    arm: Arm
    propensity: float
    outcome: Outcome
    reward: float
    parse_ok: bool = False
    schema_valid: bool = False
    failed_fields: tuple[str, ...] = ()
    local_ms: float = 0.0
    provider_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    constrain: str = "none"
    finish_reason: str | None = None
    retry_after_s: float | None = None
    message: str | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (arm as its id, outcome as its trace form)."""
        return {
            "decision_id": self.decision_id,
            "arm": self.arm.id,
            "propensity": self.propensity,
            "outcome": self.outcome.to_dict(),
            "reward": self.reward,
            "parse_ok": self.parse_ok,
            "schema_valid": self.schema_valid,
            "failed_fields": list(self.failed_fields),
            "local_ms": self.local_ms,
            "provider_ms": self.provider_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "constrain": self.constrain,
            "finish_reason": self.finish_reason,
            "retry_after_s": self.retry_after_s,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class RouteResult(Generic[T]):
    """The result of :meth:`Router.complete`: the value (or ``None``) and the receipt of the
    attempt that produced it; ``attempts`` holds every attempt when fallback ran."""

    value: T | None
    receipt: Receipt
    attempts: tuple[Receipt, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when a valid value came back."""
        return self.value is not None


def schema_context(
    schema: type[BaseModel], messages: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    """Request features routewise derives by itself: schema size and depth, prompt length.

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> class Inner(BaseModel):
    ...     a: int
    >>> class Outer(BaseModel):
    ...     x: str
    ...     inner: Inner
    ...     tags: list[str]
    >>> schema_context(Outer, [{"role": "user", "content": "hello"}])
    {'schema': 'Outer', 'n_fields': 3, 'schema_depth': 2, 'input_chars': 5}
    """
    leaves, depth = _shape(schema)
    return {
        "schema": schema.__name__,
        "n_fields": leaves,
        "schema_depth": depth,
        "input_chars": sum(len(str(m.get("content", ""))) for m in messages),
    }


@functools.lru_cache(maxsize=256)
def _shape(schema: type[BaseModel]) -> tuple[int, int]:
    """(leaf fields, object nesting depth) of a model, from the codecs' compiled schema tree
    (compiled once per schema, not per request)."""

    def walk(node: SchemaNode, depth: int) -> tuple[int, int]:
        if isinstance(node, OptionalNode):
            return walk(node.inner, depth)
        if isinstance(node, ListNode):
            return walk(node.item, depth)
        if isinstance(node, ObjectNode):
            leaves, deepest = 0, depth + 1
            for f in node.fields:
                n, d = walk(f.node, depth + 1)
                leaves += n
                deepest = max(deepest, d)
            return leaves, deepest
        return 1, depth

    return walk(compile_schema(schema), 0)


def _check_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ConfigError("messages", "must be a non-empty list of {'role', 'content'} objects")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ConfigError(f"messages[{i}]", f"must be an object, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise ConfigError(f"messages[{i}].role", f"must be one of {_ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content", "must be a string")
        out.append({"role": str(role), "content": content})
    return out


class _LoopThread:
    """A private event loop on a daemon thread, for :meth:`Router.complete_sync`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Router:
    """Route structured-output requests: pick an arm, run it, validate, learn, return.

    ``backends`` maps ``provider:model`` names to their settings (:class:`BackendConfig`
    keys: ``base_url``, ``api_key_env``, prices, ``timeout_s``, ``constrain``, ``sampler``…)
    or is a list of names with default settings. ``modes`` defaults to all three; ``policy``,
    ``reward``, ``store``, ``seed`` and any other keyword go to the
    :class:`~routewise.Controller`. ``transport`` injects an httpx transport into every
    provider client (tests); ``auto_context`` adds :func:`schema_context` features to every
    request's context (the caller's keys win). ``fallback=True`` retries a failed request on
    the next-best remaining arm, each attempt its own decision.

    Examples
    --------
    >>> import httpx, routewise
    >>> from pydantic import BaseModel
    >>> class Ticket(BaseModel):
    ...     intent: str
    ...     priority: int
    >>> def fake_openai(request: httpx.Request) -> httpx.Response:
    ...     return httpx.Response(200, json={
    ...         "choices": [{"message": {"role": "assistant", "content": '{"intent": "billing", "priority": 2}'},
    ...                      "finish_reason": "stop"}],
    ...         "usage": {"prompt_tokens": 50, "completion_tokens": 12}})
    >>> router = routewise.Router(
    ...     backends={"openai:gpt-4o-mini": {"api_key": "sk-test"}}, modes=["direct_emit"],
    ...     seed=0, transport=httpx.MockTransport(fake_openai))
    >>> result = router.complete_sync(schema=Ticket, messages=[{"role": "user", "content": "refund please"}])
    >>> result.value
    Ticket(intent='billing', priority=2)
    >>> result.receipt.arm.id, result.receipt.outcome.valid, result.receipt.output_tokens
    ('openai:gpt-4o-mini/direct_emit', True, 12)
    >>> router.close()
    """

    def __init__(
        self,
        backends: Mapping[str, Mapping[str, Any] | BackendConfig] | Sequence[str],
        modes: Iterable[Mode | str] | None = None,
        policy: Any = None,
        reward: Any = None,
        store: Any = None,
        seed: int | None = None,
        *,
        exclude: Iterable[Any] = (),
        fallback: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        auto_context: bool = True,
        controller: Controller | None = None,
        **controller_kwargs: Any,
    ) -> None:
        self.backends = _backend_configs(backends)
        self.modes = [Mode(m) for m in (modes if modes is not None else list(Mode))]
        self.fallback = fallback
        self.transport = transport
        self.auto_context = auto_context
        arms = make_arms(list(self.backends), self.modes, exclude=exclude)
        if controller is None:
            controller = Controller(arms, policy, reward, store, seed, **controller_kwargs)
        else:
            missing = [a.id for a in arms if a.id not in {b.id for b in controller.arms}]
            if missing:
                raise ConfigError("arms", f"the controller lacks arm(s) {missing}")
        self.controller = controller
        self.arms = arms
        self._providers: dict[tuple[int, str], Provider] = {}
        self._sync: _LoopThread | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | Path | None = None, **overrides: Any) -> "Router":
        """Build from a TOML file: the controller keys as for ``Controller.from_config`` and
        per-backend settings under ``[backends."provider:model"]``."""
        from routewise.config import load_settings

        router_keys = {
            k: overrides.pop(k) for k in ("fallback", "transport", "auto_context") if k in overrides
        }
        settings = load_settings(path, **overrides)
        if settings.backends is None:
            raise ConfigError(
                "backends", 'a Router needs [backends."provider:model"] tables or a backends list'
            )
        if settings.arms is not None:
            raise ConfigError("arms", "a Router takes 'backends' (+ 'modes'), not 'arms'")
        controller = Controller.from_settings(settings)
        return cls(
            settings.backends,
            settings.modes,
            exclude=settings.exclude,
            controller=controller,
            **router_keys,
        )

    # ---------------------------------------------------------------- internals
    def _provider(self, backend: str) -> Provider:
        key = (id(asyncio.get_running_loop()), backend)
        p = self._providers.get(key)
        if p is None:
            p = make_provider(self.backends[backend], transport=self.transport)
            self._providers[key] = p
        return p

    def _request(
        self,
        cfg: BackendConfig,
        provider: Provider,
        codec: OutputCodec[Any],
        messages: list[dict[str, str]],
    ) -> GenerationRequest:
        constraint = codec.constraint()
        has_schema = constraint.json_schema is not None and provider.supports_json_schema
        has_grammar = constraint.grammar is not None and provider.supports_grammar
        constrain: Any = "none"
        if cfg.constrain == "grammar":
            # llama.cpp converts a JSON schema to a grammar itself, so a JSON form may go as
            # its schema; a non-JSON form needs its GBNF grammar.
            constrain = "grammar" if has_grammar else ("json_schema" if has_schema else "none")
        elif cfg.constrain == "json_schema":
            constrain = "json_schema" if has_schema else "none"
        elif cfg.constrain == "auto":
            constrain = "json_schema" if has_schema else ("grammar" if has_grammar else "none")
        system = codec.instructions()
        user_system = [m["content"] for m in messages if m["role"] == "system"]
        if user_system:
            system = "\n\n".join([*user_system, system])
        msgs = [{"role": "system", "content": system}] + [
            m for m in messages if m["role"] != "system"
        ]
        return GenerationRequest(
            messages=msgs,
            constraint=constraint if constrain != "none" else None,
            constrain=constrain,
            max_tokens=cfg.max_tokens,
            sampler=dict(cfg.sampler),
        )

    async def _attempt(
        self,
        decision: Decision,
        schema: type[BaseModel],
        messages: list[dict[str, str]],
        score: Callable[[Any], float] | None,
    ) -> tuple[BaseModel | None, Receipt]:
        """Run the decided arm, learn from its outcome, and return the value and the receipt."""
        arm = decision.arm
        cfg = self.backends[arm.backend]
        codec = get_codec(arm.mode, schema)
        provider = self._provider(arm.backend)
        req = self._request(cfg, provider, codec, messages)
        call = await _call_provider(provider, req, arm.backend)
        mr, error = _read_output(codec, call)
        value = mr.value if error is None and mr.schema_valid else None
        pin, pout = prices_for(cfg)
        outcome = Outcome(
            valid=value is not None,
            latency_ms=call.provider_ms + mr.local_ms,
            cost_usd=call.usage.cost_usd(pin, pout),
            error=None if error is None else error.value,
            score=None if value is None else _task_score(score, value, arm.id),
        )
        fb = self.controller.feedback(decision.decision_id, outcome)
        receipt = _receipt(decision, outcome, fb.reward, mr, call, req.constrain)
        if self.controller.log_decisions:
            _log.info(
                "routed",
                decision_id=decision.decision_id,
                arm=arm.id,
                valid=outcome.valid,
                error=outcome.error,
                latency_ms=round(outcome.latency_ms, 1),
                reward=round(fb.reward, 4),
            )
        return value, receipt

    # ---------------------------------------------------------------- public
    async def complete(
        self,
        schema: type[T],
        messages: Sequence[Mapping[str, str]],
        context: Mapping[str, Any] | None = None,
        *,
        fallback: bool | None = None,
        score: Callable[[T], float] | None = None,
        reward: Any = None,
        arms: Iterable[Any] | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
    ) -> RouteResult[T]:
        """Decide an arm for the request, run it, validate, send feedback, return.

        Never raises for a provider failure: the receipt's outcome carries the error
        category and ``value`` is ``None``. Raises :class:`~routewise.ConfigError` for a
        caller error (bad messages, a schema no codec supports). ``score(value) -> [0, 1]``
        grades a valid value's task correctness (e.g. against a known label); the reward uses
        it. ``fallback`` (default: the router's setting) retries on the next-best arm.
        """
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise ConfigError("schema", f"must be a pydantic model class, got {schema!r}")
        msgs = _check_messages(messages)
        for mode in self.modes:
            get_codec(mode, schema)  # unsupported schemas fail here, before any decision
        ctx: dict[str, Any] = schema_context(schema, msgs) if self.auto_context else {}
        ctx.update(context or {})
        remaining = (
            [Arm.parse(a).id for a in arms] if arms is not None else [a.id for a in self.arms]
        )
        use_fallback = self.fallback if fallback is None else fallback
        attempts: list[Receipt] = []
        value: BaseModel | None = None
        while True:
            d = self.controller.decide(
                ctx, arms=remaining, reward=reward, request_id=request_id, unit_id=unit_id
            )
            value, receipt = await self._attempt(d, schema, msgs, score)
            attempts.append(receipt)
            remaining = [a for a in remaining if a != d.arm.id]
            if value is not None or not use_fallback or not remaining:
                break
        out: RouteResult[T] = RouteResult(value, attempts[-1], tuple(attempts))  # type: ignore[arg-type]
        return out

    def complete_sync(
        self,
        schema: type[T],
        messages: Sequence[Mapping[str, str]],
        context: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> RouteResult[T]:
        """The blocking twin of :meth:`complete`, for scripts (runs on a private loop)."""
        with self._lock:
            if self._sync is None:
                self._sync = _LoopThread()
        result: RouteResult[T] = self._sync.run(self.complete(schema, messages, context, **kwargs))
        return result

    async def aclose(self) -> None:
        """Close the provider clients of the running loop and the controller's store."""
        loop_id = id(asyncio.get_running_loop())
        for key in [k for k in self._providers if k[0] == loop_id]:
            await self._providers.pop(key).aclose()
        self._close_rest()

    def close(self) -> None:
        """Close everything (from synchronous code)."""
        if self._sync is not None:
            sync = self._sync
            loop_id = id(sync.loop)
            for key in [k for k in self._providers if k[0] == loop_id]:
                sync.run(self._providers.pop(key).aclose())
            sync.close()
            self._sync = None
        self._close_rest()

    def _close_rest(self) -> None:
        self._providers.clear()
        self.controller.close()

    async def __aenter__(self) -> "Router":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> "Router":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(slots=True)
class _Call:
    """One provider call: the completion, or the error category it failed with; its usage."""

    completion: Completion | None = None
    error: ErrorCategory | None = None
    message: str | None = None
    retry_after_s: float | None = None
    usage: Usage = field(default_factory=Usage)
    provider_ms: float = 0.0


async def _call_provider(provider: Provider, req: GenerationRequest, backend: str) -> _Call:
    """Send ``req``; nothing the provider raises escapes: each failure becomes a category."""
    call = _Call()
    t0 = time.perf_counter()
    try:
        call.completion = await provider.generate(req)
        call.usage = call.completion.usage
    except ProviderError as exc:
        call.error, call.message, call.retry_after_s = exc.category, exc.message, exc.retry_after_s
        call.usage = exc.usage or Usage()
    except Exception as exc:  # a provider bug must not escape the router either
        call.error, call.message = ErrorCategory.bad_response, f"{type(exc).__name__} in provider"
        _log.error("provider_exception", backend=backend, exc_type=type(exc).__name__)
    call.provider_ms = (time.perf_counter() - t0) * 1000.0
    return call


def _read_output(codec: OutputCodec[Any], call: _Call) -> tuple[ModeResult, ErrorCategory | None]:
    """Parse the completion in its mode; name truncation, refusal and malformed output."""
    completion = call.completion
    if completion is None:
        return ModeResult(value=None, parse_ok=False, schema_valid=False), call.error
    mr = codec.parse(completion.text)
    error = call.error
    if completion.finish_reason == "length" and not mr.schema_valid:
        error = ErrorCategory.truncated
    elif completion.finish_reason == "refusal":
        error, mr = ErrorCategory.refusal, ModeResult(None, False, False)
    elif not mr.parse_ok:
        error = ErrorCategory.malformed_output
    return mr, error


def _task_score(score: Callable[[Any], float] | None, value: Any, arm_id: str) -> float | None:
    """The caller's ``score(value)`` clipped to [0, 1]; ``None`` without one or if it raises."""
    if score is None:
        return None
    try:
        return min(1.0, max(0.0, float(score(value))))
    except Exception as exc:
        _log.error("score_exception", arm=arm_id, exc_type=type(exc).__name__)
        return None


def _receipt(
    decision: Decision,
    outcome: Outcome,
    reward: float,
    mr: ModeResult,
    call: _Call,
    constrain: str,
) -> Receipt:
    """The receipt of one attempt: what was decided, called, parsed and learned."""
    completion = call.completion
    return Receipt(
        decision_id=decision.decision_id,
        arm=decision.arm,
        propensity=decision.propensity,
        outcome=outcome,
        reward=reward,
        parse_ok=mr.parse_ok,
        schema_valid=mr.schema_valid,
        failed_fields=mr.failed_fields,
        local_ms=mr.local_ms,
        provider_ms=call.provider_ms,
        input_tokens=call.usage.input_tokens,
        output_tokens=call.usage.output_tokens,
        constrain=constrain,
        finish_reason=None if completion is None else completion.finish_reason,
        retry_after_s=call.retry_after_s,
        message=call.message,
        text=None if completion is None else completion.text,
    )


def _backend_configs(
    backends: Mapping[str, Mapping[str, Any] | BackendConfig] | Sequence[str],
) -> dict[str, BackendConfig]:
    if isinstance(backends, str) or not isinstance(backends, Mapping | Sequence):
        raise ConfigError(
            "backends", "must be a mapping of 'provider:model' to settings or a list of names"
        )
    items: list[tuple[str, Mapping[str, Any] | BackendConfig]]
    if isinstance(backends, Mapping):
        items = list(backends.items())
    else:
        items = [(name, {}) for name in backends]
    if not items:
        raise ConfigError("backends", "at least one backend is required")
    out: dict[str, BackendConfig] = {}
    for name, settings in items:
        if isinstance(settings, BackendConfig):
            if settings.name != name:
                raise ConfigError(f"backends[{name!r}]", f"config is for {settings.name!r}")
            out[name] = settings
        elif isinstance(settings, Mapping):
            out[name] = BackendConfig.for_name(name, **dict(settings))
        else:
            raise ConfigError(f"backends[{name!r}]", "settings must be a table/mapping")
    return out
