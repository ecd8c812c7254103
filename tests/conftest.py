"""Fixtures shared across the test modules."""

from __future__ import annotations

import pytest


@pytest.fixture()
def anyio_backend() -> str:
    """The async tests (sidecar, clients) run on asyncio."""
    return "asyncio"
