"""Bandit policies: pure, seedable learners over feature vectors.

Every policy returns the chosen arm with the exact probability it was drawn with, supports
an exploration floor, per-decision eligible arm subsets, forgetting, and a JSON state
round-trip. Look policies up by registry name with :func:`make_policy`.

Examples
--------
>>> import routewise.bandits as rb
>>> sorted(rb.REGISTRY)  # doctest: +NORMALIZE_WHITESPACE
['epsilon_greedy', 'lints', 'linucb', 'squarecb', 'thompson', 'ucb1', 'uniform']
"""

from routewise.bandits.base import (
    REGISTRY,
    Policy,
    Selection,
    make_policy,
    register,
    split_policy_spec,
)
from routewise.bandits.epsilon_greedy import EpsilonGreedy
from routewise.bandits.lin_ts import LinTS
from routewise.bandits.lin_ucb import LinUCB
from routewise.bandits.linear import LinearPolicy
from routewise.bandits.ridge import RidgeArms
from routewise.bandits.square_cb import SquareCB
from routewise.bandits.thompson import Thompson
from routewise.bandits.ucb1 import UCB1
from routewise.bandits.uniform import Uniform

__all__ = [
    "REGISTRY",
    "UCB1",
    "EpsilonGreedy",
    "LinTS",
    "LinUCB",
    "LinearPolicy",
    "Policy",
    "RidgeArms",
    "Selection",
    "SquareCB",
    "Thompson",
    "Uniform",
    "make_policy",
    "register",
    "split_policy_spec",
]
