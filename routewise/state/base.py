"""The storage protocol behind the controller, and the records it stores.

The controller writes two append-only logs — decisions and feedback — sharing one
monotonically increasing sequence number, plus periodic snapshots of its learned state and a
small ``meta`` table with the configuration the state was learned under. Restart = latest
snapshot + replay of every event with a higher sequence number, so a store only has to keep
those in order. :class:`MemoryStore` (``store=None``) and :class:`SQLiteStore`
(``store="path.db"``) implement it; Redis/PostgreSQL backends for replicated sidecars plug in
behind the same protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from routewise.errors import StateError

__all__ = [
    "ControlRecord",
    "DecisionRecord",
    "Durability",
    "EventRecord",
    "FeedbackRecord",
    "Store",
    "decode_snapshot",
    "json_default",
]

Durability = Literal["always", "feedback", "batch"]


def json_default(obj: Any) -> Any:
    """``default=`` hook for ``json``: numpy scalars (``np.int64``, ``np.float32``,
    ``np.bool_``… which the featurizer accepts in a context, e.g. from a pandas row) become
    the plain Python value; anything else is the usual ``TypeError``.

    Examples
    --------
    >>> import json
    >>> json.dumps({"n": np.int64(3), "x": np.float32(1.5), "b": np.bool_(True)},
    ...            default=json_default)
    '{"n": 3, "x": 1.5, "b": true}'
    """
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


@dataclass(slots=True)
class DecisionRecord:
    """One logged decision (what the trace line is built from)."""

    decision_id: str
    seq: int
    ts: float
    context: dict[str, Any]
    arm: str
    propensity: float
    features: Sequence[float] | npt.NDArray[np.float64]  # array when live; list when read back
    policy: str
    reward_spec: dict[str, Any] | None = None
    eligible: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FeedbackRecord:
    """One logged feedback; ``outcome`` is ``None`` when a default reward was applied."""

    decision_id: str
    seq: int
    ts: float
    outcome: dict[str, Any] | None
    reward: float
    defaulted: bool = False


@dataclass(slots=True)
class EventRecord:
    """One Guardian/operator transition: ``event`` is ``GuardianEvent.to_dict()``.

    On a shared store (several replicas, :class:`~routewise.state.postgres.PostgresStore`)
    ``origin`` names the replica that recorded it and ``key``, when set, makes recording
    idempotent: a second event with the same key is dropped (replicas that apply the same log
    reach the same Guardian transition, and only one copy is kept). Single-writer stores ignore
    both.
    """

    seq: int
    event: dict[str, Any]
    origin: str | None = None
    key: str | None = None


@dataclass(slots=True)
class ControlRecord:
    """A control-plane change on a shared store (an experiment's lifecycle step), applied by
    every replica: ``body`` is ``{"op": ..., "name": ..., ...}``; ``origin`` the replica that
    made it (it applied it already). Single-writer stores never hold one."""

    seq: int
    ts: float
    body: dict[str, Any]
    origin: str | None = None


Event = (
    tuple[Literal["decision"], DecisionRecord]
    | tuple[Literal["feedback"], FeedbackRecord]
    | tuple[Literal["event"], EventRecord]
    | tuple[Literal["control"], ControlRecord]
)


@runtime_checkable
class Store(Protocol):
    """What the controller needs from persistence.

    Durability contract: when :meth:`log_feedback` returns, that feedback and every decision
    logged before it are durable (with ``durability="batch"``: only once :meth:`sync` or
    :meth:`flush` returns). With ``durability="always"`` the same holds when
    :meth:`log_decision` returns. When :meth:`sync` returns, every record logged before it is
    durable. Anything not yet durable when the process dies is lost as a *suffix* of the
    sequence, never a hole in it.
    """

    def load_meta(self) -> dict[str, Any] | None:
        """The configuration saved with :meth:`save_meta`, or ``None`` for a new store."""
        ...

    def save_meta(self, meta: dict[str, Any]) -> None:
        """Persist the configuration the state is learned under."""
        ...

    def log_decision(self, rec: DecisionRecord) -> None:
        """Append a decision (may be buffered until the next durable write)."""
        ...

    def log_feedback(self, rec: FeedbackRecord) -> None:
        """Append a feedback durably (with every decision logged before it)."""
        ...

    def get_decision(self, decision_id: str) -> DecisionRecord | None:
        """A logged decision by id."""
        ...

    def get_feedback(self, decision_id: str) -> FeedbackRecord | None:
        """The feedback logged for a decision id, if any."""
        ...

    def save_snapshot(self, seq: int, state: dict[str, Any]) -> None:
        """Persist the learned state as of sequence number ``seq`` (durably)."""
        ...

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        """(seq, state) of the newest snapshot."""
        ...

    def log_event(self, rec: EventRecord) -> None:
        """Append a health transition durably."""
        ...

    def list_events(self, limit: int | None = None) -> list[EventRecord]:
        """Health transitions, oldest first (the newest ``limit`` when given)."""
        ...

    def events_since(self, seq: int) -> Iterator[Event]:
        """Every decision, feedback and health event with a sequence number > ``seq``, in
        sequence order."""
        ...

    def recent_decisions(self, n: int) -> Sequence[DecisionRecord]:
        """The last ``n`` decisions, oldest first."""
        ...

    def iter_trace(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Trace lines (:mod:`routewise.simulations.trace` format), decisions in sequence order, optionally ``ts >= since``."""
        ...

    def max_seq(self) -> int:
        """Highest sequence number stored (0 when empty)."""
        ...

    def sync(self) -> None:
        """Make everything logged so far durable, as cheaply as the store can (the sidecar's
        group commit calls it once per event-loop turn); a no-op when it already is."""
        ...

    def flush(self) -> None:
        """Make everything logged so far durable and visible to other readers of the store
        (:class:`~routewise.state.sqlite.SQLiteStore`: committed to its tables)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


def decode_snapshot(path: str, seq: Any, text: str | bytes) -> tuple[int, dict[str, Any]]:
    """``(seq, state)`` of a stored snapshot row; ``StateError`` when its JSON is corrupt."""
    try:
        return int(seq), json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"store {path!r}: snapshot at seq {seq} is corrupt ({exc})") from None


def trace_line(d: DecisionRecord, f: FeedbackRecord | None) -> dict[str, Any]:
    """Build one trace line (:mod:`routewise.simulations.trace`) from a decision and its feedback (if any)."""
    line: dict[str, Any] = {
        "decision_id": d.decision_id,
        "ts": d.ts,
        "context": d.context,
        "arm": d.arm,
        "propensity": d.propensity,
        "policy": d.policy,
    }
    if d.eligible is not None:
        line["eligible"] = d.eligible
    if d.reward_spec is not None:
        line["reward_spec"] = d.reward_spec
    for k, v in d.extra.items():
        line.setdefault(k, v)
    if f is not None:
        if f.outcome is not None:
            line["outcome"] = f.outcome
        line["reward"] = f.reward
        if f.defaulted:
            line["reward_defaulted"] = True
    return line
