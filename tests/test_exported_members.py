"""The curated public surface (HOUSE_STYLE 1): adding or removing a name is a conscious act."""

import routewise


def test_all_is_exactly_the_public_surface() -> None:
    assert sorted(routewise.__all__) == sorted(
        [
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
    )
    for name in routewise.__all__:
        assert hasattr(routewise, name), name


def test_every_error_derives_from_the_root() -> None:
    for name in routewise.__all__:
        obj = getattr(routewise, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, routewise.RoutewiseError), name
