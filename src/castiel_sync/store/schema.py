"""Collects every module that declares tables on the shared metadata.

Backends keep their private tables beside their code; listing them here is what puts
them into Alembic's history and into test databases.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.store.base import Base

TABLE_MODULES = [
    "castiel_sync.store.tables",
    "castiel_sync.bus.sql",
    "castiel_sync.vault.local",
    "castiel_sync.runtime.schema",
]


def metadata() -> MetaData:
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return Base.metadata


async def create_all(engine: AsyncEngine) -> None:
    """Create every table directly (tests). Deployments use ``castiel-sync db upgrade``."""
    md = metadata()
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
