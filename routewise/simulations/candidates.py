"""Candidates of an offline evaluation (:func:`~routewise.simulations.replay`): a static
distribution over arm ids, or a registered policy learning as it goes.

Examples
--------
>>> [type(parse_candidate(s)).__name__ for s in ["squarecb", "linucb:alpha=0.3@low_latency"]]
['LearningCandidate', 'LearningCandidate']
>>> StaticCandidate.from_mapping("only_a", {"a": 1}).probs
{'a': 1.0}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routewise.errors import ConfigError
from routewise.reward import Scalarizer, get_reward
from routewise.simulations.policies import PolicySpec, parse_policy_spec

__all__ = ["Candidate", "LearningCandidate", "StaticCandidate", "parse_candidate"]


@dataclass(frozen=True, slots=True)
class StaticCandidate:
    """A fixed distribution over arm ids.

    Examples
    --------
    >>> StaticCandidate.from_mapping("half", {"a": 0.5, "b": 0.5}).probs
    {'a': 0.5, 'b': 0.5}
    >>> StaticCandidate.from_mapping("bad", {"a": 0.7})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: distribution: probabilities must sum to 1, they sum to 0.7
    """

    name: str
    probs: dict[str, float]

    @classmethod
    def from_file(cls, path: str | Path) -> StaticCandidate:
        """Read ``{arm_id: probability}`` (non-negative, summing to 1) from a JSON file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("policy", f"distribution file {str(p)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(str(p), f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_mapping(p.stem, data, source=str(p))

    @classmethod
    def from_mapping(cls, name: str, data: Any, *, source: str = "distribution") -> StaticCandidate:
        if not isinstance(data, dict) or not data:
            raise ConfigError(source, "must be a non-empty JSON object {arm_id: probability}")
        probs: dict[str, float] = {}
        for arm, v in data.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not (math.isfinite(v) and v >= 0)
            ):
                raise ConfigError(f"{source}: {arm}", f"must be a probability >= 0, got {v!r}")
            probs[str(arm)] = float(v)
        total = sum(probs.values())
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(source, f"probabilities must sum to 1, they sum to {total:.6g}")
        return cls(name, probs)


@dataclass(frozen=True, slots=True)
class LearningCandidate:
    """A registered policy learning as it goes (optionally from a different reward).

    Examples
    --------
    >>> from routewise.simulations import parse_policy_spec
    >>> LearningCandidate("ts", parse_policy_spec("lints")).spec.policy
    'lints'
    """

    name: str
    spec: PolicySpec
    learn_reward: Scalarizer | None = None
    features: dict[str, Any] | None = None


Candidate = StaticCandidate | LearningCandidate


def parse_candidate(spec: str | Path | Candidate) -> Candidate:
    """A candidate from a CLI-style spec: a ``.json`` distribution file (or any ``Path``),
    or ``policy[:param=value…][@reward_preset]``.

    Examples
    --------
    >>> c = parse_candidate("linucb:alpha=0.3@low_latency")
    >>> c.name, c.spec.policy, c.spec.params, c.learn_reward.name
    ('linucb:alpha=0.3@low_latency', 'linucb', {'alpha': 0.3}, 'low_latency')
    """
    if isinstance(spec, StaticCandidate | LearningCandidate):
        return spec
    if isinstance(spec, Path):
        return StaticCandidate.from_file(spec)
    text = spec.strip()
    if text.lower().endswith(".json") or Path(text).is_file():
        return StaticCandidate.from_file(text)
    pol, at, rew = text.partition("@")
    learn = None
    if at:
        r = get_reward(rew)
        if not isinstance(r, Scalarizer):  # pragma: no cover - presets are Scalarizers
            raise ConfigError("policy", f"{text!r}: @reward must be a preset")
        learn = r
    return LearningCandidate(text, parse_policy_spec(pol), learn)
