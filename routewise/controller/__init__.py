"""The controller core: decide / feedback / best policy / status, and its featurizer."""

from routewise.controller.core import DEFAULT_POLICY, Controller
from routewise.controller.features import Featurizer
from routewise.controller.guardian import ErrorBurstCheck, Guardian, LatencyCheck, ValidityCheck
from routewise.types import Decision, FeedbackResult, GuardianEvent, RankedArm, Status

__all__ = [
    "DEFAULT_POLICY",
    "Controller",
    "Decision",
    "ErrorBurstCheck",
    "Featurizer",
    "FeedbackResult",
    "Guardian",
    "GuardianEvent",
    "LatencyCheck",
    "RankedArm",
    "Status",
    "ValidityCheck",
]
