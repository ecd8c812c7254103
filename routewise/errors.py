"""The routewise exception tree.

Every error routewise raises on purpose derives from :class:`RoutewiseError` and carries
the context needed to act on it (the offending field, the decision id, the arm id)::

    RoutewiseError
    ├── ConfigError              bad constructor argument or config-file value   (.field)
    ├── InvalidContext           a context the featurizer cannot use             (.key)
    ├── InvalidOutcome           an outcome with a bad field                     (.field)
    │   ├── UnknownExperiment    an experiment name never created                (.name)
    │   └── ExperimentConflict   a lifecycle step the experiment's state forbids (.name)
    ├── UnknownArm               an arm id that is not registered                (.arm_id)
    ├── NoEligibleArms           an empty eligible arm set
    ├── UnknownDecision          feedback for a decision id never issued         (.decision_id)
    ├── FeedbackTooLate          feedback after the reward wait time             (.decision_id)
    ├── StateError               a store or snapshot that cannot be read/written
    │   └── state.lock.StoreInUse             another process holds the store's writer lock
    ├── PolicyError              a policy misused (bad state, bad parameters)
    ├── backends.base.ProviderError          a provider call failed (.category); the Router
    │                                        turns it into an Outcome, it never escapes
    ├── backends.modes.DecodeError           model text unreadable in its output mode (.reason)
    └── backends.llama.LocalModelUnavailable a local model / llama-server is not installed

Examples
--------
>>> from routewise.errors import InvalidContext, RoutewiseError
>>> err = InvalidContext("language", "expected a string, got list")
>>> isinstance(err, RoutewiseError), err.key
(True, 'language')
>>> str(err)
"context['language']: expected a string, got list"
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ExperimentConflict",
    "FeedbackTooLate",
    "InvalidContext",
    "InvalidOutcome",
    "NoEligibleArms",
    "PolicyError",
    "RoutewiseError",
    "StateError",
    "UnknownArm",
    "UnknownDecision",
    "UnknownExperiment",
]


class RoutewiseError(Exception):
    """Root of every error routewise raises deliberately."""


class ConfigError(RoutewiseError, ValueError):
    """A constructor argument or configuration value is invalid."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UnknownExperiment(ConfigError):
    """An experiment name that was never created (a :class:`ConfigError` on field ``name``).

    Examples
    --------
    >>> str(UnknownExperiment("ls", ["a", "b"]))
    "name: no experiment 'ls' (known: ['a', 'b'])"
    """

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.name = name
        self.known = sorted(known or [])
        super().__init__("name", f"no experiment {name!r} (known: {self.known})")


class ExperimentConflict(ConfigError):
    """A lifecycle step that the experiment's current state forbids (starting a second
    experiment, stopping a draft, reading the statistics of an aborted one…): a
    :class:`ConfigError` whose ``field`` names what conflicts (usually ``status``)."""

    def __init__(self, name: str, field: str, reason: str) -> None:
        self.name = name
        super().__init__(field, reason)


class InvalidContext(RoutewiseError, ValueError):
    """A request context contains a value the featurizer cannot use."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"context[{key!r}]: {reason}")


class InvalidOutcome(RoutewiseError, ValueError):
    """An outcome has a missing, negative or non-finite field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"outcome.{field}: {reason}")


class UnknownArm(RoutewiseError, KeyError):
    """An arm id was referenced that the controller or policy does not know."""

    def __init__(self, arm_id: str, known: list[str] | None = None) -> None:
        self.arm_id = arm_id
        self.known = known or []
        hint = f"; known arms: {', '.join(self.known)}" if self.known else ""
        super().__init__(f"unknown arm {arm_id!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class NoEligibleArms(RoutewiseError, ValueError):
    """A decision was requested over an empty set of arms."""


class UnknownDecision(RoutewiseError, KeyError):
    """Feedback names a decision id that was never issued (or has been purged)."""

    def __init__(self, decision_id: str) -> None:
        self.decision_id = decision_id
        super().__init__(f"decision_id {decision_id!r}: unknown decision")

    def __str__(self) -> str:
        return str(self.args[0])


class FeedbackTooLate(RoutewiseError, ValueError):
    """Feedback arrived after the configured reward wait time."""

    def __init__(self, decision_id: str, age_s: float, wait_s: float) -> None:
        self.decision_id = decision_id
        self.age_s = age_s
        self.wait_s = wait_s
        super().__init__(
            f"decision_id {decision_id!r}: feedback arrived {age_s:.1f}s after the decision, "
            f"past the reward wait time of {wait_s:.1f}s"
        )


class StateError(RoutewiseError):
    """Persistent state cannot be read or written consistently."""


class PolicyError(RoutewiseError, ValueError):
    """A policy was given bad parameters or a state it cannot restore."""
