"""Scenarios: an environment, a traffic mix and a timeline of events.

A scenario file (TOML, or YAML with the same structure)::

    name = "degradation"
    description = "Gemini-class backend degrades at 40% of the run and recovers at 75%"
    environment = "default"      # the shipped environment, or a path (relative to this file)
    rounds = 50000               # default run length (the CLI's --rounds overrides it)
    rate_per_s = 20.0            # simulated requests per second (drives the injected clock)
    # mix = "default"            # initial traffic mix (default: the environment's)
    # reward = "balanced"        # default reward preset or weights table

    [[events]]
    at = "40%"                   # a share of the run, or a round number: at = 20000
    kind = "degrade"             # degrade | outage | price | recover | mix
    target = "google_genai:gemini-2.5-flash-lite"   # a backend, an arm id, "*" or a list
    latency_factor = 3.0         # degrade: latency × k
    validity_drop = 0.25         # degrade: P(valid) − p

Event kinds and their keys:

==========  ===========================================================================
degrade     ``latency_factor`` (> 0, default 1), ``validity_drop`` (in [0, 1], default 0)
outage      ``error_rate`` (in (0, 1], default 1), ``timeout_share`` (default 0.5),
            ``timeout_ms`` (default 30000): calls fail; failures are errors or timeouts
price       ``factor`` (> 0): the cost is ``factor`` × the environment's price
recover     undoes degradations and outages of ``target`` (prices stay as set)
mix         ``mix``: the traffic mix from then on (a name from the environment)
==========  ===========================================================================

Every event may carry a ``label`` (shown on plots). The named scenarios ship in
``routewise/simulations/data/scenarios/``.

Examples
--------
>>> sc = load_scenario("degradation")
>>> [(e.kind, e.at) for e in sc.events]
[('degrade', '40%'), ('recover', '75%')]
>>> sc.events[0].round_in(50_000)
20000
>>> sorted(SCENARIOS)
['degradation', 'mix-shift', 'outage', 'price-shock', 'stationary']
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from routewise.errors import ConfigError
from routewise.simulations.base import Effects, Environment, check_mapping
from routewise.simulations.synthetic import SyntheticEnvironment, _load_table

__all__ = ["SCENARIOS", "Event", "Scenario", "Segment", "load_scenario"]

EventKind = Literal["degrade", "outage", "price", "recover", "mix"]
_KINDS: tuple[str, ...] = ("degrade", "outage", "price", "recover", "mix")
_KEYS: dict[str, set[str]] = {
    "degrade": {"latency_factor", "validity_drop"},
    "outage": {"error_rate", "timeout_share", "timeout_ms"},
    "price": {"factor"},
    "recover": set(),
    "mix": {"mix"},
}
_COMMON = {"at", "kind", "target", "label"}

#: The named scenarios shipped with routewise (name → file name in ``data/scenarios``).
SCENARIOS: dict[str, str] = {
    "stationary": "stationary.toml",
    "degradation": "degradation.toml",
    "outage": "outage.toml",
    "price-shock": "price-shock.toml",
    "mix-shift": "mix-shift.toml",
}


def _num(table: Mapping[str, Any], key: str, where: str, default: float) -> float:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where}.{key}", f"must be a finite number, got {v!r}")
    return float(v)


def _event_at(at: Any, field: str) -> int | str:
    """When an event fires: a round number, or a share of the run like ``'40%'``."""
    if isinstance(at, bool) or not isinstance(at, int | str):
        raise ConfigError(field, f"must be a round number or a share like '40%', got {at!r}")
    if isinstance(at, int):
        if at < 0:
            raise ConfigError(field, f"must be >= 0, got {at!r}")
        return at
    try:
        share = float(at.strip().rstrip("%")) if at.strip().endswith("%") else math.nan
    except ValueError:
        share = math.nan
    if not 0.0 <= share <= 100.0:
        raise ConfigError(field, f"must be a share between '0%' and '100%', got {at!r}")
    return at.strip()


@dataclass(frozen=True, slots=True)
class Event:
    """One scheduled change. ``at`` is a round number or a share of the run (``"40%"``).

    Examples
    --------
    >>> ev = Event.parse({"at": "25%", "kind": "outage", "target": "ollama:llama3",
    ...                   "error_rate": 0.5}, "events[0]")
    >>> ev.round_in(1000), ev.describe()
    (250, 'outage ollama:llama3 (50% errors)')
    """

    at: int | str
    kind: EventKind
    targets: tuple[str, ...] = ()
    latency_factor: float = 1.0
    validity_drop: float = 0.0
    error_rate: float = 1.0
    timeout_share: float = 0.5
    timeout_ms: float = 30_000.0
    factor: float = 1.0
    mix: str | None = None
    label: str = ""

    def round_in(self, rounds: int) -> int:
        """The round at which the event fires in a run of ``rounds`` rounds."""
        if isinstance(self.at, int):
            return self.at
        return round(float(self.at.rstrip("%")) / 100.0 * rounds)

    @classmethod
    def parse(cls, raw: Any, where: str) -> Event:
        t = check_mapping(raw, where)
        kind = t.get("kind")
        if kind not in _KINDS:
            raise ConfigError(f"{where}.kind", f"must be one of {', '.join(_KINDS)}, got {kind!r}")
        allowed = _COMMON | _KEYS[kind]
        for key in t:
            if key not in allowed:
                raise ConfigError(
                    f"{where}.{key}", f"not a key of a {kind!r} event; expected {sorted(allowed)}"
                )
        at = _event_at(t.get("at"), f"{where}.at")
        targets: tuple[str, ...] = ()
        if kind != "mix":
            raw_t = t.get("target")
            if isinstance(raw_t, str):
                targets = (raw_t,)
            elif isinstance(raw_t, list) and raw_t and all(isinstance(x, str) for x in raw_t):
                targets = tuple(raw_t)
            else:
                raise ConfigError(
                    f"{where}.target",
                    f"must be a backend, an arm id, '*' or a list of them, got {raw_t!r}",
                )
        elif "target" in t:
            raise ConfigError(f"{where}.target", "a 'mix' event has no target")
        label = t.get("label", "")
        if not isinstance(label, str):
            raise ConfigError(f"{where}.label", f"must be a string, got {label!r}")
        ev = cls(at=at, kind=kind, targets=targets, label=label)
        if kind == "degrade":
            lf = _num(t, "latency_factor", where, 1.0)
            vd = _num(t, "validity_drop", where, 0.0)
            if lf <= 0:
                raise ConfigError(f"{where}.latency_factor", f"must be > 0, got {lf!r}")
            if not 0.0 <= vd <= 1.0:
                raise ConfigError(f"{where}.validity_drop", f"must be in [0, 1], got {vd!r}")
            if lf == 1.0 and vd == 0.0:
                raise ConfigError(where, "a 'degrade' event needs latency_factor or validity_drop")
            ev = replace(ev, latency_factor=lf, validity_drop=vd)
        elif kind == "outage":
            er = _num(t, "error_rate", where, 1.0)
            ts = _num(t, "timeout_share", where, 0.5)
            tm = _num(t, "timeout_ms", where, 30_000.0)
            if not 0.0 < er <= 1.0:
                raise ConfigError(f"{where}.error_rate", f"must be in (0, 1], got {er!r}")
            if not 0.0 <= ts <= 1.0:
                raise ConfigError(f"{where}.timeout_share", f"must be in [0, 1], got {ts!r}")
            if tm <= 0:
                raise ConfigError(f"{where}.timeout_ms", f"must be > 0, got {tm!r}")
            ev = replace(ev, error_rate=er, timeout_share=ts, timeout_ms=tm)
        elif kind == "price":
            if "factor" not in t:
                raise ConfigError(f"{where}.factor", "is required for a 'price' event")
            f = _num(t, "factor", where, 1.0)
            if f <= 0:
                raise ConfigError(f"{where}.factor", f"must be > 0, got {f!r}")
            ev = replace(ev, factor=f)
        elif kind == "mix":
            m = t.get("mix")
            if not isinstance(m, str) or not m:
                raise ConfigError(f"{where}.mix", f"must name a traffic mix, got {m!r}")
            ev = replace(ev, mix=m)
        return ev

    def describe(self) -> str:
        """A short human label (the ``label`` if given)."""
        if self.label:
            return self.label
        tgt = ",".join(self.targets)
        if self.kind == "degrade":
            parts = []
            if self.latency_factor != 1.0:
                parts.append(f"latency×{self.latency_factor:g}")
            if self.validity_drop:
                parts.append(f"validity−{self.validity_drop:g}")
            return f"degrade {tgt} ({', '.join(parts)})"
        if self.kind == "outage":
            return f"outage {tgt} ({self.error_rate:.0%} errors)"
        if self.kind == "price":
            return f"price {tgt} ×{self.factor:g}"
        if self.kind == "recover":
            return f"recover {tgt}"
        return f"traffic mix → {self.mix}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"at": self.at, "kind": self.kind, "label": self.describe()}
        if self.targets:
            d["target"] = list(self.targets)
        if self.kind == "degrade":
            d.update(latency_factor=self.latency_factor, validity_drop=self.validity_drop)
        elif self.kind == "outage":
            d.update(
                error_rate=self.error_rate,
                timeout_share=self.timeout_share,
                timeout_ms=self.timeout_ms,
            )
        elif self.kind == "price":
            d["factor"] = self.factor
        elif self.kind == "mix":
            d["mix"] = self.mix
        return d


@dataclass(slots=True)
class Segment:
    """Rounds ``[start, stop)`` during which the effects and the traffic mix are constant."""

    start: int
    stop: int
    effects: Effects
    mix: str | None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named environment + traffic mix + event timeline (see the module docstring).

    Examples
    --------
    >>> sc = Scenario.from_mapping({"name": "brownout", "events": [
    ...     {"at": 100, "kind": "degrade", "target": "*", "latency_factor": 2.0}]})
    >>> env = sc.build_environment()
    >>> [(s.start, s.stop, float(s.effects.latency_factor.max())) for s in sc.timeline(300, env)]
    [(0, 100, 1.0), (100, 300, 2.0)]
    """

    name: str
    description: str = ""
    environment: str = "default"
    rounds: int = 50_000
    rate_per_s: float = 20.0
    mix: str | None = None
    reward: str | dict[str, Any] | None = None
    events: tuple[Event, ...] = ()
    source: str = "<mapping>"
    base_dir: str | None = field(default=None, compare=False)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "<mapping>", base_dir: str | None = None
    ) -> Scenario:
        """Validate a parsed scenario table; errors name the field (``events[1].kind``)."""
        t = check_mapping(data, "scenario")
        known = {
            "name",
            "description",
            "environment",
            "rounds",
            "rate_per_s",
            "mix",
            "reward",
            "events",
        }
        for key in t:
            if key not in known:
                raise ConfigError(
                    str(key), f"unknown scenario key; expected one of {sorted(known)}"
                )
        name = t.get("name", Path(source).stem)
        if not isinstance(name, str) or not name:
            raise ConfigError("name", f"must be a non-empty string, got {name!r}")
        desc = t.get("description", "")
        if not isinstance(desc, str):
            raise ConfigError("description", f"must be a string, got {desc!r}")
        env = t.get("environment", "default")
        if not isinstance(env, str) or not env:
            raise ConfigError("environment", f"must be 'default' or a file path, got {env!r}")
        rounds = t.get("rounds", 50_000)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ConfigError("rounds", f"must be an integer >= 1, got {rounds!r}")
        rate = _num(t, "rate_per_s", "scenario", 20.0)
        if rate <= 0:
            raise ConfigError("rate_per_s", f"must be > 0, got {rate!r}")
        mix = t.get("mix")
        if mix is not None and (not isinstance(mix, str) or not mix):
            raise ConfigError("mix", f"must name a traffic mix, got {mix!r}")
        reward = t.get("reward")
        if reward is not None and not isinstance(reward, str | dict):
            raise ConfigError("reward", f"must be a preset name or a table, got {reward!r}")
        raw_events = t.get("events", [])
        if not isinstance(raw_events, list):
            raise ConfigError(
                "events", f"must be a list of event tables, got {type(raw_events).__name__}"
            )
        events = tuple(Event.parse(e, f"events[{i}]") for i, e in enumerate(raw_events))
        return cls(
            name=name,
            description=desc,
            environment=env,
            rounds=rounds,
            rate_per_s=rate,
            mix=mix,
            reward=reward,
            events=events,
            source=source,
            base_dir=base_dir,
        )

    def build_environment(self) -> Environment:
        """The environment this scenario names."""
        if self.environment == "default":
            return SyntheticEnvironment.default()
        p = Path(self.environment)
        if not p.is_absolute() and self.base_dir is not None:
            p = Path(self.base_dir) / p
        return SyntheticEnvironment.from_file(p)

    def timeline(self, rounds: int, env: Environment) -> list[Segment]:
        """Split ``rounds`` rounds into segments of constant effects and mix.

        Targets and mixes are checked against ``env`` here, naming the event on a mismatch.
        Events at or past the end of the run have no effect.
        """
        arms = env.arms
        ids = [a.id for a in arms]
        backends = {a.backend for a in arms}
        fired = sorted(
            ((ev.round_in(rounds), i, ev) for i, ev in enumerate(self.events)),
            key=lambda x: (x[0], x[1]),
        )
        mix = self.mix
        self._check_mix(mix, env, "mix")
        effects = Effects(len(arms))
        segments: list[Segment] = []
        start = 0
        for at, i, ev in fired:
            where = f"events[{i}]"
            mask = _target_mask(ev.targets, ids, backends, arms, f"{where}.target")
            if ev.kind == "mix":
                self._check_mix(ev.mix, env, f"{where}.mix")
            if at >= rounds:
                continue
            if at > start:
                segments.append(Segment(start, at, effects.copy(), mix))
                start = at
            if ev.kind == "degrade":
                effects.latency_factor[mask] = ev.latency_factor
                effects.validity_drop[mask] = ev.validity_drop
            elif ev.kind == "outage":
                effects.outage_rate[mask] = ev.error_rate
                effects.outage_timeout_share[mask] = ev.timeout_share
                effects.outage_timeout_ms[mask] = ev.timeout_ms
            elif ev.kind == "price":
                effects.price_factor[mask] = ev.factor
            elif ev.kind == "recover":
                effects.recover(mask)
            else:
                mix = ev.mix
        segments.append(Segment(start, rounds, effects.copy(), mix))
        return segments

    def event_rounds(self, rounds: int) -> list[tuple[int, Event]]:
        """``(round, event)`` for the events that fire within a run of ``rounds`` rounds."""
        out = [(ev.round_in(rounds), ev) for ev in self.events]
        return sorted(((r, e) for r, e in out if r < rounds), key=lambda x: x[0])

    @staticmethod
    def _check_mix(mix: str | None, env: Environment, field: str) -> None:
        if mix is None:
            return
        if not env.mixes:
            raise ConfigError(
                field, f"traffic mix {mix!r} needs a synthetic environment ({env.name!r} has none)"
            )
        if mix not in env.mixes:
            raise ConfigError(field, f"unknown traffic mix {mix!r}; one of {', '.join(env.mixes)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "environment": self.environment,
            "rounds": self.rounds,
            "rate_per_s": self.rate_per_s,
            "mix": self.mix,
            "reward": self.reward,
            "events": [e.to_dict() for e in self.events],
            "source": self.source,
        }


def _target_mask(
    targets: Sequence[str], ids: list[str], backends: set[str], arms: Sequence[Any], field: str
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    mask = np.zeros(len(ids), dtype=bool)
    for tgt in targets:
        if tgt == "*":
            mask[:] = True
        elif tgt in ids:
            mask[ids.index(tgt)] = True
        elif tgt in backends:
            mask |= np.array([a.backend == tgt for a in arms])
        else:
            raise ConfigError(
                field,
                f"{tgt!r} is neither an arm nor a backend of the environment "
                f"(backends: {', '.join(sorted(backends))})",
            )
    return mask


def load_scenario(spec: str | Path) -> Scenario:
    """A named scenario (see :data:`SCENARIOS`) or a scenario file (``.toml``/``.yaml``/``.yml``).

    Raises :class:`~routewise.errors.ConfigError` naming the file and field on bad input.
    """
    if isinstance(spec, str) and spec in SCENARIOS:
        ref = resources.files("routewise.simulations") / "data" / "scenarios" / SCENARIOS[spec]
        return Scenario.from_mapping(tomllib.loads(ref.read_text(encoding="utf-8")), source=spec)
    p = Path(spec)
    if not p.is_file():
        raise ConfigError(
            "scenario",
            f"{str(spec)!r} is neither a named scenario ({', '.join(SCENARIOS)}) nor a file",
        )
    data = _load_table(p)
    try:
        return Scenario.from_mapping(data, source=str(p), base_dir=str(p.parent))
    except ConfigError as exc:
        raise ConfigError(f"{p.name}: {exc.field}", exc.reason) from None
