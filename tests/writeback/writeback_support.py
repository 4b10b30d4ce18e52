"""Shared helpers of the write-back tests (imported by name: unique basename)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.events import WRITE_BACK_REQUESTED, CloudEvent
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository, ProviderRepository
from castiel_sync.store.tables import ExternalRelationshipRow, OutboxRow, ShardRow
from castiel_sync.sync import InboundSync, StaticCredentialProvider, SyncJob
from castiel_sync.sync.conflict_service import ConflictService
from castiel_sync.sync.outbound import OutboundOutcome, OutboundSync
from castiel_sync.sync.shard_service import ShardService
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator

TENANT = "tenanta"
ENTITY = "contacts"
MAPPINGS: list[dict[str, Any]] = [
    {"external": "name", "castiel": "name"},
    {"external": "email", "castiel": "email", "transforms": ["lower"]},
    {"external": "city", "castiel": "address.city"},
    {"external": "score", "castiel": "score", "transforms": ["number"]},
]


def settings(**overrides: Any) -> IntegrationSettings:
    base: dict[str, Any] = {
        "syncEnabled": True,
        "syncDirection": "bidirectional",
        "syncFrequency": {"kind": "interval", "minutes": 15},
        "entityMappings": [
            {
                "entity": ENTITY,
                "shardType": "c_contact",
                "direction": "bidirectional",
                "fieldMappings": MAPPINGS,
            }
        ],
        "allowedShardTypes": ["c_contact"],
        "writeBack": {"enabled": True, "entities": [ENTITY]},
    }
    base.update(overrides)
    return IntegrationSettings.model_validate(base)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now


class AmbiguousTransport(httpx.AsyncBaseTransport):
    """Forwards to the emulator; the next ``fail_posts`` POSTs are applied there but the
    answer is lost (a timeout after the request was sent)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.fail_posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and self.fail_posts > 0:
            self.fail_posts -= 1
            await response.aread()
            raise httpx.ReadTimeout("no answer", request=request)
        return response


@dataclass
class Harness:
    store: Store
    emulator: ExampleCrmEmulator
    integration_id: str
    clock: Clock
    tenant: str = TENANT
    done: set[int] = field(default_factory=set)
    transport: AmbiguousTransport | None = None

    @property
    def scope(self) -> TenantScope:
        return TenantScope(TenantId(self.tenant))

    def adapter(self, _integration: Any = None) -> ExampleCrmAdapter:
        assert self.transport is not None
        return ExampleCrmAdapter().configure(transport=self.transport, clock=self.emulator.clock)

    def inbound(self) -> InboundSync:
        return InboundSync(
            self.store,
            StaticCredentialProvider(self.emulator.credentials),
            adapter_factory=self.adapter,
            clock=self.clock,
        )

    def outbound(self) -> OutboundSync:
        return OutboundSync(
            self.store,
            StaticCredentialProvider(self.emulator.credentials),
            adapter_factory=self.adapter,
            clock=self.clock,
        )

    def shards_service(self) -> ShardService:
        return ShardService(self.store, clock=self.clock)

    def conflicts_service(self) -> ConflictService:
        return ConflictService(self.store, clock=self.clock)

    async def sync(self, sync_type: str = "incremental") -> None:
        job = SyncJob(
            tenant_id=self.tenant,
            integration_id=self.integration_id,
            entity=ENTITY,
            sync_type=sync_type,
            trigger="manual",
        )  # type: ignore[arg-type]
        await self.inbound().run_to_completion(job)

    async def webhook(self, record_id: str) -> None:
        record = self.emulator.store[ENTITY].get(record_id)
        assert record is not None
        request = self.emulator.build_webhook(
            self.emulator.webhook_payload(ENTITY, record, "updated")
        )
        events = ExampleCrmAdapter().parse_webhook(request)
        await self.inbound().apply_webhook_events(self.tenant, self.integration_id, events)

    async def write_back_events(self, *, pending_only: bool = True) -> list[tuple[int, CloudEvent]]:
        async with self.store.transaction() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxRow)
                        .where(OutboxRow.event_type == WRITE_BACK_REQUESTED)
                        .order_by(OutboxRow.id)
                    )
                )
                .scalars()
                .all()
            )
            return [
                (r.id, CloudEvent.from_dict(r.event))
                for r in rows
                if not (pending_only and r.id in self.done)
            ]

    async def run_outbound(self, *, attempt: int = 1) -> list[OutboundOutcome]:
        outcomes = []
        for row_id, event in await self.write_back_events():
            self.done.add(row_id)
            outcomes.append(await self.outbound().handle(event, attempt=attempt))
        return outcomes

    async def shard(self, shard_id: str | None = None) -> ShardRow:
        async with self.store.transaction() as session:
            stmt = select(ShardRow).where(ShardRow.tenant_id == self.tenant)
            if shard_id is not None:
                stmt = stmt.where(ShardRow.id == shard_id)
            return (await session.execute(stmt)).scalars().one()

    async def relationship(self) -> ExternalRelationshipRow:
        async with self.store.transaction() as session:
            stmt = select(ExternalRelationshipRow).where(
                ExternalRelationshipRow.tenant_id == self.tenant
            )
            return (await session.execute(stmt)).scalars().one()

    def writes(self) -> list[Any]:
        """Requests that changed the emulator's records."""
        return [
            r
            for r in self.emulator.requests
            if r.method in {"POST", "PATCH", "DELETE"} and r.status and r.status < 300
        ]

    def external(self, record_id: str = "c1") -> dict[str, Any]:
        record = self.emulator.store[ENTITY].get(record_id)
        assert record is not None
        return record.data


async def make_harness(engine: AsyncEngine, *, tenant: str = TENANT, **overrides: Any) -> Harness:
    store = Store(engine)
    async with store.transaction() as session:
        await ProviderRepository(session, SystemScope("tests")).upsert(
            provider_id="example_crm",
            name="Example CRM",
            category="crm",
            status="active",
            audience="tenant",
            auth_type="oauth2",
            definition={"id": "example_crm"},
        )
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TenantScope(TenantId(tenant)))
        row = await repo.create(
            provider_id="example_crm",
            name="Example - sales",
            instance_id="sales",
            settings=settings(**overrides),
            created_by="user-1",
        )
        await repo.update(row.id, status="active", credential_secret_name="unused")
    emulator = ExampleCrmEmulator()
    harness = Harness(store, emulator, row.id, Clock(), tenant=tenant)
    harness.transport = AmbiguousTransport(emulator.transport())
    return harness


async def imported(engine: AsyncEngine, **overrides: Any) -> Harness:
    """A harness with one contact ``c1`` imported by a full sync."""
    h = await make_harness(engine, **overrides)
    h.emulator.store[ENTITY].create(
        {"name": "Ada", "email": "ada@example.com", "city": "Oslo", "score": 5}, id="c1"
    )
    h.emulator.clock.advance(60)
    await h.sync("full")
    return h
