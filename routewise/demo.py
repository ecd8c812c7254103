"""``routewise demo``: watch the policy learn which (backend, output mode) arm to prefer.

Without ``--live`` (:func:`run_simulated_demo`, about 20 s, nothing to install) a real
:class:`~routewise.Controller`, Guardian on, routes simulated requests to the synthetic
backends of :mod:`routewise.simulations` (4 backends × 3 output modes): it learns the best
arms, moves traffic away when the Gemini-class backend degrades (the Guardian quarantines it)
and back once it recovers, while a live table shows each arm's share of recent traffic.

``routewise demo --live`` (:func:`run_live_demo`) starts llama.cpp servers for the small GGUF
models in :data:`routewise.backends.llama.LOCAL_MODELS`, builds a :class:`~routewise.Router`
over their arms (model × output mode, grammar-constrained), and routes labelled support
messages for a few minutes while a live table shows what each arm did and what the policy
believes. The messages carry a known intent and urgency, so the outcome's ``score`` is task
correctness (the share of labelled fields the model got right) and the reward uses it. The
tiny models classify close to chance — they are here for their real format, latency and
validity behaviour, the backend × mode effect routewise learns, not for correct answers.

:func:`command` is the ``routewise demo`` command (registered by :mod:`routewise.cli`).

Examples
--------
>>> msgs = load_messages()
>>> len(msgs), sorted({m["intent"] for m in msgs})
(60, ['account', 'billing', 'cancellation', 'shipping', 'technical'])
>>> t = SupportTicket(intent=Intent.billing, urgency=Urgency.high, needs_human=True, summary="refund")
>>> label_score(t, {"intent": "billing", "urgency": "low"})
0.5
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, Field
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from routewise.backends.router import Receipt, Router
from routewise.errors import ConfigError

if TYPE_CHECKING:
    from routewise.simulations.outcomes import OutcomeDraws

__all__ = [
    "ArmTally",
    "Intent",
    "SupportTicket",
    "Urgency",
    "command",
    "label_score",
    "load_messages",
    "run_demo",
    "run_live_demo",
    "run_simulated_demo",
    "support_request",
]

PROMPT = (
    "Triage this customer support message. Classify its intent and urgency, say whether a "
    "human agent is needed, and summarize it in a few words.\n\nMessage: {message}"
)


class Intent(StrEnum):
    """What the customer wants."""

    billing = "billing"
    technical = "technical"
    account = "account"
    shipping = "shipping"
    cancellation = "cancellation"


class Urgency(StrEnum):
    """How soon it must be handled."""

    low = "low"
    medium = "medium"
    high = "high"


class SupportTicket(BaseModel):
    """A triaged customer-support message — the demo's target structure."""

    intent: Intent = Field(description="what the customer wants")
    urgency: Urgency = Field(description="how soon it must be handled")
    needs_human: bool = Field(description="true if a human agent must step in")
    summary: str = Field(description="a few words summarizing the request")


def load_messages() -> list[dict[str, Any]]:
    """The bundled labelled support messages (``id``, ``message``, ``intent``, ``urgency``)."""
    text = (
        resources.files("routewise").joinpath("demo_data/support_messages.jsonl").read_text("utf-8")
    )
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def label_score(ticket: SupportTicket, label: Mapping[str, Any]) -> float:
    """Task correctness: the share of labelled fields (intent, urgency) the ticket got right."""
    hits = [
        bool(ticket.intent.value == label["intent"]),
        bool(ticket.urgency.value == label["urgency"]),
    ]
    return sum(hits) / len(hits)


def support_request(
    m: Mapping[str, Any],
) -> tuple[list[dict[str, str]], Callable[[SupportTicket], float]]:
    """The chat messages for one labelled support message, and its ``score`` function (the
    share of labelled fields a ticket got right) for ``Router.complete``.

    Examples
    --------
    >>> messages, score = support_request({"message": "App crashes", "intent": "technical",
    ...                                    "urgency": "high"})
    >>> messages[0]["role"], "App crashes" in messages[0]["content"]
    ('user', True)
    >>> score(SupportTicket(intent=Intent.technical, urgency=Urgency.low, needs_human=False,
    ...                     summary="app crash"))
    0.5
    """

    def score(ticket: SupportTicket) -> float:
        return label_score(ticket, m)

    return [{"role": "user", "content": PROMPT.format(message=m["message"])}], score


@dataclass
class ArmTally:
    """Running per-arm totals for the live view and the final table."""

    n: int = 0
    valid: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    local_ms: float = 0.0
    reward: float = 0.0
    correct: float = 0.0

    def add(self, r: Receipt) -> None:
        """Count one receipt."""
        self.n += 1
        self.valid += int(r.outcome.valid)
        if r.outcome.error:
            self.errors[r.outcome.error] = self.errors.get(r.outcome.error, 0) + 1
        self.latency_ms.append(r.outcome.latency_ms)
        self.output_tokens += r.output_tokens
        self.local_ms += r.local_ms
        self.reward += r.reward
        self.correct += r.outcome.score or 0.0

    def row(self) -> dict[str, Any]:
        """Summary numbers: validity, median latency, mean tokens, reward, correctness."""
        lat = sorted(self.latency_ms)
        return {
            "n": self.n,
            "valid": self.valid / self.n if self.n else 0.0,
            "p50_ms": lat[len(lat) // 2] if lat else 0.0,
            "out_tokens": self.output_tokens / self.n if self.n else 0.0,
            "local_ms": self.local_ms / self.n if self.n else 0.0,
            "reward": self.reward / self.n if self.n else 0.0,
            "correct": self.correct / self.n if self.n else 0.0,
            "errors": dict(self.errors),
        }


def _table(router: Router, tallies: Mapping[str, ArmTally], done: int, elapsed: float) -> Group:
    ranked = {r.arm.id: r for r in router.controller.best_policy()}
    t = Table(title=f"routewise demo — {done} requests in {elapsed:.0f}s", expand=False)
    for col in (
        "arm",
        "n",
        "valid",
        "p50 ms",
        "out tok",
        "correct",
        "mean reward",
        "est. reward ± unc",
    ):
        t.add_column(col, justify="left" if col == "arm" else "right")
    best = max(ranked.values(), key=lambda r: r.expected_reward).arm.id if ranked else None
    for arm in router.arms:
        row = tallies[arm.id].row()
        est = ranked.get(arm.id)
        style = "bold green" if arm.id == best else ""
        t.add_row(
            arm.id,
            str(row["n"]),
            f"{row['valid']:.0%}",
            f"{row['p50_ms']:.0f}",
            f"{row['out_tokens']:.0f}",
            f"{row['correct']:.2f}",
            f"{row['reward']:.3f}",
            f"{est.expected_reward:.3f} ± {est.uncertainty:.3f}" if est else "-",
            style=style,
        )
    note = Text(
        "green = the arm the policy currently ranks first. The tiny models classify near chance: "
        "the demo shows format/latency/validity learning, not answer quality.",
        style="dim",
    )
    return Group(t, note)


async def _route_loop(
    router: Router,
    messages: Sequence[Mapping[str, Any]],
    duration_s: float,
    max_requests: int | None,
    seed: int,
    on_receipt: Callable[[Receipt], None],
) -> int:
    rng = random.Random(seed)
    order = list(messages)
    start = time.monotonic()
    done = 0
    while time.monotonic() - start < duration_s and (max_requests is None or done < max_requests):
        if done % len(order) == 0:
            rng.shuffle(order)
        m = order[done % len(order)]
        chat, score = support_request(m)
        result = await router.complete(
            SupportTicket, chat, context={"message_chars": len(m["message"])}, score=score
        )
        for r in result.attempts:
            on_receipt(r)
        done += 1
    return done


def run_demo(
    backends: Mapping[str, Mapping[str, Any]],
    *,
    duration_s: float = 180.0,
    max_requests: int | None = None,
    seed: int = 0,
    store: str | Path | None = None,
    policy: Any = None,
    console: Console | None = None,
    live: bool = True,
) -> dict[str, dict[str, Any]]:
    """Route the bundled messages through ``backends`` for ``duration_s`` seconds (or
    ``max_requests``), showing a live table; return the per-arm summary rows."""
    console = console or Console()
    router = Router(backends, policy=policy, store=store, seed=seed, reward="high_correctness")
    tallies = {a.id: ArmTally() for a in router.arms}
    messages = load_messages()
    start = time.monotonic()
    counter = [0]
    try:
        with (
            Live(
                _table(router, tallies, 0, 0.0),
                console=console,
                refresh_per_second=2,
                transient=False,
            )
            if live
            else _Quiet() as view
        ):

            def on_receipt(r: Receipt) -> None:
                tallies[r.arm.id].add(r)
                counter[0] += 1
                if view is not None:
                    view.update(_table(router, tallies, counter[0], time.monotonic() - start))

            asyncio.run(_route_loop(router, messages, duration_s, max_requests, seed, on_receipt))
        if not live:
            console.print(_table(router, tallies, counter[0], time.monotonic() - start))
        console.print("policy now ranks (no context, recent traffic mix):")
        for i, r in enumerate(router.controller.best_policy()[:3], 1):
            console.print(
                f"  {i}. {r.arm.id}  est. reward {r.expected_reward:.3f} ± {r.uncertainty:.3f}"
            )
    finally:
        router.close()
    return {arm: t.row() for arm, t in tallies.items()}


def run_live_demo(
    models: Sequence[str],
    *,
    install: bool = False,
    threads: int | None = None,
    err_console: Console | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """``routewise demo --live``: check (or, with ``install``, pip-install) the local
    ``models``, start a ``llama-server`` for each on 127.0.0.1, and :func:`run_demo` over
    them (``kwargs``); the servers are stopped on return."""
    from routewise.backends.llama import ensure_local_models, local_backends

    if not models:
        raise ConfigError("--models", "give at least one local model")
    err_console = err_console or Console(stderr=True)
    installed = ensure_local_models(list(models), install=install)
    if installed:
        err_console.print("installed: " + ", ".join(installed))
    err_console.print(f"starting llama-server for {', '.join(models)} on 127.0.0.1 ...")
    with local_backends(list(models), threads=threads) as backends:
        return run_demo(backends, **kwargs)


def command(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Route through real local LLMs (SmolLM2-135M, Gemma 3 270M) on llama.cpp "
            "servers on 127.0.0.1 instead of simulated backends.",
        ),
    ] = False,
    duration: Annotated[
        float | None,
        typer.Option("--duration", "-d", help="Seconds (default: 20, --live 180).", min=1),
    ] = None,
    max_requests: Annotated[
        int | None,
        typer.Option("--max-requests", "-n", help="Requests (default: 6000, --live none).", min=1),
    ] = None,
    models: Annotated[
        str,
        typer.Option("--models", help="With --live: comma-separated local models."),
    ] = "smollm2-135m,gemma3-270m",
    db: Annotated[
        Path | None, typer.Option("--db", help="Keep the state in this SQLite file.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the policy and the traffic.")] = 0,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Policy name (default: the tuned default).")
    ] = None,
    install: Annotated[
        bool,
        typer.Option(
            "--install",
            help="With --live: pip-install missing models, build llama-server (minutes).",
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="With --live: CPU threads per llama-server.", min=1),
    ] = None,
    view: Annotated[
        bool, typer.Option("--view/--no-view", help="Show the live table while routing.")
    ] = True,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the per-arm summary as JSON here.")
    ] = None,
) -> None:
    """Watch the policy learn which arm to prefer.

    An arm is a (backend, output mode) pair. Without --live: simulated backends, one of which degrades and recovers (about 20 s,
    nothing to install). With --live: real local LLMs on llama.cpp servers (first run:
    --install).
    """
    console, err_console = _consoles()
    store = str(db) if db is not None else None
    common: dict[str, Any] = {"seed": seed, "policy": policy, "store": store, "live": view}
    if live:
        names = [m.strip() for m in models.split(",") if m.strip()]
        rows = run_live_demo(
            names,
            install=install,
            threads=threads,
            duration_s=duration or 180.0,
            max_requests=max_requests,
            console=console,
            err_console=err_console,
            **common,
        )
    else:
        rows = run_simulated_demo(
            rounds=max_requests or 6000, duration_s=duration or 20.0, console=console, **common
        )
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        err_console.print(f"wrote {out}")


def _consoles() -> tuple[Console, Console]:
    """stdout (not cut to 80 columns when piped; $COLUMNS wins) and stderr consoles."""
    tty = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if tty else 200), Console(stderr=True)


class _Quiet:
    """A stand-in for rich's Live when the view is off."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# ------------------------------------------------------------------ the simulated demo
SIMULATED_SCENARIO = "degradation"
"""The scenario ``routewise demo`` (without ``--live``) plays: the Gemini-class backend, the
best arm for about half the traffic, degrades at 40% of the run and recovers at 75%."""


@dataclass
class _SimTally:
    """Per-arm totals of the simulated demo, and its picks in the recent window."""

    recent: list[int]
    n: int = 0
    valid: int = 0
    reward: float = 0.0
    latency_ms: list[float] = field(default_factory=list)

    def row(self, window: int) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {
            "n": self.n,
            "share_recent": sum(self.recent) / window if window else 0.0,
            "valid": self.valid / self.n if self.n else 0.0,
            "p50_ms": lat[len(lat) // 2] if lat else 0.0,
            "reward": self.reward / self.n if self.n else 0.0,
        }


class _SimulatedRun:
    """A real :class:`~routewise.Controller` (Guardian on) on a simulated clock, fed the
    synthetic environment's requests and outcomes of :data:`SIMULATED_SCENARIO`."""

    WINDOW = 500  # requests the "recent share" column looks at

    def __init__(self, rounds: int, seed: int, policy: Any, store: str | Path | None) -> None:
        from routewise.controller import Controller
        from routewise.simulations import load_scenario

        self.scenario = load_scenario(SIMULATED_SCENARIO)
        self.env = self.scenario.build_environment()
        self.rounds = rounds
        self.seed = seed
        self.segments = self.scenario.timeline(rounds, self.env)
        self.events = self.scenario.event_rounds(rounds)
        self.now = [0.0]
        self.ctl = Controller(
            arms=self.env.arms,
            policy=policy,
            reward=self.scenario.reward,
            store=store,
            seed=seed,
            features=self.env.features(),
            clock=lambda: self.now[0],
            log_events=False,
        )
        self.tallies = {a.id: _SimTally(recent=[0] * self.WINDOW) for a in self.env.arms}
        self.arm_ids = [a.id for a in self.env.arms]
        self.arm_width = max(len(a) for a in self.arm_ids)
        self.done = 0
        self._stream = self._requests()

    def _requests(self) -> Iterator[tuple[dict[str, Any], OutcomeDraws, int]]:
        """Every request with its outcomes for every arm, drawn a chunk of 256 at a time (a
        seed per chunk: the traffic does not depend on how :meth:`play` is paced)."""
        import numpy as np

        from routewise.simulations.outcomes import realize

        for seg in self.segments:
            for lo in range(seg.start, seg.stop, 256):
                rng = np.random.default_rng((self.seed, lo))
                n = min(256, seg.stop - lo)
                contexts, params = self.env.sample(n, rng, seg.mix or self.env.default_mix)
                draws = realize(seg.effects.apply(params), rng)
                for j, ctx in enumerate(contexts):
                    yield ctx, draws, j

    def play(self, n: int) -> None:
        """The next ``n`` requests: decide, draw the chosen arm's outcome, feed it back."""
        for ctx, draws, j in itertools.islice(self._stream, min(n, self.rounds - self.done)):
            self.now[0] = self.done / self.scenario.rate_per_s
            d = self.ctl.decide(ctx)
            out = draws.outcome(j, self.arm_ids.index(d.arm.id))
            reward = self.ctl.feedback(d.decision_id, out).reward
            t = self.tallies[d.arm.id]
            t.n += 1
            t.valid += int(out.valid)
            t.reward += reward
            t.latency_ms.append(out.latency_ms)
            slot = self.done % self.WINDOW
            for arm_id, other in self.tallies.items():
                other.recent[slot] = int(arm_id == d.arm.id)
            self.done += 1

    def rows(self) -> dict[str, dict[str, Any]]:
        window = min(self.done, self.WINDOW)
        return {arm: t.row(window) for arm, t in self.tallies.items()}

    def table(self, width: int) -> Group:
        """The live view for a console ``width`` columns wide."""
        ranked = {r.arm.id: r for r in self.ctl.best_policy()}
        health = self.ctl.health()
        best = max(ranked.values(), key=lambda r: r.expected_reward).arm.id if ranked else None
        t = Table(
            title=f"routewise demo, simulated backends: request {self.done:,} of {self.rounds:,}",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        t.add_column(
            "arm (backend/mode)", overflow="fold", min_width=min(self.arm_width, width - 46)
        )
        for col in ("share", "valid", "p50 ms", "est. reward", "health"):
            t.add_column(col, justify="left" if col == "health" else "right", no_wrap=True)
        for arm, row in self.rows().items():
            est = ranked.get(arm)
            t.add_row(
                arm,
                f"{row['share_recent']:.0%}",
                f"{row['valid']:.0%}",
                f"{row['p50_ms']:.0f}",
                f"{est.expected_reward:.3f}±{est.uncertainty:.3f}" if est else "-",
                health.get(arm, "?"),
                style="bold green" if arm == best else "",
            )
        return Group(t, Text("\n".join(self.story()), style="dim"))

    def story(self) -> list[str]:
        """What happened so far: the scenario's events and the Guardian's transitions."""
        rate = self.scenario.rate_per_s
        lines = [(r, ev.label) for r, ev in self.events if r <= self.done]
        lines += [
            (round(ev.ts * rate), f"{ev.arm} {ev.from_state} → {ev.to_state} ({ev.reason})")
            for ev in self.ctl.events()
        ]
        return [
            "green = the arm the policy ranks first; share = of the last 500 requests",
            *(f"request {r:,}: {text}" for r, text in sorted(lines, key=lambda x: x[0])),
        ]


def run_simulated_demo(
    *,
    rounds: int = 6000,
    duration_s: float = 20.0,
    seed: int = 0,
    policy: Any = None,
    store: str | Path | None = None,
    console: Console | None = None,
    live: bool = True,
) -> dict[str, dict[str, Any]]:
    """Route ``rounds`` simulated requests through a real Controller, paced over about
    ``duration_s`` seconds, with a live table of which arm the policy prefers; return the
    per-arm summary rows.

    The backends are the synthetic ones of :mod:`routewise.simulations` (4 backends × 3
    output modes, ``simulations/data/environment.toml``) playing :data:`SIMULATED_SCENARIO`:
    the policy learns the best arms, moves traffic away when one degrades (the Guardian
    quarantines it), and back once it recovers. Nothing is installed or called.

    Examples
    --------
    >>> from io import StringIO
    >>> rows = run_simulated_demo(rounds=300, duration_s=0, live=False,
    ...                           console=Console(file=StringIO()))
    >>> len(rows), sum(r["n"] for r in rows.values())
    (12, 300)
    """
    console = console or Console()
    run = _SimulatedRun(rounds, seed, policy, store)
    batch = max(1, rounds // max(1, int(duration_s * 4)))  # about 4 refreshes a second
    start = time.monotonic()
    try:
        with (
            Live(run.table(console.width), console=console, refresh_per_second=4, transient=False)
            if live
            else _Quiet() as view
        ):
            while run.done < rounds:
                run.play(batch)
                if view is not None:
                    view.update(run.table(console.width))
                time.sleep(max(0.0, start + duration_s * run.done / rounds - time.monotonic()))
        console.print(run.table(console.width) if not live else "")
        console.print("policy now ranks (no context, recent traffic mix):")
        for i, r in enumerate(run.ctl.best_policy()[:3], 1):
            console.print(
                f"  {i}. {r.arm.id}  est. reward {r.expected_reward:.3f} ± {r.uncertainty:.3f}"
            )
        console.print(
            "These backends are simulated. `routewise demo --live` routes real local LLMs; "
            "`routewise simulate` compares policies by regret.",
            style="dim",
        )
    finally:
        run.ctl.close()
    return run.rows()
