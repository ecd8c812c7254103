"""The three output modes, for any pydantic schema.

* ``direct_emit`` (:class:`DirectEmit`): the model writes the full JSON object;
* ``transport_compressed`` (:class:`TransportCompressed`): a compact JSON object with
  short keys and enum indexes, expanded locally;
* ``local_reconstructed`` (:class:`LocalReconstructed`): only the leaf values, one
  ``path: value`` line each, rebuilt locally into the full object.

Each is an :class:`OutputCodec`: ``instructions()`` for the system prompt,
``constraint()`` for constrained decoding, ``encode``/``decode`` between an instance and
the emitted text, and ``parse`` that never raises.

Examples
--------
>>> from pydantic import BaseModel
>>> class Reply(BaseModel):
...     answer: str
...     score: int
>>> for mode in ("direct_emit", "transport_compressed", "local_reconstructed"):
...     print(repr(get_codec(mode, Reply).encode(Reply(answer="yes", score=3))))
'{"answer":"yes","score":3}'
'{"a":"yes","b":3}'
'answer: yes\\nscore: 3\\n'
"""

from routewise.backends.modes.base import DecodeError, OutputCodec
from routewise.backends.modes.direct import DirectEmit
from routewise.backends.modes.reconstruct import LocalReconstructed
from routewise.backends.modes.registry import get_codec
from routewise.backends.modes.transport import TransportCompressed

__all__ = [
    "DecodeError",
    "DirectEmit",
    "LocalReconstructed",
    "OutputCodec",
    "TransportCompressed",
    "get_codec",
]
