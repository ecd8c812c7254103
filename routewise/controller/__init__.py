"""The controller: decide / feedback / best policy / status, orchestrating the policy, the
featurizer, the Guardian, the store and the experiments it delegates to.

* :mod:`~routewise.controller.core` — :class:`Controller` (the public verbs; queries are pure,
  time-driven transitions happen on the write path or in ``tick()``).
* :mod:`~routewise.controller.actions` — operator actions (pin, quarantine, release) and the
  experiment lifecycle, shared through the log on a shared store.
* :mod:`~routewise.controller.replica` — a replica on a shared (PostgreSQL) store: the
  follower thread that applies every record of the shared log in order, exactly once.
* :mod:`~routewise.controller.setup` — argument checks and resolution (store, arms, seed,
  policy, features), ``Controller.from_settings``'s mapping of the settings.
* :mod:`~routewise.controller.persistence` — the learned state: applying a feedback (live and
  in replay), snapshots, restore, store metadata, transition counts, trace export.
* :mod:`~routewise.controller.routing` — :class:`Choice` and the Guardian's filters around the
  policy's draw (pin, quarantine, probe lottery) with exact propensities.
* :mod:`~routewise.controller.features` — the :class:`Featurizer` (dict context → vector).
* :mod:`~routewise.controller.guardian` — the :class:`Guardian` package (checks, baselines,
  health states, probe windows).
* :mod:`~routewise.controller.experiments` — A/B experiments: the :class:`Experiments`
  collaborator, sequential statistics, checks, report, plot.
* :mod:`~routewise.controller.notify` — telling the operators: ``Notice``, ``Listener`` and
  ``WebhookNotifier`` (signed webhook deliveries; ``Controller.subscribe``).
* :mod:`~routewise.controller.stats` — per-arm running statistics; :mod:`~.ids` — decision ids.
"""

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
