"""The usable rounds of a logged trace, in chunks of arrays, for
:func:`~routewise.simulations.replay`.

A round is usable when its reward is known: the logged ``reward``, or, when rewards are
recomputed (an evaluation reward, a learning candidate's ``@reward``), one computed from the
logged ``outcome``. :class:`UsableRounds` skips the other rounds (counting them on the first
pass over the trace, or raising with ``strict``) and numbers the arm ids in order of first
appearance; :func:`read_chunks` yields the usable rounds as :class:`Chunk` s, round ``i``
in cross-fitting fold ``i % 2``.

Examples
--------
>>> import json, os, tempfile
>>> from routewise.simulations.trace import TraceReader
>>> path = os.path.join(tempfile.mkdtemp(), "t.jsonl")
>>> with open(path, "w") as fh:
...     for i in range(5):
...         line = {"arm": "ab"[i % 2], "propensity": 0.5, "reward": i % 2}
...         _ = fh.write(json.dumps(line) + "\\n")
...     _ = fh.write(json.dumps({"arm": "c", "propensity": 0.5, "outcome": {}}) + "\\n")
>>> rounds = UsableRounds(path, strict=False)
>>> [(ch.arms.tolist(), ch.fold.tolist()) for ch in read_chunks(TraceReader(path), None, {}, rounds)]
[([0, 1, 0, 1, 0], [0, 1, 0, 1, 0])]
>>> rounds.arm_index, rounds.reward_sum, rounds.skipped.errors
({'a': 0, 'b': 1}, 2.0, ['line 6: reward: is required (or pass --reward PRESET to recompute it)'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.errors import InvalidOutcome, RoutewiseError
from routewise.reward import Scalarizer
from routewise.reward.base import RewardFunction
from routewise.simulations.trace import SkippedLines, TraceEvent, TraceReader
from routewise.types import Outcome

__all__ = ["Chunk", "UsableRounds", "read_chunks"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CHUNK = 4096
"""Rounds per :class:`Chunk`."""


@dataclass(slots=True)
class Chunk:
    """Up to :data:`CHUNK` consecutive usable rounds (see the module docstring)."""

    contexts: list[dict[str, Any]]
    arms: IntArray
    """The logged arms, by number (:attr:`UsableRounds.arm_index`)."""
    pscore: FloatArray
    """The logging propensities."""
    reward: FloatArray
    """The evaluation rewards."""
    learn: dict[str, FloatArray]
    """The reward each learning candidate with its own ``@reward`` learns from, by name."""
    eligible: list[list[str] | None]
    fold: IntArray


class UsableRounds:
    """Which rounds :func:`read_chunks` yields: the bad ones are :attr:`skipped` (counted on
    the :attr:`first` pass only), the arm ids numbered and the logged rewards summed (on the
    first pass; the second only reads)."""

    def __init__(self, source: str, *, strict: bool, unit: str = "line") -> None:
        self.skipped = SkippedLines(source, strict=strict, unit=unit)
        self.first = True
        self.arm_index: dict[str, int] = {}
        self.reward_sum = 0.0

    def bad(self, line: int, field: str, reason: str) -> None:
        if self.skipped.strict or self.first:
            self.skipped.bad(line, field, reason)

    def admit(self, ev: TraceEvent, reward: float) -> int:
        """Count a usable round; the number of its arm."""
        k = self.arm_index.get(ev.arm)
        if k is None:
            if not self.first:  # pragma: no cover - pass 1 saw every arm
                raise RoutewiseError(f"arm {ev.arm!r} appeared only in the second pass")
            k = self.arm_index[ev.arm] = len(self.arm_index)
        if self.first:
            for a in ev.eligible or ():
                if a not in self.arm_index:
                    self.arm_index[a] = len(self.arm_index)
            self.reward_sum += reward
        return k


def _reward_of(fn: RewardFunction, outcome: Mapping[str, Any]) -> float:
    return float(fn(Outcome.from_dict(outcome)))


def _rewards(
    ev: TraceEvent,
    eval_reward: RewardFunction | None,
    learn_rewards: Mapping[str, Scalarizer],
    rounds: UsableRounds,
) -> tuple[float, dict[str, float]] | None:
    """A round's evaluation reward and learning rewards, or ``None`` if it is skipped."""
    r: float | None = None
    lrs: dict[str, float] = {}
    if eval_reward is not None or learn_rewards:
        if ev.outcome is None:
            rounds.bad(
                ev.line, "outcome", "is required to recompute the reward (--reward or @reward)"
            )
            return None
        try:
            r = _reward_of(eval_reward, ev.outcome) if eval_reward is not None else None
            lrs = {k: _reward_of(f, ev.outcome) for k, f in learn_rewards.items()}
        except InvalidOutcome as exc:
            rounds.bad(ev.line, f"outcome.{exc.field}", exc.reason)
            return None
    if r is None:
        if ev.reward is None:
            rounds.bad(ev.line, "reward", "is required (or pass --reward PRESET to recompute it)")
            return None
        r = ev.reward
    return r, lrs


class _Buffer:
    """The rounds of the chunk being filled, as lists."""

    def __init__(self, learn_names: Iterable[str]) -> None:
        self.contexts: list[dict[str, Any]] = []
        self.arms: list[int] = []
        self.pscore: list[float] = []
        self.reward: list[float] = []
        self.learn: dict[str, list[float]] = {k: [] for k in learn_names}
        self.eligible: list[list[str] | None] = []
        self.fold: list[int] = []
        self.ordinal = 0

    def add(self, ev: TraceEvent, arm: int, reward: float, learn: dict[str, float]) -> None:
        self.contexts.append(ev.context)
        self.arms.append(arm)
        self.pscore.append(ev.propensity)
        self.reward.append(reward)
        for name, v in learn.items():
            self.learn[name].append(v)
        self.eligible.append(ev.eligible)
        self.fold.append(self.ordinal % 2)
        self.ordinal += 1

    def flush(self) -> Chunk:
        """The buffered rounds as a chunk (and the buffer emptied)."""
        chunk = Chunk(
            contexts=list(self.contexts),
            arms=np.asarray(self.arms, dtype=np.int64),
            pscore=np.asarray(self.pscore, dtype=np.float64),
            reward=np.asarray(self.reward, dtype=np.float64),
            learn={k: np.asarray(v, dtype=np.float64) for k, v in self.learn.items()},
            eligible=list(self.eligible),
            fold=np.asarray(self.fold, dtype=np.int64),
        )
        for lst in (self.contexts, self.arms, self.pscore, self.reward, self.eligible, self.fold):
            lst.clear()
        for values in self.learn.values():
            values.clear()
        return chunk


def read_chunks(
    reader: TraceReader,
    eval_reward: RewardFunction | None,
    learn_rewards: Mapping[str, Scalarizer],
    rounds: UsableRounds,
) -> Iterator[Chunk]:
    """The usable rounds of ``reader`` in chunks, with their evaluation rewards (the logged
    ones, or ``eval_reward`` of the logged outcomes) and learning rewards."""
    buf = _Buffer(learn_rewards)
    for ev in reader:
        got = _rewards(ev, eval_reward, learn_rewards, rounds)
        if got is None:
            continue
        r, lrs = got
        buf.add(ev, rounds.admit(ev, r), r, lrs)
        if len(buf.arms) >= CHUNK:
            yield buf.flush()
    if buf.arms:
        yield buf.flush()
