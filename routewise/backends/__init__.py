"""Provider clients and the three output modes (direct_emit, transport_compressed,
local_reconstructed) for any pydantic schema.

This subpackage is where routewise runs the arm it picked; it is being built under the
"Backends and output modes" issue. Until then, callers run the chosen arm themselves and
report an :class:`routewise.Outcome`.
"""

__all__: list[str] = []
