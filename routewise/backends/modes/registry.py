"""``get_codec``: the output codec of a (mode, schema) pair, built once and cached."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from routewise.backends.modes.base import OutputCodec
from routewise.backends.modes.direct import DirectEmit
from routewise.backends.modes.reconstruct import LocalReconstructed
from routewise.backends.modes.transport import TransportCompressed
from routewise.errors import ConfigError
from routewise.types import Mode

__all__ = ["CODECS", "get_codec"]

M = TypeVar("M", bound=BaseModel)

#: The codec class of each mode.
CODECS: dict[Mode, type[OutputCodec[Any]]] = {
    Mode.direct_emit: DirectEmit,
    Mode.transport_compressed: TransportCompressed,
    Mode.local_reconstructed: LocalReconstructed,
}


def get_codec(mode: Mode | str, schema: type[M]) -> OutputCodec[M]:
    """The codec of ``mode`` for ``schema``, cached per (mode, schema class).

    Raises :class:`routewise.errors.ConfigError` for an unknown mode or a schema the
    mode cannot express.

    Examples
    --------
    >>> from pydantic import BaseModel
    >>> class Reply(BaseModel):
    ...     answer: str
    >>> codec = get_codec("local_reconstructed", Reply)
    >>> codec is get_codec(Mode.local_reconstructed, Reply)
    True
    >>> codec.encode(Reply(answer="yes"))
    'answer: yes\\n'
    >>> get_codec("yaml", Reply)
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: mode: 'yaml' is not an output mode (one of: direct_emit, transport_compressed, local_reconstructed)
    """
    try:
        m = mode if isinstance(mode, Mode) else Mode(mode)
    except ValueError:
        allowed = ", ".join(x.value for x in Mode)
        raise ConfigError("mode", f"{mode!r} is not an output mode (one of: {allowed})") from None
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise ConfigError("schema", f"{schema!r} is not a pydantic BaseModel subclass")
    return cast(OutputCodec[M], _cached(m, schema))


@lru_cache(maxsize=512)
def _cached(mode: Mode, schema: type[BaseModel]) -> OutputCodec[Any]:
    return CODECS[mode](schema)
