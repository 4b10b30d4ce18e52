"""RabbitBus publishes a batch in one write and settles its confirms itself (on aiormq's
channel internals): pinned here against the real broker, so an aiormq that changes them
fails these tests instead of losing or hanging confirms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiormq
import pytest

from castiel_sync.bus import QUEUE_WEBHOOK, OutgoingMessage
from castiel_sync.bus.rabbitmq import RabbitBus

pytestmark = pytest.mark.rabbitmq
TENANT = "tenant-a"


@pytest.fixture
def bus(rabbit_bus: RabbitBus) -> RabbitBus:
    return rabbit_bus


@pytest.fixture
async def raw(amqp_url: str) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    """A channel on a connection of its own, to look at the queues as the broker has them."""
    connection = await aiormq.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def take_all(
    channel: aiormq.abc.AbstractChannel, queue: str
) -> list[aiormq.abc.DeliveredMessage]:
    taken = []
    while True:
        got = await channel.basic_get(queue, no_ack=True)
        if got.delivery_tag is None:  # Basic.GetEmpty
            return taken
        taken.append(got)


async def test_concurrent_batches_are_confirmed_and_stored_persistent_in_order(
    bus: RabbitBus, raw: aiormq.abc.AbstractChannel
) -> None:
    batches = [
        [
            OutgoingMessage(QUEUE_WEBHOOK, {"b": b, "i": i}, TENANT, message_id=f"m-{b}-{i}")
            for i in range(150)
        ]
        for b in range(4)
    ]
    sent = await asyncio.wait_for(asyncio.gather(*(bus.send_many(batch) for batch in batches)), 30)
    assert sent == [[m.message_id for m in batch] for batch in batches]

    stored = await take_all(raw, f"{bus.ns}{QUEUE_WEBHOOK}")
    assert sorted(m.header.properties.message_id or "" for m in stored) == sorted(
        m.message_id or "" for batch in batches for m in batch
    )
    for b in range(4):  # each batch in the order it was sent
        ids = [m.header.properties.message_id for m in stored]
        mine = [i for i in ids if i and i.startswith(f"m-{b}-")]
        assert mine == [f"m-{b}-{i}" for i in range(150)]
    first = stored[0].header.properties
    assert first.delivery_mode == 2  # persistent
    assert first.content_type == "application/json"
    assert first.headers is not None
    assert first.headers["castiel-tenant"] == TENANT
    assert first.headers["castiel-target"] == f"{bus.ns}{QUEUE_WEBHOOK}"


async def test_a_broker_nack_fails_the_send_and_later_confirms_still_match(
    bus: RabbitBus, raw: aiormq.abc.AbstractChannel
) -> None:
    """A full queue with reject-publish nacks: that send raises; the channel's confirm
    bookkeeping stays in step, so the next batch is confirmed (not hung, not misread)."""
    full = f"{bus.ns}test-full"
    await raw.queue_declare(
        full,
        durable=True,
        # A classic queue applies its length limit exactly, message by message.
        arguments={"x-queue-type": "classic", "x-max-length": 1, "x-overflow": "reject-publish"},
    )
    try:

        def message(i: int) -> tuple[str, str, object]:
            return (
                "",
                full,
                bus._amqp(
                    QUEUE_WEBHOOK, {"i": i}, tenant_id=TENANT, message_id=f"full-{i}", target=full
                ),
            )

        with pytest.raises(aiormq.exceptions.DeliveryError):
            await asyncio.wait_for(bus._publish_all([message(i) for i in range(3)]), 30)
        assert [m.header.properties.message_id for m in await take_all(raw, full)] == ["full-0"]

        ids = await asyncio.wait_for(
            bus.send_many([OutgoingMessage(QUEUE_WEBHOOK, {"i": i}, TENANT) for i in range(20)]),
            30,
        )
        stored = await take_all(raw, f"{bus.ns}{QUEUE_WEBHOOK}")
        assert [m.header.properties.message_id for m in stored] == ids
    finally:
        await raw.queue_delete(full)


async def test_an_unroutable_message_is_returned_without_hanging_the_batch(
    bus: RabbitBus, raw: aiormq.abc.AbstractChannel
) -> None:
    nowhere = f"{bus.ns}no-such-queue"
    batch = [
        (
            "",
            nowhere,
            bus._amqp(QUEUE_WEBHOOK, {"i": 0}, tenant_id=TENANT, message_id="lost", target=nowhere),
        ),
        (
            "",
            f"{bus.ns}{QUEUE_WEBHOOK}",
            bus._amqp(
                QUEUE_WEBHOOK,
                {"i": 1},
                tenant_id=TENANT,
                message_id="kept",
                target=f"{bus.ns}{QUEUE_WEBHOOK}",
            ),
        ),
    ]
    await asyncio.wait_for(bus._publish_all(batch), 30)
    stored = await take_all(raw, f"{bus.ns}{QUEUE_WEBHOOK}")
    assert [m.header.properties.message_id for m in stored] == ["kept"]
