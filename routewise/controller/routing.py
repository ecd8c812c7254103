"""Choosing an arm: the Guardian's filters — an operator's pin, quarantined arms left out, the
probe lottery for probing arms — around the policy's draw.

The distribution a :class:`Choice` carries is the one the arm was actually drawn from, after
every filter, so the logged propensity stays exact for off-policy evaluation: with probing
arms it is the mixture ``(1 − s)·policy + s·uniform(probing)`` (``s``: the probe share).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from routewise.bandits.base import FloatArray, Policy, Selection
from routewise.controller.guardian import Guardian
from routewise.types import GuardianEvent

__all__ = ["ArmChooser", "Choice"]


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~0.8 µs per decision
class Choice:
    """One draw: the arm, its exact propensity, the arms it was drawn among (``names``) with
    their probabilities and the policy's scores, whether it explored, and how the
    propensity was computed (``"exact"`` or ``"monte_carlo"``).

    Examples
    --------
    >>> c = Choice("a/direct_emit", 1.0, ["a/direct_emit"], np.ones(1), np.zeros(1), False, "exact")
    >>> c.arm, c.propensity, c.names
    ('a/direct_emit', 1.0, ['a/direct_emit'])
    """

    arm: str
    propensity: float
    names: list[str]
    probabilities: FloatArray
    scores: FloatArray
    explored: bool
    method: str

    @classmethod
    def drawn(cls, sel: Selection, names: list[str]) -> Choice:
        """A plain policy draw over ``names``."""
        return cls(
            sel.arm, sel.propensity, names, sel.probabilities, sel.scores, sel.explored, sel.method
        )


class ArmChooser:
    """Applies the Guardian (``None``: no filtering) to a policy's choice.

    ``rng`` draws the probe lottery (the controller's seeded generator, restored with its
    snapshot); ``record`` receives the transitions the Guardian makes when it is advanced to
    the decision's time (cooldowns that ended).

    Examples
    --------
    >>> from routewise.bandits import make_policy
    >>> arms = ["a/direct_emit", "b/direct_emit"]
    >>> policy = make_policy("uniform", seed=0)
    >>> policy.add_arms(arms)
    >>> g = Guardian()
    >>> g.add_arms(arms)
    >>> chooser = ArmChooser(g, np.random.default_rng(0), lambda events: None)
    >>> _ = g.pin("b/direct_emit", ts=0.0)
    >>> c = chooser.choose(np.ones(1), None, 1.0, policy, None, arms)
    >>> c.arm, c.propensity
    ('b/direct_emit', 1.0)
    """

    def __init__(
        self,
        guardian: Guardian | None,
        rng: np.random.Generator,
        record: Callable[[list[GuardianEvent]], None],
    ) -> None:
        self.guardian = guardian
        self._rng = rng
        self._record = record

    def choose(
        self,
        x: FloatArray,
        eligible: list[str] | None,
        now: float,
        policy: Policy,
        all_arg: list[str] | None,
        arm_ids: list[str],
    ) -> Choice:
        """Pick an arm for features ``x`` among ``eligible`` (``None``: every arm of
        ``arm_ids``; ``all_arg`` is what the policy takes for "every arm").

        The Guardian is first advanced to ``now`` (its transitions go to ``record``)."""
        g = self.guardian
        if g is None:
            sel = policy.select(x, eligible if eligible is not None else all_arg)
            return Choice.drawn(sel, eligible if eligible is not None else arm_ids)
        requested = eligible if eligible is not None else arm_ids
        if g.quiet:  # tick and split would change nothing: serve every requested arm
            if len(requested) == len(arm_ids):
                return Choice.drawn(policy.select(x, all_arg), arm_ids)
            names = list(requested)
            return Choice.drawn(policy.select(x, names), names)
        self._record(g.tick(now))
        pinned = g.pinned
        if pinned is not None and pinned in requested:
            mean, _ = policy.estimate(x, [pinned])
            return Choice(pinned, 1.0, [pinned], np.ones(1), mean, False, "exact")
        serving, probing = g.split(requested)
        full = len(serving) == len(arm_ids)
        serve_arg = all_arg if full else serving
        names = arm_ids if full else serving
        if not probing:
            return Choice.drawn(policy.select(x, serve_arg), names)
        return self._probe_lottery(x, policy, serve_arg, serving, probing, g.probe_share)

    def _probe_lottery(
        self,
        x: FloatArray,
        policy: Policy,
        serve_arg: list[str] | None,
        serving: list[str],
        probing: list[str],
        share: float,
    ) -> Choice:
        """With probability ``share`` a uniformly drawn probing arm, else the policy's draw
        among the serving arms."""
        if self._rng.random() < share:
            probs_p, scores_p, _ = policy.distribution(x, serve_arg)
            arm = probing[int(self._rng.integers(len(probing)))]
            propensity, explored, method = (
                share / len(probing),
                True,
                policy.propensity_method,
            )
        else:
            sel = policy.select(x, serve_arg)
            probs_p, scores_p = sel.probabilities, sel.scores
            arm, propensity, explored, method = (
                sel.arm,
                (1.0 - share) * sel.propensity,
                sel.explored,
                sel.method,
            )
        mean_probe, _ = policy.estimate(x, probing)
        probs = np.concatenate(
            [(1.0 - share) * probs_p, np.full(len(probing), share / len(probing))]
        )
        return Choice(
            arm,
            propensity,
            [*serving, *probing],
            probs,
            np.concatenate([scores_p, mean_probe]),
            explored,
            method,
        )
