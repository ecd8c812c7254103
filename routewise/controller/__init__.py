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

__all__ = ["DEFAULT_POLICY", "Controller", "Decision", "Featurizer", "FeedbackResult", "RankedArm", "Status"]
