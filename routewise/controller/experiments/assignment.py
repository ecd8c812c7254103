"""Which variant serves a decision while an experiment runs.

The unit of assignment is the caller's ``unit_id`` (a user, a session), else the
``request_id``, else the decision itself; :func:`~routewise.types.assign` hashes it with the
experiment's salt into a variant (sticky and deterministic). The :class:`Assignment` says how
the decision is then made: with the variant's policy, its reward (unless the caller gave
one) and its arm subset.

Examples
--------
>>> assignment_unit(None, "req-1", "d-1"), assignment_unit("user-7", "req-1", "d-1")
('req-1', 'user-7')
"""

from __future__ import annotations

from dataclasses import dataclass

from routewise.controller.experiments.variants import VariantLearner
from routewise.types import assign

__all__ = ["Assignment", "assign", "assignment_unit"]


def assignment_unit(unit_id: str | None, request_id: str | None, decision_id: str) -> str:
    """The unit a decision is assigned by: ``unit_id``, else ``request_id``, else the
    decision id (then every decision is its own unit)."""
    if unit_id is not None:
        return str(unit_id)
    return str(request_id) if request_id is not None else decision_id


@dataclass(frozen=True, slots=True)
class Assignment:
    """A decision routed by a running experiment: its name, the variant and the variant's
    learner (policy, reward, arm subset).

    Examples
    --------
    >>> from routewise.bandits import make_policy
    >>> from routewise.controller.experiments.sequential import VariantStats
    >>> from routewise.reward import get_reward
    >>> learner = VariantLearner(make_policy("uniform"), get_reward(), ["b"], VariantStats(), None)
    >>> Assignment("e", "candidate", learner).eligible(None, ["a", "b"])
    ['b']
    """

    experiment: str
    variant: str
    learner: VariantLearner

    def eligible(self, eligible: list[str] | None, arm_ids: list[str]) -> list[str] | None:
        """The arms the variant may choose among: the caller's eligible arms (``None``: all
        of ``arm_ids``) within the variant's subset, or the subset itself when they do not
        meet."""
        subset = self.learner.arms
        if subset is None:
            return eligible
        base = eligible if eligible is not None else arm_ids
        return [a for a in base if a in subset] or list(subset)
