"""The migrations build exactly the metadata, on both backends: a table or column added
without a migration fails here."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from castiel_sync.store.base import create_engine
from castiel_sync.store.migrate import alembic_config, current, head_revision, upgrade
from castiel_sync.store.schema import metadata


@asynccontextmanager
async def fresh_postgres(admin_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"castiel_mig_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'fresh.db'}"
        return
    async with fresh_postgres(request.getfixturevalue("postgres_admin_url")) as url:
        yield url


async def _sync(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(fn)
            await conn.commit()
            return result
    finally:
        await engine.dispose()


def _differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata()))


async def test_migrations_build_exactly_the_metadata(empty_url: str) -> None:
    assert await current(empty_url) is None
    await upgrade(empty_url)
    assert await current(empty_url) == head_revision()
    assert await _sync(empty_url, _differences) == []
    tables = await _sync(empty_url, lambda c: set(inspect(c).get_table_names()))
    assert {t.name for t in metadata().sorted_tables} | {"alembic_version"} == tables


async def test_upgrade_is_idempotent_and_downgrade_works(empty_url: str) -> None:
    await upgrade(empty_url)
    await upgrade(empty_url)
    assert await current(empty_url) == head_revision()

    def downgrade(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")

    await _sync(empty_url, downgrade)
    tables = await _sync(empty_url, lambda c: set(inspect(c).get_table_names()))
    assert tables <= {"alembic_version"}
    await upgrade(empty_url)
    assert await _sync(empty_url, _differences) == []


@pytest.mark.postgres
async def test_processes_starting_together_migrate_once(postgres_admin_url: str) -> None:
    """Without the advisory lock all but one would fail on "relation already exists"."""
    async with fresh_postgres(postgres_admin_url) as url:
        await asyncio.gather(upgrade(url), upgrade(url), upgrade(url))
        assert await current(url) == head_revision()
        assert await _sync(url, _differences) == []


def test_a_table_without_a_migration_is_detected(tmp_path: Path) -> None:
    """The comparison really looks: an extra table in the metadata shows up."""
    from sqlalchemy import Column, Integer, MetaData, Table

    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    asyncio.run(upgrade(url))
    extra = MetaData()
    for table in metadata().sorted_tables:
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))

    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, extra))

    diff = asyncio.run(_sync(url, differences))
    assert [d[0] for d in diff] == ["add_table"] and diff[0][1].name == "not_migrated"
