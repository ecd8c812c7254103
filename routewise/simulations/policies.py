"""Policy specs for simulation and replay: ``"squarecb"``, ``"linucb:alpha=0.3"``, ``"default"``.

A :class:`PolicySpec` names a registered policy and its parameters; :func:`parse_policy_spec`
reads the CLI form and checks it against the registry (the seed comes from the run, never
from the spec).

Examples
--------
>>> spec = parse_policy_spec("epsilon_greedy:epsilon=0.2")
>>> spec.policy, spec.params, spec.build(seed=3).epsilon
('epsilon_greedy', {'epsilon': 0.2}, 0.2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from routewise.bandits import REGISTRY, Policy, make_policy, split_policy_spec
from routewise.controller import DEFAULT_POLICY
from routewise.errors import ConfigError, PolicyError

__all__ = ["PolicySpec", "parse_policy_spec"]


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy to simulate: a display name, a registry name and parameters.

    Examples
    --------
    >>> PolicySpec("greedy-ish", "epsilon_greedy", {"epsilon": 0.05}).build(seed=1).epsilon
    0.05
    """

    name: str
    policy: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, seed: int) -> Policy:
        return make_policy(self.policy, seed=seed, **self.params)


def parse_policy_spec(spec: str) -> PolicySpec:
    """``"squarecb"``, ``"linucb:alpha=0.3"``, ``"default"`` (the Controller's tuned default).

    Values are read as JSON when they parse (numbers, booleans), else kept as strings.

    Examples
    --------
    >>> parse_policy_spec("linucb:alpha=0.3")
    PolicySpec(name='linucb:alpha=0.3', policy='linucb', params={'alpha': 0.3})
    >>> parse_policy_spec("default").policy
    'squarecb'
    >>> parse_policy_spec("bogus")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: policies: unknown policy 'bogus'; one of default, epsilon_greedy, ...
    """
    text = spec.strip()
    try:
        name, params = split_policy_spec(text)
    except PolicyError as exc:
        raise ConfigError("policies", str(exc).removeprefix("policy: ")) from None
    if name == "default":
        if params:
            raise ConfigError("policies", "'default' takes no parameters (it is the tuned default)")
        return PolicySpec("default", DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1]))
    if name not in REGISTRY:
        raise ConfigError(
            "policies",
            f"unknown policy {name!r}; one of {', '.join(['default', *sorted(REGISTRY)])}",
        )
    if "seed" in params:
        raise ConfigError("policies", f"{text!r}: the seed comes from --seed/--seeds, not the spec")
    try:
        make_policy(name, **params)
    except PolicyError as exc:
        raise ConfigError("policies", f"{text!r}: {exc}") from None
    return PolicySpec(text, name, params)
