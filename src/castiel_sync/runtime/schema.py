"""The runtime's own table: per-tenant sync slots (the concurrent-sync limit).

Declared on the shared metadata (listed in ``store.schema.TABLE_MODULES``) so it is part
of the one Alembic history. A row is one slot ``(tenant_id, slot)`` with
``slot < max_concurrent_syncs``; a slot is in use while ``holder`` is set and
``lease_until`` (epoch seconds) is in the future.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Integer, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.store.base import Base

sync_slots = Table(
    "runtime_sync_slots",
    Base.metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    # The event id of the sync job holding the slot; NULL when free.
    Column("holder", String(200), nullable=True, index=True),
    Column("integration_id", String(36), nullable=True),
    Column("lease_until", Double, nullable=True),
)


async def clear_runtime_rows(engine: AsyncEngine) -> None:
    """Forget every slot (tests)."""
    async with engine.begin() as conn:
        await conn.execute(sync_slots.delete())
