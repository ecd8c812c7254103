"""The synthetic routing environment: backends × output modes whose validity, latency and
cost depend on the request context, with backend × mode interactions.

All parameters and the formulas they enter live in a readable TOML file
(``routewise/simulations/data/environment.toml`` by default; its header documents the model).
Outcome distributions are closed-form, so every arm's expected reward on every request is
exact (see :mod:`routewise.simulations.outcomes`).

Examples
--------
>>> import numpy as np
>>> from routewise.reward import get_reward
>>> env = SyntheticEnvironment.default()
>>> len(env.arms), env.arms[0].id
(12, 'openai:gpt-5.4/direct_emit')
>>> ctx = {"task": "extraction", "schema_depth": 5, "n_fields": 30, "input_tokens": 2000,
...        "language": "en"}
>>> mu = env.expected_reward([ctx], get_reward("balanced"))[0]
>>> ids = [a.id for a in env.arms]
>>> llama = "ollama:llama-3.3-70b"
>>> bool(mu[ids.index(f"{llama}/transport_compressed")] < mu[ids.index(f"{llama}/local_reconstructed")])
True
"""

from __future__ import annotations

import importlib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from routewise.errors import ConfigError
from routewise.reward import Scalarizer
from routewise.simulations.base import Environment, check_mapping
from routewise.simulations.outcomes import FloatArray, OutcomeParams, expected_reward
from routewise.types import Arm, Mode

__all__ = ["Mix", "SyntheticEnvironment"]

IntArray = npt.NDArray[np.int64]

_MODE_KEYS = (
    "structure_factor",
    "prompt_tokens",
    "prompt_tokens_per_field",
    "overhead_ms",
    "validity",
    "depth_slope",
    "fields_slope",
)
_BACKEND_NUMBERS = (
    "ttft_ms",
    "tokens_per_s",
    "prefill_ms_per_1k",
    "latency_sigma",
    "price_in_per_1m",
    "price_out_per_1m",
    "error_rate",
    "timeout_share",
    "validity_base",
    "input_tokens_slope",
)
_POSITIVE = {"ttft_ms", "tokens_per_s"}
_NON_NEGATIVE = {
    "prefill_ms_per_1k",
    "latency_sigma",
    "price_in_per_1m",
    "price_out_per_1m",
    "structure_factor",
    "prompt_tokens",
    "prompt_tokens_per_field",
    "overhead_ms",
}
_PROBABILITY = {"error_rate", "timeout_share"}


def _number(table: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    field = f"{where}.{key}"
    if key not in table:
        if default is None:
            raise ConfigError(field, "is required")
        return default
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(field, f"must be a finite number, got {v!r}")
    x = float(v)
    if key in _POSITIVE and x <= 0:
        raise ConfigError(field, f"must be > 0, got {v!r}")
    if key in _NON_NEGATIVE and x < 0:
        raise ConfigError(field, f"must be >= 0, got {v!r}")
    if key in _PROBABILITY and not 0.0 <= x <= 1.0:
        raise ConfigError(field, f"must be in [0, 1], got {v!r}")
    return x


def _distribution(value: Any, field: str, names: Sequence[str]) -> FloatArray:
    """A ``{name: weight}`` table over ``names`` as normalized probabilities."""
    table = check_mapping(value, field)
    for key in table:
        if key not in names:
            raise ConfigError(f"{field}.{key}", f"unknown name; expected one of {', '.join(names)}")
    w = np.zeros(len(names))
    for i, name in enumerate(names):
        v = table.get(name, 0.0)
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not (v >= 0 and math.isfinite(v))
        ):
            raise ConfigError(f"{field}.{name}", f"must be a weight >= 0, got {v!r}")
        w[i] = float(v)
    if w.sum() <= 0:
        raise ConfigError(field, "needs at least one positive weight")
    out: FloatArray = w / w.sum()
    return out


_TOP_LEVEL = {
    "name",
    "description",
    "shape",
    "defaults",
    "modes",
    "tasks",
    "languages",
    "backends",
    "mixes",
    "features",
}


def _mode_defaults(value: Any) -> dict[str, dict[str, float]]:
    """The ``[modes.<mode>]`` tables: every mode's parameters, defaults filled in."""
    modes_t = check_mapping(value, "modes")
    mode_defaults: dict[str, dict[str, float]] = {}
    for m in Mode:
        t = check_mapping(modes_t.get(m.value, {}), f"modes.{m.value}")
        for key in t:
            if key not in _MODE_KEYS:
                raise ConfigError(
                    f"modes.{m.value}.{key}", f"unknown key; expected one of {list(_MODE_KEYS)}"
                )
        mode_defaults[m.value] = {
            k: _number(t, k, f"modes.{m.value}", 1.0 if k == "structure_factor" else 0.0)
            for k in _MODE_KEYS
        }
    for key in modes_t:
        if key not in {m.value for m in Mode}:
            raise ConfigError(f"modes.{key}", "unknown output mode")
    return mode_defaults


class _ArmColumns:
    """The parameter columns of the arms, one row per (backend, mode), built a backend at a
    time: mode parameters (the backend's overrides of the mode defaults), backend numbers,
    and the backend's validity offsets per task and per language."""

    def __init__(
        self,
        tasks: Sequence[str],
        languages: Sequence[str],
        mode_defaults: dict[str, dict[str, float]],
    ) -> None:
        self.tasks = tasks
        self.languages = languages
        self.mode_defaults = mode_defaults
        self.arms: list[Arm] = []
        self.cols: dict[str, list[float]] = {k: [] for k in (*_MODE_KEYS, *_BACKEND_NUMBERS)}
        self.task_off: list[list[float]] = []
        self.lang_off: list[list[float]] = []

    def add_backend(self, backend: str, t: Mapping[str, Any], where: str) -> None:
        nums = {
            k: _number(
                t,
                k,
                where,
                0.0
                if k in ("input_tokens_slope", "error_rate", "prefill_ms_per_1k")
                else (0.5 if k == "timeout_share" else None),
            )
            for k in _BACKEND_NUMBERS
        }
        lang = check_mapping(t.get("language", {}), f"{where}.language")
        task = check_mapping(t.get("task", {}), f"{where}.task")
        for key in lang:
            if key not in self.languages:
                raise ConfigError(f"{where}.language.{key}", "unknown language")
        for key in task:
            if key not in self.tasks:
                raise ConfigError(f"{where}.task.{key}", "unknown task")
        bmodes = check_mapping(t.get("modes", {}), f"{where}.modes")
        for key in bmodes:
            if key not in self.mode_defaults:
                raise ConfigError(f"{where}.modes.{key}", "unknown output mode")
        for m in Mode:
            over = check_mapping(bmodes.get(m.value, {}), f"{where}.modes.{m.value}")
            for key in over:
                if key not in _MODE_KEYS:
                    raise ConfigError(
                        f"{where}.modes.{m.value}.{key}",
                        f"unknown key; expected one of {list(_MODE_KEYS)}",
                    )
            self.arms.append(Arm(backend, m))
            for k in _MODE_KEYS:
                self.cols[k].append(
                    _number(over, k, f"{where}.modes.{m.value}", self.mode_defaults[m.value][k])
                )
            for k in _BACKEND_NUMBERS:
                self.cols[k].append(nums[k])
            self.task_off.append([_number(task, x, f"{where}.task", 0.0) for x in self.tasks])
            self.lang_off.append(
                [_number(lang, x, f"{where}.language", 0.0) for x in self.languages]
            )


@dataclass(frozen=True, slots=True)
class Mix:
    """A traffic mix: how request contexts are distributed (``[mixes.<name>]`` in the file).

    Examples
    --------
    >>> m = SyntheticEnvironment.default().mix("consumer")
    >>> m.name, round(float(m.schema_depth[0]), 2)
    ('consumer', 0.5)
    """

    name: str
    tasks: FloatArray
    languages: FloatArray
    schema_depth: FloatArray
    fields_per_level: float
    fields_sigma: float
    min_fields: int
    max_fields: int
    input_scale: float
    input_sigma: float
    min_input_tokens: int
    max_input_tokens: int

    @classmethod
    def parse(
        cls, name: str, table: Mapping[str, Any], tasks: Sequence[str], languages: Sequence[str]
    ) -> Mix:
        where = f"mixes.{name}"
        depth_raw = table.get("schema_depth")
        if not isinstance(depth_raw, list) or not depth_raw:
            raise ConfigError(
                f"{where}.schema_depth", "must be a non-empty list of P(depth = 1, 2, …)"
            )
        depth = _distribution(
            {str(i + 1): v for i, v in enumerate(depth_raw)},
            f"{where}.schema_depth",
            [str(i + 1) for i in range(len(depth_raw))],
        )
        ints = {}
        for key, default in (
            ("min_fields", 1),
            ("max_fields", 200),
            ("min_input_tokens", 20),
            ("max_input_tokens", 120_000),
        ):
            v = table.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where}.{key}", f"must be an integer >= 1, got {v!r}")
            ints[key] = v
        for lo, hi in (("min_fields", "max_fields"), ("min_input_tokens", "max_input_tokens")):
            if ints[lo] > ints[hi]:
                raise ConfigError(f"{where}.{lo}", f"must be <= {hi} ({ints[hi]})")
        known = {
            "tasks",
            "languages",
            "schema_depth",
            "fields_per_level",
            "fields_sigma",
            "input_scale",
            "input_sigma",
            *ints,
        }
        for key in table:
            if key not in known:
                raise ConfigError(f"{where}.{key}", f"unknown key; expected one of {sorted(known)}")
        positive: dict[str, float] = {}
        for key, fallback in (
            ("fields_per_level", 4.0),
            ("fields_sigma", 0.5),
            ("input_scale", 1.0),
            ("input_sigma", 0.8),
        ):
            x = _number(table, key, where, fallback)
            if x < 0 or (x == 0 and key in ("fields_per_level", "input_scale")):
                raise ConfigError(f"{where}.{key}", f"must be > 0, got {x!r}")
            positive[key] = x
        return cls(
            name=name,
            tasks=_distribution(table.get("tasks"), f"{where}.tasks", tasks),
            languages=_distribution(table.get("languages"), f"{where}.languages", languages),
            schema_depth=depth,
            fields_per_level=positive["fields_per_level"],
            fields_sigma=positive["fields_sigma"],
            min_fields=ints["min_fields"],
            max_fields=ints["max_fields"],
            input_scale=positive["input_scale"],
            input_sigma=positive["input_sigma"],
            min_input_tokens=ints["min_input_tokens"],
            max_input_tokens=ints["max_input_tokens"],
        )


class SyntheticEnvironment(Environment):
    """Backends × output modes with context-dependent, exactly computable outcomes.

    Build it from a parameter file with :meth:`from_file` (or :meth:`default` for the shipped
    one) or from an already-parsed mapping. See the data file's header for the model.

    Parameters
    ----------
    spec
        The parsed parameter table (as in ``environment.toml``).
    source
        Where it came from (used in error messages and reports).

    Examples
    --------
    >>> import numpy as np
    >>> env = SyntheticEnvironment.default()
    >>> contexts, params = env.sample(3, np.random.default_rng(0))
    >>> sorted(contexts[0])
    ['input_tokens', 'language', 'n_fields', 'schema_depth', 'task']
    >>> params.shape
    (3, 12)
    """

    def __init__(self, spec: Mapping[str, Any], *, source: str = "<mapping>") -> None:
        self.source = source
        self.spec = spec
        self.name = str(spec.get("name", Path(source).stem))
        self._parse(spec)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path: str | Path) -> SyntheticEnvironment:
        """Load a parameter file (TOML, or YAML with the same structure)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError("environment", f"file {str(p)!r} does not exist")
        return cls(_load_table(p), source=str(p))

    @classmethod
    def default(cls) -> SyntheticEnvironment:
        """The shipped environment (``routewise/simulations/data/environment.toml``)."""
        ref = resources.files("routewise.simulations") / "data" / "environment.toml"
        return cls(tomllib.loads(ref.read_text(encoding="utf-8")), source="environment.toml")

    def _parse(self, spec: Mapping[str, Any]) -> None:
        shape = check_mapping(spec.get("shape", {}), "shape")
        self._key_tokens = _number(shape, "key_tokens", "shape", 3.0)
        self._nesting_tokens = _number(shape, "nesting_tokens", "shape", 0.8)
        defaults = check_mapping(spec.get("defaults", {}), "defaults")
        self._timeout_ms = _number(defaults, "timeout_ms", "defaults", 30_000.0)
        self._error_latency_ms = _number(defaults, "error_latency_ms", "defaults", 400.0)
        mode_defaults = _mode_defaults(spec.get("modes", {}))
        self._parse_tasks(spec.get("tasks"))
        self._parse_languages(spec.get("languages"))
        self._parse_backends(spec.get("backends"), mode_defaults)
        mixes_t = check_mapping(spec.get("mixes"), "mixes")
        if not mixes_t:
            raise ConfigError("mixes", "at least one traffic mix is required")
        self._mixes = {
            name: Mix.parse(name, check_mapping(t, f"mixes.{name}"), self.tasks, self.languages)
            for name, t in mixes_t.items()
        }
        self._default_mix = "default" if "default" in self._mixes else next(iter(self._mixes))
        features = spec.get("features")
        self._features = dict(check_mapping(features, "features")) if features is not None else None
        for key in spec:
            if key not in _TOP_LEVEL:
                raise ConfigError(key, "unknown top-level key in the environment file")

    def _parse_tasks(self, value: Any) -> None:
        tasks_t = check_mapping(value, "tasks")
        if not tasks_t:
            raise ConfigError("tasks", "at least one task is required")
        self.tasks: list[str] = list(tasks_t)
        self._leaf = np.array(
            [
                _number(check_mapping(tasks_t[t], f"tasks.{t}"), "leaf_tokens", f"tasks.{t}")
                for t in self.tasks
            ]
        )
        self._input_median = np.array(
            [_number(tasks_t[t], "input_median", f"tasks.{t}") for t in self.tasks]
        )
        if (self._input_median <= 0).any():
            raise ConfigError("tasks", "every input_median must be > 0")
        self._difficulty = np.array(
            [_number(tasks_t[t], "difficulty", f"tasks.{t}", 0.0) for t in self.tasks]
        )

    def _parse_languages(self, value: Any) -> None:
        langs_t = check_mapping(value, "languages")
        if not langs_t:
            raise ConfigError("languages", "at least one language is required")
        self.languages: list[str] = list(langs_t)
        self._token_factor = np.array(
            [
                _number(
                    check_mapping(langs_t[lang], f"languages.{lang}"),
                    "token_factor",
                    f"languages.{lang}",
                    1.0,
                )
                for lang in self.languages
            ]
        )

    def _parse_backends(self, value: Any, mode_defaults: dict[str, dict[str, float]]) -> None:
        backends_t = check_mapping(value, "backends")
        if not backends_t:
            raise ConfigError("backends", "at least one backend is required")
        columns = _ArmColumns(self.tasks, self.languages, mode_defaults)
        self.backend_class: dict[str, str] = {}
        known = {*_BACKEND_NUMBERS, "class", "language", "task", "modes"}
        for backend, raw in backends_t.items():
            where = f'backends."{backend}"'
            t = check_mapping(raw, where)
            for key in t:
                if key not in known:
                    raise ConfigError(
                        f"{where}.{key}", f"unknown key; expected one of {sorted(known)}"
                    )
            self.backend_class[backend] = str(t.get("class", backend.split(":")[0]))
            columns.add_backend(backend, t, where)
        self._arms = columns.arms
        self._c = {k: np.asarray(v, dtype=np.float64) for k, v in columns.cols.items()}
        self._task_off = np.asarray(columns.task_off, dtype=np.float64).T  # (T, K)
        self._lang_off = np.asarray(columns.lang_off, dtype=np.float64).T  # (L, K)

    # ------------------------------------------------------------------ protocol
    @property
    def arms(self) -> list[Arm]:
        return list(self._arms)

    @property
    def mixes(self) -> list[str]:
        return list(self._mixes)

    @property
    def default_mix(self) -> str:
        return self._default_mix

    def mix(self, name: str | None = None) -> Mix:
        """The traffic mix ``name`` (default: the environment's default mix)."""
        key = self._default_mix if name is None else name
        if key not in self._mixes:
            raise ConfigError(
                "mix", f"unknown traffic mix {key!r}; one of {', '.join(self._mixes)}"
            )
        return self._mixes[key]

    def features(self) -> dict[str, Any] | None:
        if self._features is None:
            return None
        return {"features": dict(self._features)}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "arms": [a.id for a in self._arms],
            "mixes": list(self._mixes),
            "backend_class": dict(self.backend_class),
        }

    def sample(
        self, n: int, rng: np.random.Generator, mix: str | None = None
    ) -> tuple[list[dict[str, Any]], OutcomeParams]:
        m = self.mix(mix)
        task = rng.choice(len(self.tasks), size=n, p=m.tasks)
        lang = rng.choice(len(self.languages), size=n, p=m.languages)
        depth = rng.choice(len(m.schema_depth), size=n, p=m.schema_depth) + 1
        z_f = rng.standard_normal(n)
        z_i = rng.standard_normal(n)
        n_fields = np.clip(
            np.rint(m.fields_per_level * depth * np.exp(m.fields_sigma * z_f)),
            m.min_fields,
            m.max_fields,
        ).astype(np.int64)
        tokens = np.clip(
            np.rint(m.input_scale * self._input_median[task] * np.exp(m.input_sigma * z_i)),
            m.min_input_tokens,
            m.max_input_tokens,
        ).astype(np.int64)
        names_t, names_l = self.tasks, self.languages
        contexts = [
            {
                "task": names_t[t],
                "schema_depth": d,
                "n_fields": f,
                "input_tokens": i,
                "language": names_l[g],
            }
            for t, d, f, i, g in zip(
                task.tolist(),
                depth.tolist(),
                n_fields.tolist(),
                tokens.tolist(),
                lang.tolist(),
                strict=True,
            )
        ]
        return contexts, self._params(task, lang, depth, n_fields, tokens)

    # ------------------------------------------------------------------ model
    def params_for(self, contexts: Sequence[Mapping[str, Any]]) -> OutcomeParams:
        """Every arm's outcome distribution on the given contexts (validated, naming the key)."""
        task = np.empty(len(contexts), dtype=np.int64)
        lang = np.empty(len(contexts), dtype=np.int64)
        depth = np.empty(len(contexts), dtype=np.float64)
        fields = np.empty(len(contexts), dtype=np.float64)
        tokens = np.empty(len(contexts), dtype=np.float64)
        t_index = {t: i for i, t in enumerate(self.tasks)}
        l_index = {g: i for i, g in enumerate(self.languages)}
        for i, ctx in enumerate(contexts):
            try:
                task[i] = t_index[ctx["task"]]
                lang[i] = l_index[ctx["language"]]
            except KeyError as exc:
                raise ConfigError(
                    f"contexts[{i}]",
                    f"missing or unknown {exc.args[0]!r} (tasks: {self.tasks}, languages: {self.languages})",
                ) from None
            for arr, key, lo in (
                (depth, "schema_depth", 1),
                (fields, "n_fields", 1),
                (tokens, "input_tokens", 1),
            ):
                v = ctx.get(key)
                if isinstance(v, bool) or not isinstance(v, int | float) or not v >= lo:
                    raise ConfigError(
                        f"contexts[{i}].{key}", f"must be a number >= {lo}, got {v!r}"
                    )
                arr[i] = v
        return self._params(task, lang, depth, fields, tokens)

    def expected_reward(
        self, contexts: Sequence[Mapping[str, Any]], reward: Scalarizer
    ) -> FloatArray:
        """Exact expected reward of every arm on each context: an ``(n, K)`` array."""
        return expected_reward(self.params_for(contexts), reward)

    def _params(
        self,
        task: IntArray,
        lang: IntArray,
        depth: npt.NDArray[Any],
        n_fields: npt.NDArray[Any],
        tokens: npt.NDArray[Any],
    ) -> OutcomeParams:
        c = self._c
        dep = np.asarray(depth, dtype=np.float64)[:, None]
        nf = np.asarray(n_fields, dtype=np.float64)[:, None]
        tok = np.asarray(tokens, dtype=np.float64)[:, None]
        leaf = (self._leaf[task] * self._token_factor[lang])[:, None]
        structure = self._key_tokens + self._nesting_tokens * dep
        out_tokens = nf * (leaf + c["structure_factor"] * structure)
        in_tokens = tok + c["prompt_tokens"] + c["prompt_tokens_per_field"] * nf
        median = (
            c["ttft_ms"]
            + c["prefill_ms_per_1k"] * in_tokens / 1000.0
            + 1000.0 * out_tokens / c["tokens_per_s"]
            + c["overhead_ms"]
        )
        cost = (in_tokens * c["price_in_per_1m"] + out_tokens * c["price_out_per_1m"]) / 1e6
        logit = (
            c["validity_base"]
            + self._difficulty[task][:, None]
            + self._task_off[task]
            + self._lang_off[lang]
            + c["input_tokens_slope"] * np.log(tok / 1000.0)
            + c["validity"]
            + c["depth_slope"] * (dep - 3.0)
            + c["fields_slope"] * np.log(nf / 12.0)
        )
        n = dep.shape[0]
        k = len(self._arms)
        full = np.ones((n, k))
        return OutcomeParams(
            p_valid=1.0 / (1.0 + np.exp(-logit)),
            error_rate=full * c["error_rate"],
            timeout_share=full * c["timeout_share"],
            lat_mu=np.log(median),
            lat_sigma=full * c["latency_sigma"],
            cost=cost,
            timeout_ms=full * self._timeout_ms,
            error_latency_ms=full * self._error_latency_ms,
        )


def _load_table(path: Path) -> dict[str, Any]:
    """Read a TOML or YAML file into a mapping, naming the file and position on a syntax error."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"invalid TOML ({exc})") from None
    if suffix in (".yaml", ".yml"):
        yaml: Any = importlib.import_module("yaml")  # PyYAML (untyped)

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), f"invalid YAML ({exc})".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ConfigError(
                str(path), f"must hold a mapping at the top level, got {type(data).__name__}"
            )
        return data
    raise ConfigError(str(path), "unsupported file type; use .toml, .yaml or .yml")
