"""The live demo: route bundled customer-support messages through real local LLMs.

``routewise demo --live`` starts llama.cpp servers for the small GGUF models in
:data:`routewise.backends.llama.LOCAL_MODELS`, builds a :class:`~routewise.Router` over
their arms (model × output mode, grammar-constrained), and routes labelled support messages
for a few minutes while a live table shows what each arm did and what the policy believes.

The messages carry a known intent and urgency, so the outcome's ``score`` is task
correctness (the share of labelled fields the model got right) and the reward uses it. The
tiny models classify close to chance — they are here for their real format, latency and
validity behaviour, the backend × mode effect routewise learns, not for correct answers.

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
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from routewise.backends.router import Receipt, Router

__all__ = [
    "ArmTally",
    "Intent",
    "SupportTicket",
    "Urgency",
    "label_score",
    "load_messages",
    "run_demo",
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


class _Quiet:
    """A stand-in for rich's Live when the view is off."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
