"""Value types and wire types — the vocabulary every layer shares.

* :mod:`routewise.types.values` — output modes, arms and outcomes (validated on
  construction; the hot path's inputs).
* :mod:`routewise.types.wire` — every result that crosses a boundary (``Decision``,
  ``FeedbackResult``, ``RankedArm``, ``Status``, ``GuardianEvent``…), defined once: the library
  returns them, the sidecar answers with them, the client parses them.
* :mod:`routewise.types.experiments` — experiment specs and reports (wire types too).

This package imports only :mod:`routewise.errors` (and pydantic); everything else imports it.
"""

from routewise.types.experiments import (
    GUARDRAILS,
    Comparison,
    ExperimentReport,
    ExperimentSpec,
    ExperimentStatus,
    Guardrails,
    VariantReport,
    VariantSpec,
    assign,
)
from routewise.types.values import (
    MAX_COST_USD,
    MAX_LATENCY_MS,
    Arm,
    ArmLike,
    Mode,
    Outcome,
    make_arms,
)
from routewise.types.wire import (
    ArmStats,
    Decision,
    ErrorBody,
    FeedbackResult,
    GuardianEvent,
    GuardianHealth,
    HealthState,
    OperatorResult,
    PolicyRanking,
    RankedArm,
    ServiceHealth,
    Status,
    Wire,
    WireFloat,
)

__all__ = [
    "GUARDRAILS",
    "MAX_COST_USD",
    "MAX_LATENCY_MS",
    "Arm",
    "ArmLike",
    "ArmStats",
    "Comparison",
    "Decision",
    "ErrorBody",
    "ExperimentReport",
    "ExperimentSpec",
    "ExperimentStatus",
    "FeedbackResult",
    "GuardianEvent",
    "GuardianHealth",
    "Guardrails",
    "HealthState",
    "Mode",
    "OperatorResult",
    "Outcome",
    "PolicyRanking",
    "RankedArm",
    "ServiceHealth",
    "Status",
    "VariantReport",
    "VariantSpec",
    "Wire",
    "WireFloat",
    "assign",
    "make_arms",
]
