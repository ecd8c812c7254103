"""Synthetic environments, offline replay of logged traces and regret reports."""

from routewise.simulations.runner import PolicySpec, SimulationResult, parse_policy_spec, simulate
from routewise.simulations.scenario import SCENARIOS, Event, Scenario, load_scenario
from routewise.simulations.synthetic import SyntheticEnvironment

__all__ = [
    "SCENARIOS",
    "Event",
    "PolicySpec",
    "Scenario",
    "SimulationResult",
    "SyntheticEnvironment",
    "load_scenario",
    "parse_policy_spec",
    "simulate",
]
