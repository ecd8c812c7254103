"""What :meth:`Controller.create_experiment <routewise.Controller.create_experiment>` checks
before it builds anything, each error naming the request field an adapter received it as:

* ``variants`` — a mapping of variant name → spec mapping; every number in a spec finite and
  within ±2**63 (``variants.<name>.<key>…``, ``[i]`` for list items); the spec's own fields
  (``variants.<name>.<field>``, from :class:`~routewise.types.VariantSpec`);
* ``split`` — a mapping of variant → share, each a number in (0, 1] (``split.<name>``);
  ``None`` means equal shares;
* options — only ``salt`` (a non-empty string of at most 256 characters), ``alpha``,
  ``guardrails`` and ``target_n`` (checked by :class:`~routewise.types.ExperimentSpec`).

Examples
--------
>>> parse_variants({"a": {}, "b": {"policy": {"name": "linucb", "alpha": float("nan")}}})
Traceback (most recent call last):
...
routewise.errors.ConfigError: variants.b.policy.alpha: must be a finite number, got nan
>>> check_split({"a": 0.0, "b": 1.0}, ["a", "b"])
Traceback (most recent call last):
...
routewise.errors.ConfigError: split.a: must be a number in (0, 1], got 0.0
>>> check_split(None, ["a", "b"])
{'a': 0.5, 'b': 0.5}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final

from routewise.errors import ConfigError
from routewise.types import VariantSpec

__all__ = [
    "MAX_SALT_LENGTH",
    "OPTIONS",
    "check_finite_numbers",
    "check_options",
    "check_split",
    "parse_variants",
]

#: The keyword options ``create_experiment`` takes besides variants and split.
OPTIONS: Final = ("salt", "alpha", "guardrails", "target_n")
#: Longest assignment salt.
MAX_SALT_LENGTH: Final = 256
_INT_LIMIT: Final = 2**63


def check_finite_numbers(value: Any, field: str) -> None:
    """Reject numbers JSON cannot carry (NaN, infinity, integers beyond ±2**63) anywhere in
    ``value``, naming the path (``field.key``, ``field[i]``)."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:
        v, where = stack.pop()
        if isinstance(v, Mapping):
            stack.extend((x, f"{where}.{k}") for k, x in v.items())
        elif isinstance(v, list | tuple):
            stack.extend((x, f"{where}[{i}]") for i, x in enumerate(v))
        elif isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(where, f"must be a finite number, got {v!r}")
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > _INT_LIMIT:
            raise ConfigError(where, "is out of range (|value| > 2**63)")


def parse_variants(variants: Any) -> dict[str, VariantSpec]:
    """The variant specs, each checked (errors name ``variants.<name>[.<field>]``)."""
    if not isinstance(variants, Mapping):
        raise ConfigError(
            "variants", f"must be a mapping of variant name to spec, got {type(variants).__name__}"
        )
    out: dict[str, VariantSpec] = {}
    for name, raw in variants.items():
        if not isinstance(name, str):
            raise ConfigError("variants", f"variant names must be strings, got {name!r}")
        where = f"variants.{name}"
        if isinstance(raw, VariantSpec):
            out[name] = raw
            continue
        if not isinstance(raw, Mapping):
            raise ConfigError(where, "must be a mapping (policy, reward, arms)")
        check_finite_numbers(raw, where)
        try:
            out[name] = VariantSpec.model_validate(dict(raw))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc.field}", exc.reason) from None
    return out


def check_split(split: Any, variants: Iterable[str]) -> dict[str, float]:
    """The traffic shares (equal when ``split`` is ``None``); each must be a number in
    (0, 1]. That the keys are the variants and the shares sum to 1 is the spec's check."""
    names = list(variants)
    if split is None:
        return {k: 1.0 / len(names) for k in names}
    if not isinstance(split, Mapping):
        raise ConfigError(
            "split", f"must be a mapping of variant name to share, got {type(split).__name__}"
        )
    out: dict[str, float] = {}
    for name, share in split.items():
        ok = isinstance(share, int | float) and not isinstance(share, bool)
        if not (ok and math.isfinite(share) and 0.0 < share <= 1.0):
            raise ConfigError(f"split.{name}", f"must be a number in (0, 1], got {share!r}")
        out[str(name)] = float(share)
    return out


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The further spec fields (``salt``, ``alpha``, ``guardrails``, ``target_n``); any
    other key is refused, naming it."""
    for key, value in options.items():
        if key not in OPTIONS:
            raise ConfigError(key, f"unknown experiment option; one of: {', '.join(OPTIONS)}")
        if key == "salt" and not (isinstance(value, str) and 0 < len(value) <= MAX_SALT_LENGTH):
            raise ConfigError(
                "salt", f"must be a non-empty string of at most {MAX_SALT_LENGTH} characters"
            )
        if key == "guardrails" and value is not None:
            check_finite_numbers(value, "guardrails")
    return dict(options)
