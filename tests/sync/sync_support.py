"""Shared helpers for the sync engine's tests (imported by name: unique basename)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.repositories import (
    IntegrationRepository,
    ProviderRepository,
    TenantSettingsRepository,
)
from castiel_sync.store.tables import (
    ExternalRelationshipRow,
    IntegrationRow,
    OutboxRow,
    ShardRow,
    SyncExecutionRow,
)
from castiel_sync.sync import InboundSync, StaticCredentialProvider, SyncJob
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
ENTITY = "contacts"

CONTACT_MAPPINGS: list[dict[str, Any]] = [
    {"external": "name", "castiel": "name", "transforms": ["trim"]},
    {"external": "email", "castiel": "email", "transforms": ["lower"]},
    {"external": "city", "castiel": "address.city"},
    {"external": "score", "castiel": "score", "transforms": ["number"]},
]


def settings(**overrides: Any) -> IntegrationSettings:
    base: dict[str, Any] = {
        "syncEnabled": True,
        "syncFrequency": {"kind": "interval", "minutes": 15},
        "entityMappings": [
            {
                "entity": ENTITY,
                "shardType": "c_contact",
                "direction": overrides.pop("direction", "inbound"),
                "fieldMappings": CONTACT_MAPPINGS,
            }
        ],
        "allowedShardTypes": ["c_contact"],
    }
    base.update(overrides)
    return IntegrationSettings.model_validate(base)


class Clock:
    """The engine's clock, moved by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Harness:
    store: Store
    emulator: ExampleCrmEmulator
    clock: Clock
    integration_id: str = ""
    tenant: str = TENANT
    engines: list[InboundSync] = field(default_factory=list)

    @property
    def scope(self) -> TenantScope:
        return TenantScope(TenantId(self.tenant))

    def adapter(self, integration: IntegrationRow | None = None) -> ExampleCrmAdapter:
        return ExampleCrmAdapter().configure(
            transport=self.emulator.transport(), clock=self.emulator.clock
        )

    def engine(self, **kwargs: Any) -> InboundSync:
        kwargs.setdefault("clock", self.clock)
        engine = InboundSync(
            self.store,
            StaticCredentialProvider(self.emulator.credentials),
            adapter_factory=self.adapter,
            **kwargs,
        )
        self.engines.append(engine)
        return engine

    def job(self, **kwargs: Any) -> SyncJob:
        kwargs.setdefault("entity", ENTITY)
        kwargs.setdefault("sync_type", "full")
        kwargs.setdefault("trigger", "manual")
        return SyncJob(tenant_id=self.tenant, integration_id=self.integration_id, **kwargs)

    def seed(self, count: int, *, start: int = 0, step_seconds: float = 0, **extra: Any) -> None:
        entity = self.emulator.store[ENTITY]
        for n in range(start, start + count):
            entity.create(
                {
                    "name": f" Person {n} ",
                    "email": f"Person{n}@Example.com",
                    "city": "Oslo",
                    "score": str(n),
                    **extra,
                },
                id=f"c{n:05d}",
            )
            if step_seconds:
                self.emulator.clock.advance(step_seconds)

    async def set_limit(self, records: int) -> None:
        async with self.store.transaction() as session:
            await TenantSettingsRepository(session, self.scope).set_limits(
                max_records_per_sync=records
            )

    async def update_settings(self, new: IntegrationSettings) -> None:
        async with self.store.transaction() as session:
            await IntegrationRepository(session, self.scope).update(
                self.integration_id, settings=new
            )

    async def integration(self) -> IntegrationRow:
        async with self.store.transaction() as session:
            return await IntegrationRepository(session, self.scope).get(self.integration_id)

    # -- raw views, for assertions -------------------------------------------------------

    async def scalar(self, stmt: Any) -> Any:
        async with self.store.transaction() as session:
            return (await session.execute(stmt)).scalar_one()

    async def rows(self, stmt: Any) -> list[Any]:
        async with self.store.transaction() as session:
            return list((await session.execute(stmt)).all())

    async def shards(self, *, live: bool = True) -> list[ShardRow]:
        async with self.store.transaction() as session:
            stmt = select(ShardRow).where(ShardRow.tenant_id == self.tenant).order_by(ShardRow.id)
            if live:
                stmt = stmt.where(ShardRow.deleted_at.is_(None))
            return list((await session.execute(stmt)).scalars().all())

    async def relationships(self) -> list[ExternalRelationshipRow]:
        async with self.store.transaction() as session:
            stmt = (
                select(ExternalRelationshipRow)
                .where(ExternalRelationshipRow.tenant_id == self.tenant)
                .order_by(ExternalRelationshipRow.external_id)
            )
            return list((await session.execute(stmt)).scalars().all())

    async def shard_by_external(self, external_id: str) -> ShardRow:
        async with self.store.transaction() as session:
            stmt = (
                select(ShardRow)
                .join(ExternalRelationshipRow, ExternalRelationshipRow.shard_id == ShardRow.id)
                .where(ExternalRelationshipRow.external_id == external_id)
                .where(ExternalRelationshipRow.integration_id == self.integration_id)
            )
            return (await session.execute(stmt)).scalars().one()

    async def outbox(self, event_type: str | None = None) -> list[OutboxRow]:
        async with self.store.transaction() as session:
            stmt = (
                select(OutboxRow).where(OutboxRow.tenant_id == self.tenant).order_by(OutboxRow.id)
            )
            if event_type is not None:
                stmt = stmt.where(OutboxRow.event_type == event_type)
            return list((await session.execute(stmt)).scalars().all())

    async def count_outbox(self) -> int:
        return len(await self.outbox())

    async def executions(self) -> list[SyncExecutionRow]:
        async with self.store.transaction() as session:
            stmt = select(SyncExecutionRow).order_by(
                SyncExecutionRow.started_at, SyncExecutionRow.id
            )
            return list((await session.execute(stmt)).scalars().all())

    async def count(self, model: Any) -> int:
        return int(await self.scalar(select(func.count()).select_from(model)))


async def make_harness(
    engine: AsyncEngine, *, tenant: str = TENANT, **setting_overrides: Any
) -> Harness:
    store = Store(engine)
    async with store.transaction() as session:
        providers = ProviderRepository(session, SystemScope("tests"))
        await providers.upsert(
            provider_id="example_crm", name="Example CRM", category="crm", status="active",
            audience="tenant", auth_type="oauth2", definition={"id": "example_crm"},
        )  # fmt: skip
    emulator = ExampleCrmEmulator()
    harness = Harness(store, emulator, Clock(), tenant=tenant)
    harness.integration_id = await add_integration(store, tenant, "sales", **setting_overrides)
    return harness


async def add_integration(store: Store, tenant: str, instance: str, **overrides: Any) -> str:
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TenantScope(TenantId(tenant)))
        row = await repo.create(
            provider_id="example_crm", name=f"Example - {instance}", instance_id=instance,
            settings=settings(**overrides), created_by="user-1",
        )  # fmt: skip
        await repo.update(row.id, status="active", credential_secret_name="unused")
        return row.id
