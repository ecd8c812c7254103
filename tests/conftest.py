"""Fixtures shared across the test modules."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture()
def anyio_backend() -> str:
    """The async tests (sidecar, clients) run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The URL of the server's ``test`` database (PostgreSQL on 127.0.0.1:5432, user
    ``postgres``, trust auth): for creating databases and for ``pg_terminate_backend``."""
    return f"{PG_SERVER}/test"


@pytest.fixture()
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """The URL of a new, empty database ``rw_<hex>``, dropped (``WITH (FORCE)``) after the
    test."""
    import psycopg

    name = f"rw_{secrets.token_hex(6)}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
