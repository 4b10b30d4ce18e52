"""Helpers of the runtime tests (not a test module)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog.sync import sync_catalog
from castiel_sync.domain.config import IntegrationSettings, SyncFrequency
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.tables import OutboxRow

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def seed_catalog(engine: AsyncEngine) -> None:
    async with Store(engine).transaction() as session:
        await sync_catalog(session)


async def make_integration(
    engine: AsyncEngine,
    tenant: str,
    instance: str,
    *,
    provider: str = "salesforce",
    frequency: dict[str, Any] | None = None,
    next_sync_at: datetime | None = T0,
    status: str = "active",
    **columns: Any,
) -> str:
    settings = IntegrationSettings(
        sync_enabled=True,
        sync_frequency=SyncFrequency.model_validate(
            frequency or {"kind": "interval", "minutes": 15}
        ),
    )
    async with Store(engine).transaction() as session:
        repo = IntegrationRepository(session, TenantScope(TenantId(tenant)))
        row = await repo.create(
            provider_id=provider, name=instance, instance_id=instance, settings=settings,
            created_by="test",
        )  # fmt: skip
        await repo.update(row.id, status=status, next_sync_at=next_sync_at, **columns)
        return row.id


async def outbox_events(engine: AsyncEngine, event_type: str | None = None) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        stmt = select(OutboxRow.event).order_by(OutboxRow.id)
        if event_type:
            stmt = stmt.where(OutboxRow.event_type == event_type)
        return [r[0] for r in (await conn.execute(stmt)).all()]


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
