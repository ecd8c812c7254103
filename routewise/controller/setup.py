"""Building a :class:`~routewise.Controller`: its arguments checked, and what an argument
leaves open taken from the store's metadata (arms, seed, policy, features) or from
:class:`~routewise.config.RoutewiseSettings`.

Precedence for the policy, the reward and the features: explicit argument > stored > default.
Every refusal is a :class:`~routewise.errors.ConfigError` naming the argument.

Examples
--------
>>> resolve_arms(None, {"arms": ["a:x/direct_emit"]})[0].id
'a:x/direct_emit'
>>> resolve_policy("default", None, seed=0).name
'squarecb'
>>> guardian_from_setting({"cooldown_s": 60, "latency": {"ratio": 1.3}}).cooldown_s
60
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from routewise.bandits.base import Policy, make_policy, split_policy_spec
from routewise.config import RoutewiseSettings
from routewise.controller.guardian import (
    Check,
    ErrorBurstCheck,
    Guardian,
    LatencyCheck,
    ValidityCheck,
)
from routewise.errors import ConfigError
from routewise.state.base import Durability, Store
from routewise.state.memory import MemoryStore
from routewise.state.sqlite import SQLiteStore
from routewise.types import Arm, ArmLike

__all__ = [
    "DEFAULT_POLICY",
    "check_bounds",
    "check_options",
    "controller_kwargs",
    "guardian_argument",
    "guardian_from_setting",
    "new_store_file",
    "open_store",
    "resolve_arms",
    "resolve_features",
    "resolve_policy",
    "resolve_seed",
]

#: The tuned default policy (see benchmarks/bakeoff.py and the routing simulation).
DEFAULT_POLICY: tuple[str, dict[str, Any]] = ("squarecb", {"gamma_scale": 100.0, "optimism": 0.3})


def check_options(
    reward_wait_s: float | None,
    late_feedback: str,
    default_reward: float | None,
    snapshot_every: int,
    recent_window: int,
) -> None:
    """Refuse a bad reward-wait / late-feedback / snapshot / recent-window argument."""
    if reward_wait_s is not None and not (reward_wait_s > 0 and np.isfinite(reward_wait_s)):
        raise ConfigError(
            "reward_wait_s", f"must be a positive number of seconds, got {reward_wait_s!r}"
        )
    if late_feedback not in ("reject", "accept"):
        raise ConfigError("late_feedback", f"must be 'reject' or 'accept', got {late_feedback!r}")
    if default_reward is not None:
        if not (0.0 <= default_reward <= 1.0):
            raise ConfigError("default_reward", f"must be in [0, 1], got {default_reward!r}")
        if reward_wait_s is None:
            raise ConfigError("default_reward", "needs reward_wait_s (when is a reward missing?)")
    if snapshot_every < 1:
        raise ConfigError("snapshot_every", f"must be >= 1, got {snapshot_every!r}")
    if recent_window < 1:
        raise ConfigError("recent_window", f"must be >= 1, got {recent_window!r}")


def check_bounds(**bounds: int) -> None:
    """Refuse a memory bound (``max_pending=…``, ``max_feature_keys=…``…) that is not an
    integer >= 1.

    Examples
    --------
    >>> check_bounds(max_pending=0)
    Traceback (most recent call last):
    ...
    routewise.errors.ConfigError: max_pending: must be an integer >= 1, got 0
    """
    for name, value in bounds.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(name, f"must be an integer >= 1, got {value!r}")


def guardian_argument(guardian: Guardian | bool | None) -> Guardian | None:
    """``True`` → a default Guardian, ``False``/``None`` → none, a Guardian as is."""
    if guardian is True:
        return Guardian()
    if guardian is False or guardian is None:
        return None
    if not isinstance(guardian, Guardian):
        raise ConfigError(
            "guardian", f"expected True/False or a Guardian, got {type(guardian).__name__}"
        )
    return guardian


def _is_postgres_url(store: object) -> bool:
    return isinstance(store, str) and store.lower().startswith(("postgresql://", "postgres://"))


def new_store_file(store: Store | str | Path | None) -> Path | None:
    """The SQLite file ``store`` would create (``None`` if it exists or is not a path — a
    PostgreSQL URL is not), so a failed construction can remove it."""
    if _is_postgres_url(store):
        return None
    if isinstance(store, str | Path) and str(store) != ":memory:" and not Path(store).exists():
        return Path(store)
    return None


def open_store(
    store: Store | str | Path | None,
    durability: Durability,
    read_only: bool,
    *,
    integrity_check: bool = True,
) -> Store:
    """``None`` → a memory store, a ``postgresql://`` (or ``postgres://``) URL → a
    PostgreSQL store, a path → an SQLite store (an existing one checked with ``PRAGMA
    quick_check`` unless ``integrity_check`` is false), a Store as is."""
    if store is None:
        return MemoryStore()
    if isinstance(store, str) and _is_postgres_url(store):
        from routewise.state.postgres import PostgresStore  # psycopg: the 'postgres' extra

        return PostgresStore(store, durability=durability, read_only=read_only)
    if isinstance(store, str | Path):
        return SQLiteStore(
            store, durability=durability, read_only=read_only, integrity_check=integrity_check
        )
    if isinstance(store, Store):
        return store
    raise ConfigError("store", f"expected None, a path or a Store, got {type(store).__name__}")


def resolve_arms(arms: Iterable[ArmLike] | None, meta: Mapping[str, Any] | None) -> list[Arm]:
    """The arms given, else the stored ones; at least one, no duplicates."""
    if arms is None:
        if meta is None:
            raise ConfigError(
                "arms", "required when creating a new controller (the store is empty)"
            )
        arm_list = [Arm.parse(a) for a in meta["arms"]]
    else:
        if isinstance(arms, str | Arm):
            raise ConfigError("arms", "expected a list of arms, got a single arm")
        arm_list = [Arm.parse(a) for a in arms]
    if not arm_list:
        raise ConfigError("arms", "at least one arm is required")
    ids = [a.id for a in arm_list]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError("arms", f"duplicate arm {dup!r}")
    return arm_list


def resolve_seed(seed: int | None, meta: Mapping[str, Any] | None) -> int:
    """The seed given, else the stored one, else fresh entropy."""
    if meta is not None and seed is None:
        seed = meta.get("seed")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
    return seed


def resolve_policy(
    policy: str | Policy | None, meta: Mapping[str, Any] | None, seed: int
) -> Policy:
    """The policy: a Policy object as is; a spec (``"name[:key=value…]"``, ``"default"``),
    else the stored policy's spec, else :data:`DEFAULT_POLICY`, built with ``seed``. A store
    learned with another policy is refused."""
    stored = meta.get("policy") if meta else None
    if isinstance(policy, Policy):
        name, params = policy.name, policy.params()
    elif isinstance(policy, str):  # "name" or "name:key=value[:...]"; "default" = tuned
        name, params = split_policy_spec(policy)
        if name == "default":
            if params:
                raise ConfigError("policy", "'default' takes no parameters (it is tuned)")
            name, params = DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1])
    elif policy is None and stored is not None:
        name, params = stored["name"], dict(stored["params"])
    elif policy is None:
        name, params = DEFAULT_POLICY[0], dict(DEFAULT_POLICY[1])
    else:
        raise ConfigError(
            "policy", f"expected a registry name or a Policy, got {type(policy).__name__}"
        )
    if stored is not None and stored["name"] != name:
        raise ConfigError(
            "policy",
            f"the store was learned with policy {stored['name']!r}, not {name!r}; "
            "use a new store (or export the trace and replay it) to switch policies",
        )
    if isinstance(policy, Policy):
        return policy
    return make_policy(name, seed=seed, **{k: v for k, v in params.items() if k != "seed"})


def resolve_features(
    features: Mapping[str, Any] | None, meta: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The feature spec given, else the stored one (``None``: learn the features)."""
    if features is None and meta is not None:
        features = meta.get("features")
    if features is not None and not isinstance(features, Mapping):
        raise ConfigError(
            "features", f"must be a feature spec mapping, got {type(features).__name__}"
        )
    return dict(features) if features is not None else None


def guardian_from_setting(setting: bool | Mapping[str, Any] | None) -> Guardian | Literal[False]:
    """The ``guardian`` setting as a Controller argument: ``None``/``True`` → a default
    Guardian, ``False`` (or ``enabled = false``) → none, a table → a configured Guardian (its
    keyword arguments, plus optional ``latency`` / ``validity`` / ``errors`` tables for the
    checks, ``false`` to leave a check out)."""
    if setting is None or isinstance(setting, bool):
        return Guardian() if setting is not False else False
    spec = dict(setting)
    if spec.pop("enabled", True) is False:
        return False
    checks: list[Check] = []
    for key, cls in (
        ("errors", ErrorBurstCheck),
        ("latency", LatencyCheck),
        ("validity", ValidityCheck),
    ):
        params = spec.pop(key, {})
        if params is False:
            continue
        if not isinstance(params, dict):
            raise ConfigError(f"guardian.{key}", "must be a table of check parameters or false")
        try:
            checks.append(cls(**params))
        except TypeError as exc:
            raise ConfigError(f"guardian.{key}", str(exc)) from None
    try:
        return Guardian(checks, **spec)
    except TypeError as exc:
        raise ConfigError("guardian", str(exc)) from None


def controller_kwargs(settings: RoutewiseSettings, **overrides: Any) -> dict[str, Any]:
    """The Controller keyword arguments ``settings`` describe, updated with ``overrides``
    (a ``[policy]`` table with parameters becomes a policy object seeded with
    ``settings.seed``; the ``guardian`` setting is read unless overridden)."""
    if not isinstance(settings, RoutewiseSettings):
        raise ConfigError(
            "settings",
            "expected a RoutewiseSettings (routewise.config.load_settings), "
            f"got {type(settings).__name__}",
        )
    name, params = settings.policy_spec()
    policy: Any = name
    if name is not None and params:
        policy = make_policy(name, seed=settings.seed, **params)
    if "guardian" not in overrides:
        overrides["guardian"] = guardian_from_setting(settings.guardian)
    return {
        "arms": settings.arm_list(),
        "policy": policy,
        "reward": settings.reward,
        "store": settings.db,
        "seed": settings.seed,
        "features": settings.features,
        "reward_wait_s": settings.reward_wait_s,
        "late_feedback": settings.late_feedback,
        "default_reward": settings.default_reward,
        "snapshot_every": settings.snapshot_every,
        "durability": settings.durability,
        "recent_window": settings.recent_window,
        "max_context_keys": settings.max_context_keys,
        "max_value_chars": settings.max_value_chars,
        "max_feature_keys": settings.max_feature_keys,
        "max_pending": settings.max_pending,
        "integrity_check": settings.check_on_open,
        **overrides,
    }
