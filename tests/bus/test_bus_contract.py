"""One contract for every bus backend: SQLite, PostgreSQL and RabbitMQ, real servers."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import (
    QUEUE_OUTBOUND,
    QUEUE_SCHEDULED,
    QUEUE_WEBHOOK,
    Bus,
    OutboxRelay,
    Router,
    UnknownQueueError,
    publish,
)
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store.base import create_engine, session_factory
from castiel_sync.store.schema import create_all, metadata
from castiel_sync.store.tables import OutboxRow

MAX_DELIVERIES = 3
TENANT = "tenant-a"


@dataclass
class Case:
    bus: Bus
    engine: AsyncEngine  # the store: outbox (and, embedded, the queues)
    backend: str


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backend, server URL); resolved outside the event loop (the PG fixture is sync)."""
    if request.param == "postgres":
        return "postgres", request.getfixturevalue("postgres_database")
    if request.param == "rabbitmq":
        return "rabbitmq", request.getfixturevalue("amqp_url")
    return "sqlite", ""


@pytest.fixture
async def case(target: tuple[str, str], tmp_path: Path) -> AsyncIterator[Case]:
    backend, url = target
    if backend == "postgres":
        engine = create_engine(url)
        tables = ", ".join(f'"{t.name}"' for t in metadata().sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    else:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
        await create_all(engine)
    bus: Bus
    if backend == "rabbitmq":
        from castiel_sync.bus.rabbitmq import RabbitBus

        bus = RabbitBus(
            url,
            engine,
            max_deliveries=MAX_DELIVERIES,
            namespace=f"test-{secrets.token_hex(4)}.",
        )
    else:
        from castiel_sync.bus.sql import SqlBus

        bus = SqlBus(engine, max_deliveries=MAX_DELIVERIES, poll_interval=0.05)
    await bus.start()
    try:
        yield Case(bus, engine, backend)
    finally:
        delete_topology = getattr(bus, "delete_topology", None)
        if delete_topology is not None:
            await delete_topology()
        await bus.close()
        await engine.dispose()


async def drain(bus: Bus, queues: list[str], *, wait: float = 0.3) -> list[str]:
    """Receive and ack until nothing more arrives; the ids in delivery order."""
    seen: list[str] = []
    while leases := await bus.receive(queues, lease_seconds=30, max_messages=10, wait_seconds=wait):
        for lease in leases:
            seen.append(lease.message.id)
            assert await bus.ack(lease)
    return seen


async def test_send_receive_ack(case: Case) -> None:
    bus = case.bus
    mid = await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT)
    await bus.send(QUEUE_WEBHOOK, b"\x00raw", tenant_id=TENANT)
    assert await bus.depth(QUEUE_SCHEDULED) == 1
    [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=5)
    m = lease.message
    assert (m.id, m.queue, m.body, m.tenant_id, m.delivery_count) == (
        mid,
        QUEUE_SCHEDULED,
        {"n": 1},
        TENANT,
        1,
    )
    assert m.enqueued_at is not None
    assert await bus.ack(lease)
    assert await bus.depth(QUEUE_SCHEDULED) == 0
    assert await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=0.2) == []
    [raw] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=5)
    assert raw.message.body == b"\x00raw"
    assert await bus.ack(raw)
    assert await bus.oldest_age(QUEUE_WEBHOOK) == 0


async def test_concurrent_acks_settle_exactly_their_own_messages(case: Case) -> None:
    """Acks from concurrent handlers are batched by the backends (one DELETE, one
    multiple ack): each still reports its own outcome, and a message still held, or lost,
    is never settled along with the others."""
    bus = case.bus
    for i in range(8):
        await bus.send(QUEUE_WEBHOOK, {"n": i}, tenant_id=TENANT)
    leases: list = []  # type: ignore[type-arg]
    while len(leases) < 8:
        leases += await bus.receive(
            [QUEUE_WEBHOOK], lease_seconds=2, max_messages=8 - len(leases), wait_seconds=5
        )
    held, lost = leases[2], leases[5]
    assert await bus.nack(lost)  # its lease is gone: acking it now must fail
    outcomes = await asyncio.gather(*(bus.ack(x) for x in leases if x is not held))
    assert outcomes == [x is not lost for x in leases if x is not held]
    back = await drain(bus, [QUEUE_WEBHOOK])
    assert back == [lost.message.id]  # the held one is not visible while leased
    # Never acked, its lease runs out and it comes back (had a batched ack covered it,
    # it would be gone).
    [again] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=10)
    assert (again.message.id, again.message.delivery_count) == (held.message.id, 2)
    assert await bus.ack(again)
    assert await drain(bus, [QUEUE_WEBHOOK]) == []


async def test_depth_and_oldest_age(case: Case) -> None:
    bus = case.bus
    for i in range(3):
        await bus.send(QUEUE_SCHEDULED, {"i": i}, tenant_id=TENANT)
    await asyncio.sleep(0.2)
    assert await bus.depth(QUEUE_SCHEDULED) == 3
    # RabbitMQ learns a message's age only by delivering it: measure while one is held.
    [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=5)
    assert await bus.depth(QUEUE_SCHEDULED) == 3
    assert await bus.oldest_age(QUEUE_SCHEDULED) > 0
    assert await bus.ack(lease)
    assert len(await drain(bus, [QUEUE_SCHEDULED])) == 2
    assert await bus.depth(QUEUE_SCHEDULED) == 0


async def test_expired_lease_redelivers_with_higher_count(case: Case) -> None:
    bus = case.bus
    mid = await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT)
    [first] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=0.5, wait_seconds=5)
    [again] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=10)
    assert again.message.id == mid
    assert again.message.delivery_count == first.message.delivery_count + 1
    assert not await bus.ack(first)  # the lost lease cannot settle it
    assert await bus.ack(again)
    assert await bus.depth(QUEUE_SCHEDULED) == 0


async def test_nack_with_delay_is_invisible_until_due(case: Case) -> None:
    bus = case.bus
    await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT)
    [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=5)
    nacked_at = time.monotonic()
    assert await bus.nack(lease, delay_seconds=1.5, error="HTTP 503")
    assert await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=0.5) == []
    [retry] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=10)
    assert time.monotonic() - nacked_at >= 1.4
    assert retry.message.delivery_count == 2
    assert retry.message.last_error == "HTTP 503"
    assert await bus.ack(retry)


async def test_not_before_delays_first_delivery(case: Case) -> None:
    bus = case.bus
    due = datetime.now(UTC) + timedelta(seconds=1)
    await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT, not_before=due)
    assert await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=0.3) == []
    [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=10)
    assert datetime.now(UTC) >= due
    assert lease.message.delivery_count == 1
    assert await bus.ack(lease)


async def test_delivery_limit_dead_letters_then_replay(case: Case) -> None:
    bus = case.bus
    mid = await bus.send(QUEUE_WEBHOOK, {"n": 1}, tenant_id=TENANT)
    other = await bus.send(QUEUE_WEBHOOK, {"n": 2}, tenant_id="tenant-b")
    for _ in range(MAX_DELIVERIES):
        leases: list = []
        while len(leases) < 2:
            got = await bus.receive(
                [QUEUE_WEBHOOK], lease_seconds=30, max_messages=2, wait_seconds=5
            )
            assert got
            leases += got
        assert {x.message.id for x in leases} == {mid, other}
        for lease in leases:
            assert await bus.nack(lease, error=f"boom {lease.message.delivery_count}")
    assert await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=0.3) == []

    mine = await bus.list_dead_letters(TenantScope(TenantId(TENANT)))
    assert [m.id for m in mine] == [mid]
    assert mine[0].last_error == f"boom {MAX_DELIVERIES}"
    assert mine[0].original_queue == QUEUE_WEBHOOK
    assert mine[0].body == {"n": 1}
    everyone = await bus.list_dead_letters(SystemScope("test"))
    assert {m.id for m in everyone} == {mid, other}

    # A tenant cannot replay another tenant's dead letters.
    assert await bus.replay(TenantScope(TenantId(TENANT)), [other]) == 0
    assert await bus.replay(TenantScope(TenantId(TENANT)), [mid]) == 1
    [lease] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=5)
    assert (lease.message.id, lease.message.delivery_count) == (mid, 1)
    assert await bus.ack(lease)
    assert [m.id for m in await bus.list_dead_letters(SystemScope("test"))] == [other]


async def test_expired_leases_count_toward_the_limit(case: Case) -> None:
    bus = case.bus
    mid = await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT)
    for _ in range(MAX_DELIVERIES):
        [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=0.3, wait_seconds=10)
        assert lease.message.id == mid
    # The last lease runs out: no more deliveries, the message is a dead letter.
    assert await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=1.5) == []
    [dead] = await bus.list_dead_letters(TenantScope(TenantId(TENANT)))
    assert dead.id == mid
    assert dead.original_queue == QUEUE_SCHEDULED
    assert dead.last_error


async def test_purge_dead_letters(case: Case) -> None:
    bus = case.bus
    mid = await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT)
    for _ in range(MAX_DELIVERIES):
        [lease] = await bus.receive([QUEUE_SCHEDULED], lease_seconds=30, wait_seconds=5)
        await bus.nack(lease, error="bad")
    scope = TenantScope(TenantId(TENANT))
    assert [m.id for m in await bus.list_dead_letters(scope)] == [mid]
    assert await bus.purge(TenantScope(TenantId("tenant-b")), [mid]) == 0
    assert await bus.purge(scope, [mid]) == 1
    assert await bus.list_dead_letters(scope) == []
    assert await bus.replay(scope, [mid]) == 0


async def test_webhook_served_before_scheduled(case: Case) -> None:
    bus = case.bus
    scheduled = [await bus.send(QUEUE_SCHEDULED, {"i": i}, tenant_id=TENANT) for i in range(3)]
    hooks = [await bus.send(QUEUE_WEBHOOK, {"i": i}, tenant_id=TENANT) for i in range(3)]
    await asyncio.sleep(0.3)  # let every backend see all six
    order = []
    for _ in range(6):
        [lease] = await bus.receive(
            [QUEUE_SCHEDULED, QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=5
        )
        order.append(lease.message.id)
        assert await bus.ack(lease)
    assert order == hooks + scheduled


async def test_higher_priority_first_within_a_queue(case: Case) -> None:
    bus = case.bus
    low = await bus.send(QUEUE_SCHEDULED, {"p": 0}, tenant_id=TENANT)
    high = await bus.send(QUEUE_SCHEDULED, {"p": 5}, tenant_id=TENANT, priority=5)
    await asyncio.sleep(0.3)
    assert await drain(bus, [QUEUE_SCHEDULED]) == [high, low]


async def test_sessions_fifo_and_one_in_flight_per_key(case: Case) -> None:
    bus = case.bus
    sent: dict[str, list[str]] = {"int-a": [], "int-b": [], "int-c": []}
    for i in range(5):
        for key, ids in sent.items():
            ids.append(await bus.send(QUEUE_OUTBOUND, {"i": i}, tenant_id=TENANT, session_key=key))
    processed: dict[str, list[str]] = {key: [] for key in sent}
    in_flight: set[str] = set()
    total = sum(len(v) for v in sent.values())

    async def consumer() -> None:
        while sum(len(v) for v in processed.values()) < total:
            leases = await bus.receive(
                [QUEUE_OUTBOUND], lease_seconds=30, max_messages=2, wait_seconds=0.5
            )
            for lease in leases:
                key = lease.message.session_key
                assert key is not None
                assert key not in in_flight, "two messages of one session in flight"
                in_flight.add(key)
            await asyncio.sleep(0.01)
            for lease in leases:
                key = lease.message.session_key
                assert key is not None
                processed[key].append(lease.message.id)
                in_flight.discard(key)
                assert await bus.ack(lease)

    await asyncio.wait_for(asyncio.gather(consumer(), consumer()), 30)
    assert processed == sent


async def test_session_retry_keeps_order(case: Case) -> None:
    bus = case.bus
    first = await bus.send(QUEUE_OUTBOUND, {"i": 1}, tenant_id=TENANT, session_key="k")
    second = await bus.send(QUEUE_OUTBOUND, {"i": 2}, tenant_id=TENANT, session_key="k")
    [lease] = await bus.receive([QUEUE_OUTBOUND], lease_seconds=30, wait_seconds=5)
    assert lease.message.id == first
    assert await bus.nack(lease, delay_seconds=0.5, error="429")
    # The second write waits behind the first one's retry.
    assert await bus.receive([QUEUE_OUTBOUND], lease_seconds=30, wait_seconds=0.2) == []
    assert await drain(bus, [QUEUE_OUTBOUND], wait=3) == [first, second]


async def test_send_is_idempotent_by_message_id(case: Case) -> None:
    bus = case.bus
    mid = f"evt-{uuid.uuid4()}"
    assert await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT, message_id=mid) == mid
    await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT, message_id=mid)
    assert await drain(bus, [QUEUE_SCHEDULED]) == [mid]
    # Still a repeat after the first copy was processed (within the dedup window).
    await bus.send(QUEUE_SCHEDULED, {"n": 1}, tenant_id=TENANT, message_id=mid)
    assert await drain(bus, [QUEUE_SCHEDULED]) == []


def _event(event_type: str, tenant: str = TENANT) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/castiel-sync/test",
        "type": event_type,
        "time": "2024-01-01T00:00:00Z",
        "data": {"tenantId": tenant, "integrationId": "int-1"},
    }


async def test_outbox_commits_with_the_change_and_relays(case: Case) -> None:
    sessions = session_factory(case.engine)
    kept = _event("Castiel.Integration.WriteBackRequested")
    async with sessions.begin() as session:
        publish(session, kept)
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:
            publish(session, _event("Castiel.Integration.SyncRequested"))
            raise RuntimeError("business change failed")
    relay = OutboxRelay(case.engine, Router(case.bus))
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    leases = await case.bus.receive(
        [QUEUE_OUTBOUND, QUEUE_SCHEDULED], lease_seconds=30, max_messages=5, wait_seconds=5
    )
    assert [x.message.id for x in leases] == [kept["id"]]
    assert leases[0].message.body == kept
    assert leases[0].message.session_key == "int-1"
    assert await case.bus.ack(leases[0])
    assert await drain(case.bus, [QUEUE_OUTBOUND, QUEUE_SCHEDULED]) == []


async def test_relay_crash_between_send_and_mark(case: Case) -> None:
    sessions = session_factory(case.engine)
    events = [_event("Castiel.Integration.SyncScheduled") for _ in range(3)]
    async with sessions.begin() as session:
        for e in events:
            publish(session, e)

    class CrashingRelay(OutboxRelay):
        async def _mark(self, conn: object, ids: list[int]) -> None:
            raise ConnectionError("relay died after the send")

        # The embedded bus on the store's SQLite file sends and marks in one transaction:
        # a failing mark takes the send with it.
        @staticmethod
        def _mark_sync(conn: object, ids: list[int]) -> None:
            raise ConnectionError("relay died after the send")

    with pytest.raises(ConnectionError):
        await CrashingRelay(case.engine, Router(case.bus)).run_once()
    async with case.engine.connect() as conn:
        unrelayed = await conn.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.relayed_at.is_(None))
        )
    assert unrelayed == 3  # nothing marked: the rows go out again
    assert await OutboxRelay(case.engine, Router(case.bus)).run_once() == 3

    # A consumer recording its effect by message id: exactly one effect per event,
    # whatever copies the re-send produced.
    effects: set[str] = set()
    deliveries = await drain(case.bus, [QUEUE_SCHEDULED])
    effects.update(deliveries)
    assert effects == {str(e["id"]) for e in events}
    assert len(deliveries) >= 3


async def test_unknown_queue_is_refused(case: Case) -> None:
    with pytest.raises(UnknownQueueError):
        await case.bus.send("nope", {}, tenant_id=TENANT)


async def test_relay_passes_over_events_without_a_sync_queue(engine) -> None:  # type: ignore[no-untyped-def]
    """Shard events and alerts have no sync queue; the relay must not stall on them."""
    from castiel_sync.bus.outbox import OutboxRelay, publish
    from castiel_sync.bus.router import Router
    from castiel_sync.bus.sql import SqlBus
    from castiel_sync.domain import events
    from castiel_sync.store.base import session_factory

    bus = SqlBus(engine)
    await bus.start()
    try:
        shard_event = events.shard_updated(
            tenant_id="t1", shard_id="s1", shard_type="c_company", version=2
        )
        sync_event = events.sync_requested(tenant_id="t1", integration_id="i1")
        async with session_factory(engine)() as session, session.begin():
            publish(session, shard_event)
            publish(session, sync_event)
        relay = OutboxRelay(engine, Router(bus))
        assert await relay.run_once() == 2
        assert await relay.run_once() == 0
        leases = await bus.receive(
            [events.QUEUE_INBOUND_SCHEDULED], lease_seconds=30, max_messages=5
        )
        assert [lease.message.id for lease in leases] == [sync_event.id]
        assert all(lease.message.queue == events.QUEUE_INBOUND_SCHEDULED for lease in leases)
    finally:
        await bus.close()
