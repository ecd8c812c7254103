"""The reward-function protocol.

A reward function turns one :class:`~routewise.types.Outcome` into the scalar the bandit
learns from. It is called once per feedback, so implementations should be cheap and pure
(no I/O, no clock, no randomness), return a float in ``[0, 1]``, and describe themselves as
plain JSON through ``to_dict()`` so the reward in force can be logged next to the traces it
produced.

Examples
--------
>>> from routewise.reward import RewardFunction, Scalarizer
>>> isinstance(Scalarizer(1.0, 0.0, 0.0, 1000.0, 0.01), RewardFunction)
True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from routewise.types import Outcome

__all__ = ["RewardFunction"]


@runtime_checkable
class RewardFunction(Protocol):
    """Anything that maps an :class:`~routewise.types.Outcome` to a reward in ``[0, 1]``.

    Examples
    --------
    A custom reward only needs ``__call__`` and ``to_dict``:

    >>> from routewise.types import Outcome
    >>> class ValidOnly:
    ...     def __call__(self, outcome: Outcome) -> float:
    ...         return outcome.correctness
    ...     def to_dict(self) -> dict[str, object]:
    ...         return {"type": "valid_only"}
    >>> reward = ValidOnly()
    >>> isinstance(reward, RewardFunction)
    True
    >>> reward(Outcome(valid=True, latency_ms=900.0, cost_usd=0.001))
    1.0
    """

    def __call__(self, outcome: Outcome) -> float:
        """The reward of ``outcome``, in ``[0, 1]``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description of this reward function."""
        ...
