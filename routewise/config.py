"""Typed settings (pydantic-settings) for the controller, CLI and sidecar.

Passive: settings are read and validated here, and the controller is built *from* them
(:meth:`routewise.Controller.from_settings`); this module never imports the controller.

Precedence, highest first: explicit overrides (CLI flags, keyword arguments) > the TOML
config file > ``ROUTEWISE_*`` environment variables > defaults.

A config file (every key optional except the arms, which may also come from an existing
store)::

    # routewise.toml
    backends = ["openai:gpt-5.4", "google_genai:gemini-2.5-flash-lite", "ollama:devstral-2"]
    modes = ["direct_emit", "transport_compressed", "local_reconstructed"]   # default: all
    exclude = ["ollama:devstral-2/transport_compressed"]
    # or instead of backends/modes: arms = ["openai:gpt-5.4/direct_emit", ...]
    db = "routewise.db"          # omit for in-memory; or "postgresql://user@host/db" (replicas)
    seed = 0
    reward = "balanced"          # or a table: [reward] preset = "low_latency", latency_budget_ms = 1500
    reward_wait_s = 600
    [policy]                     # or policy = "squarecb"
    name = "squarecb"
    gamma_scale = 10.0
    [guardian]                   # or guardian = false; every key optional
    cooldown_s = 120
    probe_share = 0.05
    [guardian.latency]           # the latency check: ratio over baseline that counts
    ratio = 1.2
    [[webhooks]]                 # any number; README "Webhooks and alerts"
    url = "https://ops.example.com/routewise"
    secret = "a-long-random-shared-secret"   # HMAC-SHA256 key; never logged
    events = ["quarantined", "operator"]     # optional filter; default: every transition

``backends`` may also be a table of per-backend provider settings
(``[backends."openai:gpt-5.4"]``, used by the provider clients); the controller only needs
the names.

Examples
--------
>>> s = RoutewiseSettings(arms=["openai:gpt-5.4/direct_emit"], seed=3)
>>> s.arm_list()[0].id, s.seed
('openai:gpt-5.4/direct_emit', 3)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from routewise.errors import ConfigError
from routewise.types import Arm, Mode, make_arms

__all__ = ["RoutewiseSettings", "WebhookSettings", "load_settings"]

_MIN_SECRET_CHARS = 16


class WebhookSettings(BaseModel):
    """One ``[[webhooks]]`` table: an endpoint that receives every Guardian transition and
    operator action as a signed JSON POST (README "Webhooks and alerts"; delivered by
    :class:`~routewise.controller.notify.WebhookNotifier`).

    The URL and the secret are never logged nor echoed in an error (a URL may carry a token
    in its path); logs and ``/metrics`` name the webhook by :attr:`label`.

    Examples
    --------
    >>> w = WebhookSettings(url="https://ops.example.com/hook", secret="s" * 16)
    >>> w.label, w.max_attempts, w.secret
    ('ops.example.com', 5, SecretStr('**********'))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(repr=False)
    """``http://`` or ``https://`` URL the events are POSTed to (redirects are not followed)."""
    secret: SecretStr
    """HMAC-SHA256 key of the ``X-Routewise-Signature`` header (at least 16 characters)."""
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Names the webhook in logs and metrics (default: the URL's host[:port])."""
    timeout_s: float = Field(default=5.0, gt=0, le=300, allow_inf_nan=False)
    """Timeout of one delivery attempt (connect, send, answer)."""
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Attempts per event, the first included (retries: connection errors, timeouts, 5xx, 429)."""
    backoff_s: float = Field(default=0.5, gt=0, le=3600, allow_inf_nan=False)
    """Wait before the first retry; doubles per retry (with jitter), up to ``max_backoff_s``."""
    max_backoff_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    """The longest wait between two attempts (a ``Retry-After`` answer is capped by it too)."""
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    """Events waiting for delivery; past it a new event is dropped (and counted), never waited for."""
    events: list[str] | None = Field(default=None, min_length=1)
    """Only events whose new state (``quarantined``…), source (``guardian``, ``operator``) or a
    ``:``-separated part of the reason (``probe_failed``, ``cap_reached``, ``error_burst``…)
    is listed; default: every event."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        try:
            parts = urlsplit(v.strip())
            host = parts.hostname
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if parts.scheme.lower() not in ("http", "https"):
            got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(f"must be an http:// or https:// URL (got {got})")
        if not host:
            raise ValueError("must name a host (http://host[:port]/path)")
        return v.strip()

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value().strip()) < _MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {_MIN_SECRET_CHARS} characters (use a random one)")
        return v

    @field_validator("events")
    @classmethod
    def _check_events(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not e.strip() for e in v):
            raise ValueError("must not hold an empty name")
        return v

    @field_validator("max_backoff_s")
    @classmethod
    def _check_backoff(cls, v: float, info: ValidationInfo) -> float:
        first = info.data.get("backoff_s")
        if first is not None and v < first:
            raise ValueError(f"must be at least backoff_s ({first}), got {v}")
        return v

    @property
    def label(self) -> str:
        """The webhook's name in logs and metrics: ``name``, else the URL's host[:port]."""
        if self.name is not None:
            return self.name
        parts = urlsplit(self.url)
        host = parts.hostname or "webhook"
        return f"{host}:{parts.port}" if parts.port is not None else host


class RoutewiseSettings(BaseSettings):
    """All routewise settings; see the module docstring for the file format."""

    model_config = SettingsConfigDict(
        env_prefix="ROUTEWISE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    arms: list[str] | None = None
    backends: list[str] | dict[str, dict[str, Any]] | None = None
    modes: list[Mode] | None = None
    exclude: list[str] = Field(default_factory=list)
    policy: str | dict[str, Any] | None = None
    reward: str | dict[str, Any] | None = None
    db: str | None = Field(default=None, repr=False)  # a URL may hold a password
    """Where the state lives: an SQLite file path (one process writes it), or a
    ``postgresql://user:password@host:port/database`` (or ``postgres://``) URL — a
    PostgreSQL store that several replicas share (install ``routewise[postgres]``; libpq
    URL parameters work, e.g. ``?options=-csearch_path%3Dtenant_a`` for a schema). Unset:
    in memory. Passwords in the URL never appear in logs or errors."""
    seed: int | None = None
    features: dict[str, Any] | None = None
    reward_wait_s: float | None = Field(default=None, gt=0)
    late_feedback: Literal["reject", "accept"] = "reject"
    default_reward: float | None = Field(default=None, ge=0, le=1)
    snapshot_every: int = Field(default=10_000, ge=1)
    durability: Literal["always", "feedback", "batch"] = "feedback"
    check_on_open: bool = True
    """Run SQLite's ``PRAGMA quick_check`` when an existing SQLite store is opened and refuse
    a damaged one (``routewise serve --no-check`` skips it on a very large store)."""
    # memory bounds (README "Bounds"); each hit is counted in /metrics and logged once
    max_context_keys: int = Field(default=256, ge=1)
    """A context with more keys is refused (``InvalidContext`` on ``context``)."""
    max_value_chars: int = Field(default=1024, ge=1)
    """A context key or string value longer than this is refused (``InvalidContext``)."""
    max_feature_keys: int = Field(default=4096, ge=1)
    """The featurizer remembers at most this many distinct keys; later new keys are ignored."""
    max_pending: int = Field(default=100_000, ge=1)
    """Decisions awaiting feedback kept in memory; past it the oldest leaves memory (learned
    with ``default_reward`` if set; a later feedback for it still works)."""
    recent_window: int = Field(default=256, ge=1)
    """The recent decisions that ``best_policy`` without a context averages over."""
    # sidecar
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    token: SecretStr | None = None
    log_json: bool | None = None
    max_lag_s: float = Field(default=5.0, gt=0)
    """A replica on a shared (PostgreSQL) store is not ready (``/readyz`` 503) while it is
    more than this many seconds behind the shared log."""
    body_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    """A request body must arrive within this many seconds of the request's start, else the
    sidecar answers 408 ``RequestTimeout`` and closes the connection (a slow or stalled
    client never holds a request, nor a shutdown, open longer)."""
    guardian: bool | dict[str, Any] | None = None
    webhooks: list[WebhookSettings] = Field(default_factory=list, max_length=32)
    """``[[webhooks]]`` tables: endpoints that receive every Guardian transition and operator
    action (``routewise serve`` delivers to them; library users attach a
    :class:`~routewise.controller.notify.WebhookNotifier` with ``Controller.subscribe``)."""

    @field_validator("webhooks")
    @classmethod
    def _check_webhook_names(cls, v: list[WebhookSettings]) -> list[WebhookSettings]:
        seen: dict[str, int] = {}
        for i, w in enumerate(v):
            if w.label in seen:
                raise ValueError(
                    f"webhooks.{i}.name: {w.label!r} names webhooks.{seen[w.label]} too "
                    "(the default name is the URL's host[:port]): give each a distinct 'name'"
                )
            seen[w.label] = i
        return v

    @field_validator("db")
    @classmethod
    def _check_db(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("must be a file path or a postgresql:// URL, got an empty string")
        scheme, sep, _ = v.partition("://")
        if sep and scheme.lower() not in ("postgresql", "postgres") and "/" not in scheme:
            raise ValueError(
                f"unsupported URL scheme {scheme!r}: give a file path or a postgresql:// URL"
            )
        return v

    @field_validator("arms")
    @classmethod
    def _check_arms(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for a in v:
                Arm.parse(a)
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        sources.append(env_settings)
        return tuple(sources)

    def arm_list(self) -> list[Arm] | None:
        """The arms these settings describe (``None`` if none: reuse the store's)."""
        if self.arms is not None and self.backends is not None:
            raise ConfigError("arms", "give either 'arms' or 'backends' (+ 'modes'), not both")
        if self.arms is not None:
            return [Arm.parse(a) for a in self.arms]
        if self.backends is not None:
            names = list(self.backends) if isinstance(self.backends, dict) else self.backends
            return make_arms(names, self.modes, exclude=self.exclude)
        return None

    def policy_spec(self) -> tuple[str | None, dict[str, Any]]:
        if self.policy is None or isinstance(self.policy, str):
            return self.policy, {}
        spec = dict(self.policy)
        name = spec.pop("name", None)
        if name is None:
            raise ConfigError("policy.name", "a [policy] table needs a 'name'")
        if "seed" in spec:  # make_policy(seed=...) would get it twice
            raise ConfigError("policy.seed", "the policy is seeded by the top-level 'seed' setting")
        return str(name), spec


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "config"


def load_settings(path: str | Path | None = None, **overrides: Any) -> RoutewiseSettings:
    """Load settings from ``path`` (TOML), the environment and ``overrides``.

    ``overrides`` with value ``None`` are ignored (an unset CLI flag).
    """
    init = {k: v for k, v in overrides.items() if v is not None}
    cls: type[RoutewiseSettings] = RoutewiseSettings
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config", f"file {str(p)!r} does not exist")
        try:
            tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{p}: invalid TOML ({exc})") from None
        cls = type(
            "RoutewiseFileSettings",
            (RoutewiseSettings,),
            {
                "model_config": SettingsConfigDict(
                    **{**RoutewiseSettings.model_config, "toml_file": p}
                )
            },
        )
    try:
        return cls(**init)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(_field_path(err["loc"]), f"{err['msg']}{where}") from None
