"""Token prices: what one call of a backend cost, in USD.

Prices are USD per million tokens, ``(input, output)``. :func:`prices_for` resolves them for
one backend in this order:

1. the backend's own ``price_input_per_mtok`` / ``price_output_per_mtok`` (each on its own:
   an override of one side keeps the other side's default);
2. :data:`DEFAULT_PRICES`, first by the exact model id, then by the longest key that is a
   prefix of the model id (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``). Bedrock
   cross-region inference-profile prefixes (``us.``, ``eu.``, ``apac.``, ``global.``…) are
   ignored for the lookup;
3. ``0.0`` for local runtimes (``ollama``, ``openai_compatible``);
4. ``(0.0, 0.0)`` for a cloud model the table does not know, with one structlog warning
   (``event="unknown_model_price"``) per model and process, so that a silently free arm
   does not go unnoticed.

Azure OpenAI is looked up by the model part of the backend name (the deployment name is
free-form), at the global-deployment list price, which equals OpenAI's.

Examples
--------
>>> from routewise.backends.base import BackendConfig, Usage
>>> prices_for(BackendConfig.for_name("openai:gpt-4o-mini-2024-07-18"))
(0.15, 0.6)
>>> prices_for(BackendConfig.for_name("bedrock:us.amazon.nova-lite-v1:0"))
(0.06, 0.24)
>>> prices_for(BackendConfig.for_name("ollama:llama3.1:8b"))
(0.0, 0.0)
>>> cfg = BackendConfig.for_name("openai:gpt-4.1", price_input_per_mtok=1.0)
>>> prices_for(cfg)
(1.0, 8.0)
>>> cost_usd(Usage(input_tokens=10_000, output_tokens=1_000), cfg)
0.018
"""

from __future__ import annotations

import threading

import structlog

from routewise.backends.base import BackendConfig, Usage

__all__ = ["DEFAULT_PRICES", "LOCAL_PROVIDERS", "cost_usd", "prices_for"]

_log = structlog.get_logger("routewise.pricing")

#: Providers that run on the user's own hardware: no per-token price unless configured.
LOCAL_PROVIDERS: frozenset[str] = frozenset({"ollama", "openai_compatible"})

#: Shipped list prices, USD per 1M ``(input, output)`` tokens, standard (non-batch,
#: non-cached, short-context) tier, as published on the providers' pricing pages around
#: August 2025 (openai.com/api/pricing; ai.google.dev/gemini-api/docs/pricing, paid tier,
#: text input, prompts up to 200k tokens; aws.amazon.com/bedrock/pricing, on-demand,
#: us-east-1) and not re-checked since. Prices change: override them per backend with
#: ``price_input_per_mtok`` / ``price_output_per_mtok``.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI (and Azure OpenAI global deployments)
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Google Gemini API
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    # Amazon Bedrock: Anthropic
    "anthropic.claude-3-haiku": (0.25, 1.25),
    "anthropic.claude-3-5-haiku": (0.80, 4.00),
    "anthropic.claude-3-5-sonnet": (3.00, 15.00),
    "anthropic.claude-3-7-sonnet": (3.00, 15.00),
    "anthropic.claude-sonnet-4": (3.00, 15.00),
    "anthropic.claude-haiku-4-5": (1.00, 5.00),
    "anthropic.claude-opus-4": (15.00, 75.00),
    # Amazon Bedrock: Meta Llama
    "meta.llama3-8b-instruct": (0.30, 0.60),
    "meta.llama3-70b-instruct": (2.65, 3.50),
    "meta.llama3-1-8b-instruct": (0.22, 0.22),
    "meta.llama3-1-70b-instruct": (0.72, 0.72),
    "meta.llama3-2-1b-instruct": (0.10, 0.10),
    "meta.llama3-2-3b-instruct": (0.15, 0.15),
    "meta.llama3-3-70b-instruct": (0.72, 0.72),
    # Amazon Bedrock: Amazon Nova
    "amazon.nova-micro": (0.035, 0.14),
    "amazon.nova-lite": (0.06, 0.24),
    "amazon.nova-pro": (0.80, 3.20),
}

#: Bedrock cross-region inference-profile prefixes (``us.anthropic.claude-…``).
_PROFILE_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _lookup_key(model: str) -> str:
    for prefix in _PROFILE_PREFIXES:
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def _table_price(model: str) -> tuple[float, float] | None:
    key = _lookup_key(model)
    if key in DEFAULT_PRICES:
        return DEFAULT_PRICES[key]
    matches = [k for k in DEFAULT_PRICES if key.startswith(k)]
    if not matches:
        return None
    return DEFAULT_PRICES[max(matches, key=len)]


def prices_for(config: BackendConfig) -> tuple[float, float]:
    """USD per 1M ``(input, output)`` tokens for ``config`` (see the module docstring for
    the precedence)."""
    pin, pout = config.price_input_per_mtok, config.price_output_per_mtok
    if pin is not None and pout is not None:
        return (pin, pout)
    table = _table_price(config.model)
    if table is None:
        if config.provider not in LOCAL_PROVIDERS:
            with _warned_lock:
                first = config.model not in _warned
                _warned.add(config.model)
            if first:
                _log.warning(
                    "unknown_model_price",
                    backend=config.name,
                    model=config.model,
                    hint="set price_input_per_mtok / price_output_per_mtok; cost counts as 0",
                )
        table = (0.0, 0.0)
    return (pin if pin is not None else table[0], pout if pout is not None else table[1])


def cost_usd(usage: Usage, config: BackendConfig) -> float:
    """Cost in USD of ``usage`` at the prices of ``config``."""
    return usage.cost_usd(*prices_for(config))
