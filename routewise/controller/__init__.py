"""The controller core: decide / feedback / best policy / status, and its featurizer."""

from routewise.controller.core import (
    DEFAULT_POLICY,
    Controller,
    Decision,
    FeedbackResult,
    RankedArm,
    Status,
)
from routewise.controller.features import Featurizer
from routewise.controller.guardian import (
    ErrorBurstCheck,
    Guardian,
    GuardianEvent,
    LatencyCheck,
    ValidityCheck,
)

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
