"""Simulations: synthetic environments, offline replay of logged traces, regret reports.

Two questions before a routing policy meets real traffic — "how does it behave when a
backend changes under it?" and "how would it have done on the traffic we logged?":

* **Synthetic environments** (:class:`SyntheticEnvironment`, parameters in
  ``data/environment.toml``): backends × output modes whose validity, latency and cost
  depend on the request context, with exactly computable expected rewards
  (:mod:`~routewise.simulations.outcomes`). **Scenarios** (:func:`load_scenario`; named:
  ``stationary``, ``degradation``, ``outage``, ``price-shock``, ``mix-shift``, or your own
  TOML/YAML) put degradations, outages, price changes, recoveries and traffic-mix shifts on a
  timeline. :func:`simulate` runs policies through the real :class:`~routewise.Controller`
  (Guardian included) and returns a :class:`SimulationResult` with exact regret against the
  per-request oracle, tables, plots and JSON.
* **Trace-driven simulation** (:class:`TraceEnvironment`): outcome models fitted to a logged
  trace, to simulate new policies against the backends as they behaved.
* **Off-policy evaluation**: :mod:`~routewise.simulations.ope` (IPS, SNIPS, DM, DR, Switch-DR
  on arrays, as in Open Bandit Pipeline, with bootstrap intervals and the effective sample
  size) and :func:`replay` (those estimators over a JSONL trace or SQLite store, static
  distributions and learning policies side by side, plus Li et al.'s rejection replay).

Errors: bad scenario/environment files and arguments raise
:class:`~routewise.errors.ConfigError` naming the field; unusable trace lines raise (with
``strict``) :class:`TraceError` naming the line and field::

    RoutewiseError
    └── TraceError     a trace line that cannot be used     (.source, .line, .field)

Examples
--------
>>> from routewise.simulations import load_scenario, simulate
>>> result = simulate(load_scenario("stationary"), ["squarecb"], rounds=200, seeds=1)
>>> row = result.summary()[0]
>>> row["policy"], row["regret"]["mean"] > 0
('squarecb', True)
"""

from routewise.simulations import ope
from routewise.simulations.base import Effects, Environment
from routewise.simulations.candidates import LearningCandidate, StaticCandidate, parse_candidate
from routewise.simulations.outcomes import OutcomeParams, expected_reward
from routewise.simulations.policies import PolicySpec, parse_policy_spec
from routewise.simulations.records import RunRecord
from routewise.simulations.replay import replay
from routewise.simulations.replay_result import CandidateResult, ReplayResult
from routewise.simulations.results import SimulationResult
from routewise.simulations.runner import simulate
from routewise.simulations.scenario import SCENARIOS, Event, Scenario, load_scenario
from routewise.simulations.synthetic import SyntheticEnvironment
from routewise.simulations.trace import TraceError, TraceReader
from routewise.simulations.trace_env import TraceEnvironment

__all__ = [
    "SCENARIOS",
    "CandidateResult",
    "Effects",
    "Environment",
    "Event",
    "LearningCandidate",
    "OutcomeParams",
    "PolicySpec",
    "ReplayResult",
    "RunRecord",
    "Scenario",
    "SimulationResult",
    "StaticCandidate",
    "SyntheticEnvironment",
    "TraceEnvironment",
    "TraceError",
    "TraceReader",
    "expected_reward",
    "load_scenario",
    "ope",
    "parse_candidate",
    "parse_policy_spec",
    "replay",
    "simulate",
]
