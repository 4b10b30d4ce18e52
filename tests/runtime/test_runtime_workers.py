"""Workers: retry by error class, dead letter after the delivery limit then replay through
the API, the placeholder seam, sync slots, SIGTERM-style drain, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.api.app import create_app
from castiel_sync.api.auth import mint_token
from castiel_sync.bus import QUEUE_DEADLETTER, QUEUE_SCHEDULED, QUEUE_WEBHOOK, Router
from castiel_sync.bus.sql import SqlBus
from castiel_sync.domain.events import (
    SYNC_REQUESTED,
    WEBHOOK_RECEIVED,
    CloudEvent,
    sync_requested,
    webhook_received,
)
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.runtime.workers import (
    Delivery,
    HandlerRegistry,
    SyncInboundWorker,
    placeholder_registry,
)
from castiel_sync.sdk import PermanentError, RateLimitedError
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import TenantSettingsRepository

JWT = "runtime-test-jwt-secret-" + "x" * 32


@pytest.fixture
async def bus(rt_engine: AsyncEngine) -> AsyncIterator[SqlBus]:
    bus = SqlBus(rt_engine, max_deliveries=3, poll_interval=0.02)
    yield bus
    await bus.close()


async def _send(bus: SqlBus, event: CloudEvent) -> str:
    return await Router(bus).dispatch(event.type, event.to_dict())


def _webhook(tenant: str = "ta", n: int = 0) -> CloudEvent:
    return webhook_received(
        tenant_id=tenant, integration_id=f"i{n}", provider="salesforce", delivery_id=f"d{n}"
    )


async def test_retryable_waits_its_retry_after_permanent_dead_letters_at_once(
    bus: SqlBus, rt_engine: AsyncEngine
) -> None:
    calls: list[tuple[str, int]] = []
    registry = HandlerRegistry()

    @registry.register(WEBHOOK_RECEIVED)
    async def handle(event: CloudEvent, delivery: Delivery) -> None:
        calls.append((event.data["deliveryId"], delivery.delivery_count))
        if event.data["deliveryId"] == "d1":
            raise RateLimitedError(retry_after=3600)
        if event.data["deliveryId"] == "d2":
            raise PermanentError("the record type is not supported")

    for n in range(3):
        await _send(bus, _webhook(n=n))
    worker = SyncInboundWorker(bus, registry, engine=rt_engine)
    await worker.run_until_idle()
    assert sorted(calls) == [("d0", 1), ("d1", 1), ("d2", 1)]
    assert await bus.depth(QUEUE_WEBHOOK) == 1  # d1 waits an hour, not retried now
    (dead,) = await bus.list_dead_letters(SystemScope("test"))
    assert dead.body["data"]["deliveryId"] == "d2"  # type: ignore[index]
    assert dead.last_error == "PermanentError: the record type is not supported"
    assert dead.delivery_count == 1 or dead.delivery_count == bus.max_deliveries


async def test_the_placeholder_seam_never_fakes_success(
    bus: SqlBus, rt_engine: AsyncEngine
) -> None:
    await _send(bus, _webhook())
    await SyncInboundWorker(bus, placeholder_registry(), engine=rt_engine).run_until_idle()
    (dead,) = await bus.list_dead_letters(SystemScope("test"))
    assert "HandlerNotReadyError" in (dead.last_error or "")


async def test_dead_lettered_after_the_delivery_limit_then_replayed_through_the_api(
    bus: SqlBus, rt_engine: AsyncEngine, db_url: str, tmp_path: Path
) -> None:
    healthy = asyncio.Event()
    done: list[str] = []
    registry = HandlerRegistry()

    @registry.register(WEBHOOK_RECEIVED)
    async def flaky(event: CloudEvent, delivery: Delivery) -> None:
        if not healthy.is_set():
            raise RuntimeError("database connection lost")  # unclassified: backoff
        done.append(event.id)

    mine = await _send(bus, _webhook("ta"))
    theirs = await _send(bus, _webhook("tb", 1))
    worker = SyncInboundWorker(bus, registry, engine=rt_engine)
    for _ in range(bus.max_deliveries):
        # Make the backoff's delayed messages visible now instead of waiting.
        async with rt_engine.begin() as conn:
            await conn.exec_driver_sql("UPDATE bus_messages SET visible_at = 0")
        await worker.run_until_idle(idle_rounds=1)
    dead = {m.id: m for m in await bus.list_dead_letters(SystemScope("test"))}
    assert set(dead) == {mine, theirs}
    assert dead[mine].delivery_count == bus.max_deliveries
    assert (dead[mine].last_error or "").startswith("RuntimeError: ")  # detail: server log
    assert "database connection lost" not in (dead[mine].last_error or "")
    assert dead[mine].original_queue == QUEUE_WEBHOOK

    settings = Settings(database_url=db_url, data_dir=tmp_path, jwt_secret=JWT)
    app = create_app(settings, run_migrations=False)
    app.state.bus = bus
    admin_a = _admin(settings, "ta")
    admin_b = _admin(settings, "tb")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            listed = (await client.get("/dead-letters", headers=admin_a)).json()
            assert [d["id"] for d in listed] == [mine]
            assert listed[0]["queue"] == QUEUE_WEBHOOK and listed[0]["deliveryCount"] == 3
            shown = await client.get(f"/dead-letters/{mine}", headers=admin_a)
            assert shown.json()["event"]["type"] == WEBHOOK_RECEIVED
            # Tenant B cannot see, replay or purge A's dead letter.
            for method, path in (
                ("GET", f"/dead-letters/{mine}"),
                ("POST", f"/dead-letters/{mine}/replay"),
                ("DELETE", f"/dead-letters/{mine}"),
            ):
                response = await client.request(method, path, headers=admin_b)
                assert response.status_code == 404, (method, path)
            assert mine not in (await client.get("/dead-letters", headers=admin_b)).text

            healthy.set()
            replayed = await client.post(f"/dead-letters/{mine}/replay", headers=admin_a)
            assert replayed.status_code == 202
            await worker.run_until_idle()
            assert done == [mine]
            assert (await client.get("/dead-letters", headers=admin_a)).json() == []
            purged = await client.delete(f"/dead-letters/{theirs}", headers=admin_b)
            assert purged.status_code == 204
    assert await bus.depth(QUEUE_DEADLETTER) == 0 and await bus.depth(QUEUE_WEBHOOK) == 0


async def test_sync_jobs_wait_for_a_slot_and_are_never_dropped(
    bus: SqlBus, rt_engine: AsyncEngine
) -> None:
    async with Store(rt_engine).transaction() as session:
        await TenantSettingsRepository(session, TenantScope(TenantId("ta"))).set_limits(
            max_concurrent_syncs=1
        )
    running = 0
    peak = 0
    finished: list[str] = []
    release = asyncio.Event()
    registry = HandlerRegistry()

    @registry.register(SYNC_REQUESTED)
    async def job(event: CloudEvent, delivery: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        finished.append(event.id)

    ids = [
        await _send(bus, sync_requested(tenant_id="ta", integration_id=f"i{n}")) for n in range(3)
    ]
    worker = SyncInboundWorker(bus, registry, engine=rt_engine, capacity_retry=0.0, concurrency=3)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(1.0)
    assert running == 1  # one slot: the others were deferred, not run
    release.set()
    for _ in range(200):
        if len(finished) == 3:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert peak == 1 and sorted(finished) == sorted(ids)
    assert await bus.depth(QUEUE_SCHEDULED) == 0


async def test_stop_drains_in_flight_work_and_hands_back_what_cannot_finish(
    bus: SqlBus, rt_engine: AsyncEngine
) -> None:
    started = asyncio.Event()
    finished: list[str] = []
    registry = HandlerRegistry()

    @registry.register(WEBHOOK_RECEIVED)
    async def slow(event: CloudEvent, delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(0.3 if event.data["deliveryId"] == "d0" else 3600)
        finished.append(event.id)

    quick = await _send(bus, _webhook(n=0))
    stuck = await _send(bus, _webhook(n=1))
    worker = SyncInboundWorker(bus, registry, engine=rt_engine, drain_timeout=1.0, concurrency=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await started.wait()
    await asyncio.sleep(0.05)
    stop.set()  # what SIGTERM does
    await task
    assert finished == [quick]  # in flight and short enough: finished and acked
    leases = await bus.receive([QUEUE_WEBHOOK], lease_seconds=5)
    assert [lease.message.id for lease in leases] == [stuck]  # handed back, not lost


async def test_metrics_expose_the_series(
    bus: SqlBus, rt_engine: AsyncEngine, tmp_path: Path, db_url: str
) -> None:
    registry = HandlerRegistry({WEBHOOK_RECEIVED: _ok})
    await _send(bus, _webhook())
    await SyncInboundWorker(bus, registry, engine=rt_engine).run_until_idle()
    await _send(bus, _webhook(n=2))
    app = create_app(
        Settings(database_url=db_url, data_dir=tmp_path, jwt_secret=JWT), run_migrations=False
    )
    app.state.bus = bus
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            text = (await client.get("/metrics")).text
    assert 'castiel_queue_depth{queue="sync-inbound-webhook"} 1.0' in text
    assert 'castiel_queue_oldest_message_age_seconds{queue="sync-inbound-webhook"}' in text
    assert "castiel_message_processing_seconds_bucket" in text
    assert 'castiel_message_deliveries_total{outcome="ack",queue="sync-inbound-webhook"}' in text
    assert "castiel_dead_letters_total" in text or "# TYPE castiel_dead_letters counter" in text


async def _ok(event: CloudEvent, delivery: Delivery) -> None:
    return None


def _admin(settings: Settings, tenant: str) -> dict[str, str]:
    token = mint_token(settings, tenant_id=tenant, role="tenant_admin", user_id="u" + tenant)
    return {"Authorization": f"Bearer {token}"}
