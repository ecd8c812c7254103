"""Run the arm routewise picked: provider clients, the three output modes for any pydantic
schema, validation, token/cost accounting, and the :class:`Router` that ties them to the
controller.

* :mod:`routewise.backends.base` — :class:`BackendConfig`, provider request/response types,
  :class:`ErrorCategory`, :class:`ModeResult`.
* :mod:`routewise.backends.modes` — ``direct_emit``, ``transport_compressed``,
  ``local_reconstructed`` codecs (:func:`get_codec`).
* :mod:`routewise.backends.providers` — async httpx clients: OpenAI, Azure OpenAI,
  OpenAI-compatible servers, Gemini, Ollama, Bedrock (:func:`make_provider`).
* :mod:`routewise.backends.pricing` — the price table (:func:`prices_for`).
* :mod:`routewise.backends.router` — :class:`Router` (also ``routewise.Router``).
* :mod:`routewise.backends.llama` — real local models on llama.cpp's ``llama-server``.

Examples
--------
>>> from pydantic import BaseModel
>>> from routewise.backends import BackendConfig, get_codec
>>> BackendConfig.for_name("ollama:llama3.2").provider
'ollama'
>>> class Reply(BaseModel):
...     label: str
...     confidence: float
>>> get_codec("local_reconstructed", Reply).encode(Reply(label="spam", confidence=0.9))
'label: spam\\nconfidence: 0.9\\n'
"""

from routewise.backends.base import (
    BackendConfig,
    Completion,
    Constraint,
    ErrorCategory,
    GenerationRequest,
    ModeResult,
    ProviderError,
    Usage,
)
from routewise.backends.modes import DecodeError, OutputCodec, get_codec
from routewise.backends.pricing import DEFAULT_PRICES, prices_for
from routewise.backends.providers import Provider, make_provider
from routewise.backends.router import Receipt, Router, RouteResult

__all__ = [
    "DEFAULT_PRICES",
    "BackendConfig",
    "Completion",
    "Constraint",
    "DecodeError",
    "ErrorCategory",
    "GenerationRequest",
    "ModeResult",
    "OutputCodec",
    "Provider",
    "ProviderError",
    "Receipt",
    "RouteResult",
    "Router",
    "Usage",
    "get_codec",
    "make_provider",
    "prices_for",
]
