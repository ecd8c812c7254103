"""The controller core: decide / feedback / best policy / status, its featurizer, the
Guardian, the arm choice and the experiments it delegates to."""

from routewise.controller.core import DEFAULT_POLICY, Controller
from routewise.controller.experiments.manager import Experiments
from routewise.controller.features import Featurizer
from routewise.controller.guardian import ErrorBurstCheck, Guardian, LatencyCheck, ValidityCheck
from routewise.controller.routing import Choice
from routewise.types import Decision, FeedbackResult, GuardianEvent, RankedArm, Status

__all__ = [
    "DEFAULT_POLICY",
    "Choice",
    "Controller",
    "Decision",
    "ErrorBurstCheck",
    "Experiments",
    "Featurizer",
    "FeedbackResult",
    "Guardian",
    "GuardianEvent",
    "LatencyCheck",
    "RankedArm",
    "Status",
    "ValidityCheck",
]
