"""The learners of an experiment's variants: each variant's own policy (with what it
learned), reward, arm subset, outcome statistics and comparison with the control.

A variant whose spec leaves a field ``None`` inherits the controller's default
(:class:`VariantDefaults`). Building a learner resolves the spec — the policy from the
registry, the reward, the arm ids — and every error names the variant's field
(``variants.<name>.<field>``), so a bad spec is refused when the experiment is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routewise.bandits.base import Policy, make_policy
from routewise.controller.experiments.sequential import ComparisonHistory, VariantStats
from routewise.errors import ConfigError, PolicyError, RoutewiseError, UnknownArm
from routewise.reward import Scalarizer, reward_argument
from routewise.types import Arm, ExperimentSpec

__all__ = ["VariantDefaults", "VariantLearner", "build_learner", "build_learners"]


@dataclass(frozen=True, slots=True)
class VariantDefaults:
    """What a variant inherits from its controller: the default policy (its name and
    parameters), the default reward, the active arm ids, the feature dimension and the seed;
    ``known_arms`` are every arm the controller registered (an arm subset may name them).

    Examples
    --------
    >>> from routewise.bandits import make_policy
    >>> from routewise.reward import get_reward
    >>> defaults = VariantDefaults(make_policy("squarecb", seed=0), get_reward(),
    ...                            ["a:x/direct_emit", "b:y/direct_emit"], dim=4, seed=0)
    >>> spec = ExperimentSpec(name="e", variants={"a": {}, "b": {"arms": ["b:y/direct_emit"]}},
    ...                       split={"a": 0.5, "b": 0.5})
    >>> learner = build_learner(spec, "b", defaults)
    >>> learner.policy.name, learner.arms, learner.history is not None
    ('squarecb', ['b:y/direct_emit'], True)
    >>> build_learner(spec, "a", defaults).history is None  # the control
    True
    """

    policy: Policy
    reward: Scalarizer
    arm_ids: list[str]
    dim: int
    seed: int
    known_arms: frozenset[str] | None = None  # None: the active arm ids


@dataclass(slots=True)
class VariantLearner:
    """One variant's own learner: policy state, reward, arm subset (``None``: every arm),
    statistics and its comparison history with the control (``None`` for the control)."""

    policy: Policy
    reward: Scalarizer
    arms: list[str] | None
    stats: VariantStats
    history: ComparisonHistory | None

    def to_state(self) -> dict[str, Any]:
        """Plain-JSON state of what it learned (the snapshot's per-variant entry)."""
        return {
            "policy": self.policy.to_state(),
            "stats": self.stats.to_state(),
            "history": self.history.to_state() if self.history is not None else None,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`to_state` saved."""
        self.policy = Policy.from_state(state["policy"])
        self.stats = VariantStats.from_state(state["stats"])
        if state.get("history") is not None:
            self.history = ComparisonHistory.from_state(state["history"])


def _policy_spec(spec: str | dict[str, Any] | None, default: Policy) -> tuple[str, dict[str, Any]]:
    if spec is None:
        return default.name, {k: v for k, v in default.params().items() if k != "seed"}
    if isinstance(spec, str):
        return spec, {}
    params = dict(spec)
    name = str(params.pop("name", ""))
    params.pop("seed", None)
    return name, params


def _make_policy(name: str, params: dict[str, Any], seed: int, where: str) -> Policy:
    try:
        return make_policy(name, seed=seed, **params)
    except PolicyError as exc:
        raise PolicyError(f"{where}.policy: {exc}") from None
    except RoutewiseError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:  # a policy refusing its params
        raise ConfigError("variants", f"rejected by the controller ({exc})") from None


def _parse_arms(arms: list[str], where: str) -> list[str]:
    out = []
    for i, a in enumerate(arms):
        try:
            out.append(Arm.parse(a).id)
        except ConfigError as exc:
            raise ConfigError(f"{where}.arms[{i}]", exc.reason) from None
    return out


def build_learner(spec: ExperimentSpec, name: str, defaults: VariantDefaults) -> VariantLearner:
    """The fresh learner of variant ``name`` of ``spec``.

    Its policy is seeded ``seed + 7919·(i + 1)`` (``i``: the variant's position), distinct
    and reproducible per variant. Raises ``ConfigError`` naming ``variants.<name>.reward[.key]``
    or ``variants.<name>.arms[i]``, ``UnknownArm`` for an arm the controller does not have and
    ``PolicyError`` (``variants.<name>.policy: …``) for a policy the registry refuses.
    """
    where = f"variants.{name}"
    vs = spec.variants[name]
    reward = (
        defaults.reward
        if vs.reward is None
        else reward_argument(vs.reward, field=f"{where}.reward")
    )
    arms = None if vs.arms is None else _parse_arms(vs.arms, where)
    pol_name, params = _policy_spec(vs.policy, defaults.policy)
    seed = (defaults.seed + 7919 * (list(spec.variants).index(name) + 1)) % (2**63)
    policy = _make_policy(pol_name, params, seed, where)
    policy.add_arms(defaults.arm_ids)
    policy.ensure_dim(defaults.dim)
    known = defaults.known_arms if defaults.known_arms is not None else set(defaults.arm_ids)
    for a in arms or ():
        if a not in known:
            raise UnknownArm(a, defaults.arm_ids)
    history = None if name == spec.control else ComparisonHistory()
    return VariantLearner(policy, reward, arms, VariantStats(), history)


def build_learners(spec: ExperimentSpec, defaults: VariantDefaults) -> dict[str, VariantLearner]:
    """Fresh learners of every variant of ``spec``, in the spec's order."""
    return {name: build_learner(spec, name, defaults) for name in spec.variants}
