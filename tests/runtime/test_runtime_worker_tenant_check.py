"""A message whose tenant is not its event's ``data.tenantId`` is a poison message: the
handler never sees it and it is dead-lettered at once, with a clear reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import QUEUE_WEBHOOK
from castiel_sync.bus.sql import SqlBus
from castiel_sync.domain.events import WEBHOOK_RECEIVED, CloudEvent, webhook_received
from castiel_sync.domain.tenancy import SystemScope
from castiel_sync.runtime.workers import Delivery, HandlerRegistry, SyncInboundWorker


@pytest.fixture
async def bus(rt_engine: AsyncEngine) -> AsyncIterator[SqlBus]:
    bus = SqlBus(rt_engine, max_deliveries=3, poll_interval=0.02)
    yield bus
    await bus.close()


async def test_a_message_for_another_tenant_than_its_event_is_dead_lettered_at_once(
    bus: SqlBus, rt_engine: AsyncEngine
) -> None:
    seen: list[str] = []
    registry = HandlerRegistry()

    @registry.register(WEBHOOK_RECEIVED)
    async def handle(event: CloudEvent, delivery: Delivery) -> None:
        seen.append(event.data["deliveryId"])

    forged = webhook_received(
        tenant_id="victim", integration_id="i1", provider="hubspot", delivery_id="d-forged"
    )
    honest = webhook_received(
        tenant_id="ta", integration_id="i2", provider="hubspot", delivery_id="d-honest"
    )
    await bus.send(
        QUEUE_WEBHOOK, forged.to_dict(), tenant_id="ta", event_type=WEBHOOK_RECEIVED
    )  # the message says tenant "ta", its event names another tenant
    await bus.send(QUEUE_WEBHOOK, honest.to_dict(), tenant_id="ta", event_type=WEBHOOK_RECEIVED)

    await SyncInboundWorker(bus, registry, engine=rt_engine).run_until_idle()

    assert seen == ["d-honest"]
    assert await bus.depth(QUEUE_WEBHOOK) == 0
    (dead,) = await bus.list_dead_letters(SystemScope("test"))
    assert dead.body["data"]["deliveryId"] == "d-forged"  # type: ignore[index]
    assert dead.delivery_count == 1  # at once, not after the delivery limit
    assert "tenant" in (dead.last_error or "") and "does not match" in (dead.last_error or "")
    assert "victim" not in (dead.last_error or "")  # the reason names no other tenant
