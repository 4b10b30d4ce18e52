"""Fixtures of the end-to-end tests: the whole system in process per provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_support import CASES, E2E, build
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
def e2e_factory(engine: AsyncEngine, db_url: str, tmp_path: Path) -> Callable[[str], Any]:
    """``async with``-less factory: ``await e2e_factory("salesforce")`` (closed at the end)."""
    del engine  # requested for the schema it creates (SQLite) or empties (PostgreSQL)
    opened: list[Any] = []

    async def make(provider: str) -> E2E:
        built = await build(CASES[provider], db_url, tmp_path / "data")
        opened.append(built)
        return built.e2e

    make.opened = opened  # type: ignore[attr-defined]
    return make


@pytest.fixture
async def e2e_cleanup(e2e_factory: Any) -> AsyncIterator[Any]:
    yield e2e_factory
    for built in e2e_factory.opened:
        await built.close()
