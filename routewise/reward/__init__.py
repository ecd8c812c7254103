"""Rewards: scalarize an outcome's correctness, latency and cost into one number in [0, 1].

Examples
--------
>>> import routewise.reward as rr
>>> from routewise.types import Outcome
>>> reward = rr.get_reward("high_correctness")
>>> round(reward(Outcome(valid=True, latency_ms=2000.0, cost_usd=0.01)), 6)  # .9 + .05·.8 + .05·.8
0.98
>>> reward(Outcome(valid=True, latency_ms=200.0, cost_usd=0.0, error="timeout"))
0.0
"""

from routewise.reward.base import RewardFunction
from routewise.reward.presets import (
    DEFAULT_PRESET,
    PRESETS,
    RewardSpec,
    get_reward,
    reward_argument,
)
from routewise.reward.scalarize import Scalarizer

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "RewardFunction",
    "RewardSpec",
    "Scalarizer",
    "get_reward",
    "reward_argument",
]
