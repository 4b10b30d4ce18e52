"""Runtime fixtures: the schema (shared tables plus the runtime's slots) and the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from runtime_support import seed_catalog
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.runtime.schema import clear_runtime_rows


@pytest.fixture
async def rt_engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """``engine`` with no slots held and the provider catalog in place."""
    await clear_runtime_rows(engine)
    await seed_catalog(engine)
    yield engine
