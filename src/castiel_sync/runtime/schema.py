"""The runtime's own table: per-tenant sync slots (the concurrent-sync limit).

It lives on its own ``MetaData`` and is created idempotently by every runtime process on
start (:func:`ensure_schema`), so the runtime adds no Alembic revision of its own. A row
is one slot ``(tenant_id, slot)`` with ``slot < max_concurrent_syncs``; a slot is in use
while ``holder`` is set and ``lease_until`` (epoch seconds) is in the future.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Integer, MetaData, String, Table
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

RUNTIME_METADATA = MetaData()

sync_slots = Table(
    "runtime_sync_slots",
    RUNTIME_METADATA,
    Column("tenant_id", String(64), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    # The event id of the sync job holding the slot; NULL when free.
    Column("holder", String(200), nullable=True, index=True),
    Column("integration_id", String(36), nullable=True),
    Column("lease_until", Double, nullable=True),
)


async def ensure_schema(engine: AsyncEngine) -> None:
    """Create the runtime's tables if absent (safe from several processes at once)."""
    for _ in range(3):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(RUNTIME_METADATA.create_all, checkfirst=True)
            return
        except (IntegrityError, DBAPIError):  # another process created it concurrently
            continue


async def clear_runtime_rows(engine: AsyncEngine) -> None:
    """Forget every slot (tests)."""
    async with engine.begin() as conn:
        await conn.execute(sync_slots.delete())
