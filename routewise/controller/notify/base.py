"""What a listener of the :class:`~routewise.Controller` receives: a :class:`Notice` (one
recorded Guardian transition or operator action, with its place in the log), and the
:class:`Listener` protocol.

A listener is called on the controller's write path — under its lock, on the thread that
made the transition (a request's, or a replica's follower) — so it must return at once: queue
the notice and deliver it elsewhere, as :class:`~routewise.controller.notify.WebhookNotifier`
does. A listener that raises is logged and skipped; it never fails a decision or feedback.

When a listener is called (``Controller.subscribe``):

* single-writer store: when the transition is recorded, never during the restart replay;
* shared (PostgreSQL) store: on the replica whose Guardian or operator made the transition,
  once its follower applies it from the shared log — so each transition is notified once
  across the replicas, even when several Guardians made the same one (the store keeps one
  copy, with the origin of the replica that committed it first).

Examples
--------
>>> from routewise.types import GuardianEvent
>>> n = Notice(GuardianEvent(10.0, "a:x/direct_emit", "healthy", "quarantined", "latency"), seq=7)
>>> n.id == Notice(n.event, seq=7).id, len(n.id)
(True, 36)
>>> sorted(n.to_dict())
['arm', 'evidence', 'from', 'id', 'origin', 'reason', 'seq', 'source', 'to', 'ts', 'type']
>>> n.matches(["quarantined"]), n.matches(["operator"]), n.matches(None)
(True, False, True)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from routewise.types import GuardianEvent

__all__ = ["NOTICE_TYPE", "Listener", "Notice"]

NOTICE_TYPE = "routewise.guardian.transition"
"""The ``type`` field of every notice body."""

_NAMESPACE = uuid.UUID("5b7d1c64-5f0e-4a8e-9d43-2c0f6f3b9a11")


@dataclass(frozen=True, slots=True)
class Notice:
    """One recorded transition (Guardian or operator) and where it sits in the log.

    ``seq`` is the event's sequence number in the store's log; ``origin`` the replica that
    wrote it on a shared store (``None`` on a single-writer store). :attr:`id` is derived from
    the logged record only, so it is the same for every attempt and every reader of the log:
    receivers use it to drop a repeated delivery.
    """

    event: GuardianEvent
    seq: int
    origin: str | None = None

    @property
    def id(self) -> str:
        """A stable delivery id (a UUID derived from the logged record)."""
        ev = self.event
        key = json.dumps(
            [self.seq, self.origin, ev.ts, ev.arm, ev.from_state, ev.to_state, ev.reason, ev.source]
        )
        return str(uuid.uuid5(_NAMESPACE, key))

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of a delivery: ``id``, ``type``, ``seq``, ``origin`` and the event's
        fields (``ts``, ``arm``, ``from``, ``to``, ``reason``, ``evidence``, ``source``)."""
        return {
            "id": self.id,
            "type": NOTICE_TYPE,
            "seq": self.seq,
            "origin": self.origin,
            **self.event.to_dict(),
        }

    def matches(self, names: Iterable[str] | None) -> bool:
        """Whether an ``events`` filter lets this notice through: its new state, its source
        or a ``:``-separated part of its reason is listed (``None``: every notice)."""
        if names is None:
            return True
        ev = self.event
        wanted = set(names)
        return (
            ev.to_state in wanted
            or ev.source in wanted
            or not wanted.isdisjoint(ev.reason.split(":"))
        )


class Listener(Protocol):
    """Called with every transition the controller records (see the module docstring);
    must return at once and never block."""

    def __call__(self, notice: Notice, /) -> None:
        """Take ``notice`` (queue it; do not deliver it here)."""
