"""routewise — learn online which (backend, output mode) arm serves each structured-output request.

Layers (top to bottom; a module imports only from layers below it, checked by import-linter):
``cli`` → ``server`` | ``client`` | ``demo`` (adapters) → ``simulations`` | ``backends`` →
``controller`` → ``state`` | ``reward`` | ``config`` → ``types`` (values and wire types) →
``bandits`` → ``errors``. This module re-exports the public surface.

Examples
--------
>>> import routewise as rw
>>> ctl = rw.Controller(arms=["openai:gpt-5.4/direct_emit", "ollama:llama3/local_reconstructed"], seed=0)
>>> d = ctl.decide({"task": "extraction", "n_fields": 12})
>>> r = ctl.feedback(d.decision_id, rw.Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004))
>>> round(r.reward, 3) == round(ctl.reward(rw.Outcome(valid=True, latency_ms=840.0, cost_usd=0.0004)), 3)
True
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

from routewise.backends.router import Receipt, Router, RouteResult
from routewise.client import APIError, AsyncClient, Client
from routewise.controller import Controller, Guardian
from routewise.controller.notify import WebhookNotifier
from routewise.errors import (
    ConfigError,
    ExperimentConflict,
    FeedbackTooLate,
    InvalidContext,
    InvalidOutcome,
    NoEligibleArms,
    PolicyError,
    RoutewiseError,
    StateError,
    UnknownArm,
    UnknownDecision,
    UnknownExperiment,
)
from routewise.types import (
    Arm,
    ArmStats,
    Decision,
    FeedbackResult,
    GuardianEvent,
    Mode,
    Outcome,
    RankedArm,
    Status,
    make_arms,
)

try:  # the version is written once, in pyproject.toml
    __version__ = _package_version("routewise")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "APIError",
    "Arm",
    "ArmStats",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Controller",
    "Decision",
    "ExperimentConflict",
    "FeedbackResult",
    "FeedbackTooLate",
    "Guardian",
    "GuardianEvent",
    "InvalidContext",
    "InvalidOutcome",
    "Mode",
    "NoEligibleArms",
    "Outcome",
    "PolicyError",
    "RankedArm",
    "Receipt",
    "RouteResult",
    "Router",
    "RoutewiseError",
    "StateError",
    "Status",
    "UnknownArm",
    "UnknownDecision",
    "UnknownExperiment",
    "WebhookNotifier",
    "__version__",
    "make_arms",
]
