"""Async provider clients over httpx: one :class:`Provider` per backend.

=====================  =================================  ===========  =======
provider (name prefix)  class                              json_schema  grammar
=====================  =================================  ===========  =======
``openai``              :class:`OpenAIProvider`            yes          no
``azure_openai``        :class:`AzureOpenAIProvider`       yes          no
``openai_compatible``   :class:`OpenAICompatibleProvider`  yes          yes
``google_genai``        :class:`GeminiProvider`            yes          no
``ollama``              :class:`OllamaProvider`            yes          no
``bedrock``             :class:`BedrockProvider`           some models  no
=====================  =================================  ===========  =======

:func:`make_provider` builds the client of a :class:`~routewise.backends.base.BackendConfig`
(``ConfigError`` for a setting the provider cannot work without: ``base_url`` for Azure and
OpenAI-compatible servers, the region for Bedrock). ``await provider.generate(request)``
returns a :class:`~routewise.backends.base.Completion` or raises
:class:`~routewise.backends.base.ProviderError` — never an httpx or JSON exception; the
mapping is in :mod:`routewise.backends.providers.base`.

Examples
--------
>>> from routewise.backends.base import BackendConfig
>>> p = make_provider(BackendConfig.for_name("openai_compatible:qwen", base_url="http://127.0.0.1:8080/v1"))
>>> p, p.supports_json_schema, p.supports_grammar
(OpenAICompatibleProvider(name='openai_compatible:qwen'), True, True)
>>> make_provider(BackendConfig.for_name("openai_compatible:qwen"))
Traceback (most recent call last):
...
routewise.errors.ConfigError: backends['openai_compatible:qwen'].base_url: required for openai_compatible (the server's OpenAI-style root, e.g. http://127.0.0.1:8080/v1)
"""

from __future__ import annotations

import httpx

from routewise.backends.base import BackendConfig
from routewise.backends.providers.base import Provider
from routewise.backends.providers.bedrock import BedrockProvider
from routewise.backends.providers.gemini import GeminiProvider
from routewise.backends.providers.ollama import OllamaProvider
from routewise.backends.providers.openai import (
    AzureOpenAIProvider,
    OpenAICompatibleProvider,
    OpenAIProvider,
)
from routewise.errors import ConfigError

__all__ = [
    "PROVIDER_CLASSES",
    "AzureOpenAIProvider",
    "BedrockProvider",
    "GeminiProvider",
    "OllamaProvider",
    "OpenAICompatibleProvider",
    "OpenAIProvider",
    "Provider",
    "make_provider",
]

#: The client class of each provider name.
PROVIDER_CLASSES: dict[str, type[Provider]] = {
    cls.provider_name: cls
    for cls in (
        OpenAIProvider,
        AzureOpenAIProvider,
        OpenAICompatibleProvider,
        GeminiProvider,
        OllamaProvider,
        BedrockProvider,
    )
}


def make_provider(
    config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None
) -> Provider:
    """The provider client of ``config`` (dispatch on ``config.provider``); ``transport``
    replaces httpx's network transport (tests)."""
    cls = PROVIDER_CLASSES.get(config.provider)
    if cls is None:  # pragma: no cover - BackendConfig validates the provider name
        raise ConfigError(
            f"backends[{config.name!r}]", f"no client for provider {config.provider!r}"
        )
    return cls(config, transport)
