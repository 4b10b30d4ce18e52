"""A webhook delivery is applied once: the delivery is marked processed in the transaction
of the apply, so a redelivery after a crash between the apply and the bus's ack is a
no-op; and the stored delivery, not the event, names the tenant and the integration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import load_catalog
from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.events import WEBHOOK_RECEIVED, webhook_received
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.runtime.engine import engine_registry
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository, ProviderRepository
from castiel_sync.store.tables import ShardRow, SyncExecutionRow, WebhookDeliveryRow
from castiel_sync.sync import InboundSync
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator
from castiel_sync.vault import open_vault

TENANT = "tenant-w"
SETTINGS = IntegrationSettings.model_validate(
    {
        "syncEnabled": True,
        "syncFrequency": {"kind": "interval", "minutes": 15},
        "entityMappings": [
            {
                "entity": "contacts",
                "shardType": "c_contact",
                "direction": "inbound",
                "fieldMappings": [{"external": "name", "castiel": "name"}],
            }
        ],
        "allowedShardTypes": ["c_contact"],
    }
)


class Crash(BaseException):
    """The worker process dies here (not an error any handler would catch)."""


async def _integration(store: Store, instance: str) -> str:
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TenantScope(TenantId(TENANT)))
        row = await repo.create(
            provider_id="example_crm", name=instance, instance_id=instance, settings=SETTINGS,
            created_by="test",
        )  # fmt: skip
        await repo.update(row.id, status="active", credential_secret_name="unused")
        return row.id


async def _setup(engine: AsyncEngine) -> tuple[Store, str, str, str]:
    """Two integrations of one tenant and a stored delivery of the first."""
    store = Store(engine)
    async with store.transaction() as session:
        await ProviderRepository(session, SystemScope("tests")).upsert(
            provider_id="example_crm", name="Example CRM", category="crm", status="active",
            audience="tenant", auth_type="oauth2", definition={"id": "example_crm"},
        )  # fmt: skip
    first, second = await _integration(store, "a"), await _integration(store, "b")
    emulator = ExampleCrmEmulator()
    record = emulator.store["contacts"].create({"name": "Ada"}, id="c1")
    request = emulator.build_webhook(emulator.webhook_payload("contacts", record, "created"))
    async with store.transaction() as session:
        row = WebhookDeliveryRow(
            tenant_id=TENANT,
            integration_id=first,
            headers={"_method": "POST", "_url": str(request.url), **dict(request.headers)},
            body=request.body,
            body_sha256="0" * 64,
            status="received",
        )
        session.add(row)
        await session.flush()
        delivery_id = row.id
    return store, first, second, delivery_id


def _handler(engine: AsyncEngine, tmp_path: Path) -> Any:
    settings = Settings(data_dir=tmp_path)
    registry = engine_registry(
        engine,
        open_vault(settings, engine),
        load_catalog(),
        settings,
        adapter_factory=lambda integration: ExampleCrmAdapter(),
    )
    return registry.get(WEBHOOK_RECEIVED)


async def _state(engine: AsyncEngine) -> tuple[list[tuple[str, int]], list[str], str]:
    async with engine.connect() as conn:
        shards = (await conn.execute(select(ShardRow.id, ShardRow.version))).all()
        runs = (await conn.execute(select(SyncExecutionRow.integration_id))).scalars().all()
        status = (await conn.execute(select(WebhookDeliveryRow.status))).scalar_one()
    return [tuple(s) for s in shards], list(runs), status  # type: ignore[misc]


async def test_a_redelivery_after_a_crash_between_apply_and_ack_applies_nothing(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store, first, _second, delivery_id = await _setup(engine)
    handler = _handler(engine, tmp_path)
    event = webhook_received(
        tenant_id=TENANT, integration_id=first, provider="example_crm", delivery_id=delivery_id
    )
    apply = InboundSync.apply_webhook_events

    async def apply_then_crash(self: InboundSync, *args: Any, **kwargs: Any) -> Any:
        await apply(self, *args, **kwargs)
        raise Crash  # the apply committed; the process dies before anything else happens

    monkeypatch.setattr(InboundSync, "apply_webhook_events", apply_then_crash)
    with pytest.raises(Crash):
        await handler(event, None)
    monkeypatch.undo()
    shards, runs, _status = await _state(engine)
    assert len(shards) == 1 and runs == [first]

    await handler(event, None)  # the bus redelivers the unacknowledged message
    await handler(event, None)  # and a duplicate once more
    assert await _state(engine) == (shards, [first], "processed")
    assert shards[0][1] == 1  # no version bump


async def test_the_stored_delivery_names_the_integration_not_the_event(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    _store, first, second, delivery_id = await _setup(engine)
    handler = _handler(engine, tmp_path)
    event = webhook_received(
        tenant_id=TENANT, integration_id=second, provider="example_crm", delivery_id=delivery_id
    )
    await handler(event, None)
    shards, runs, status = await _state(engine)
    assert runs == [first] and status == "processed" and len(shards) == 1
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                select(func.count())
                .select_from(SyncExecutionRow)
                .where(SyncExecutionRow.integration_id == second)
            )
        ).scalar_one()
    assert count == 0
