"""Shared fixtures.

Backends: tests that take ``db_url`` run once on SQLite and once on the real PostgreSQL
(127.0.0.1:5432). Outside CI a missing server skips those runs; with CI=true it fails
them, so a backend suite can never pass by silently not running.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all, metadata

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_HOST = os.environ.get("CASTIEL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CASTIEL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CASTIEL_TEST_PG_USER", "postgres")
AMQP_URL = os.environ.get("CASTIEL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

# Property tests: fixed examples in CI (a gate must not flake), fresh ones locally.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if IN_CI:
    hypothesis_settings.load_profile("ci")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip locally, fail in CI, when a real server the test needs is down."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must run the {name} suite, not skip it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture(scope="session")
def amqp_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture(scope="session")
def postgres_database(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import asyncio

    name = f"castiel_test_{os.getpid()}_{secrets.token_hex(4)}"

    async def run(sql: str) -> None:
        engine = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    url = postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"

    async def schema() -> None:
        engine = create_engine(url)
        try:
            await create_all(engine)
        finally:
            await engine.dispose()

    asyncio.run(schema())
    yield url
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with the full schema and no rows, on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'castiel.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    if engine.dialect.name == "sqlite":
        await create_all(engine)
    else:
        tables = ", ".join(f'"{t.name}"' for t in metadata().sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield engine
    await engine.dispose()
