"""RabbitBus's dedup window: concurrent sends share the store's reads and writes
(``_Merged``) and keep the window's guarantee."""

from __future__ import annotations

import asyncio

import pytest

from castiel_sync.bus import QUEUE_SCHEDULED, OutgoingMessage
from castiel_sync.bus.rabbitmq import RabbitBus, _Merged

TENANT = "tenant-a"


async def test_calls_made_while_one_runs_go_to_the_store_as_one() -> None:
    store_calls: list[list[str]] = []
    release = asyncio.Event()

    async def store_call(ids: list[str]) -> set[str]:
        store_calls.append(list(ids))
        await release.wait()
        return {i for i in ids if i.startswith("old")}

    merged = _Merged(store_call)
    first = asyncio.create_task(merged(["old-1", "new-1"]))
    await asyncio.sleep(0)  # the first store call is running...
    later = [asyncio.create_task(merged([f"old-{i}", f"new-{i}"])) for i in (2, 3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *later)
    assert store_calls == [["old-1", "new-1"], ["old-2", "new-2", "old-3", "new-3"]]
    assert results[0] == {"old-1"}
    assert results[1] == results[2] == {"old-2", "old-3"}
    # Nothing waiting: the next call is a store call of its own.
    assert await merged(["old-4"]) == {"old-4"}
    assert store_calls[-1] == ["old-4"]


async def test_a_failed_store_call_fails_every_caller_that_shared_it() -> None:
    async def store_call(ids: list[str]) -> None:
        raise ConnectionError(f"store down ({len(ids)} ids)")

    merged = _Merged(store_call)
    outcomes = await asyncio.gather(merged(["a"]), merged(["b", "c"]), return_exceptions=True)
    assert [str(o) for o in outcomes] == ["store down (3 ids)"] * 2


@pytest.fixture
def bus(rabbit_bus: RabbitBus) -> RabbitBus:
    return rabbit_bus


async def drain(bus: RabbitBus) -> list[str]:
    ids = []
    while leases := await bus.receive(
        [QUEUE_SCHEDULED], lease_seconds=30, max_messages=50, wait_seconds=0.5
    ):
        ids += [lease.message.id for lease in leases]
        await bus.ack_many(leases)
    return ids


@pytest.mark.rabbitmq
async def test_concurrent_sends_are_each_remembered_for_the_window(bus: RabbitBus) -> None:
    def sends(tag: str) -> list[list[OutgoingMessage]]:
        return [
            [OutgoingMessage(QUEUE_SCHEDULED, {"i": i}, TENANT, message_id=f"{tag}-{i}-{j}")]
            for i in range(10)
            for j in range(3)
        ]

    await asyncio.gather(*(bus.send_many(batch) for batch in sends("m")))
    assert sorted(await drain(bus)) == sorted(f"m-{i}-{j}" for i in range(10) for j in range(3))
    # Every one of them was recorded: sent again, concurrently, none goes out.
    await asyncio.gather(*(bus.send_many(batch) for batch in sends("m")))
    assert await drain(bus) == []


@pytest.mark.rabbitmq
async def test_dedup_false_neither_looks_up_nor_records(bus: RabbitBus) -> None:
    once = [OutgoingMessage(QUEUE_SCHEDULED, {"i": 1}, TENANT, message_id="seen-1")]
    await bus.send_many(once)
    assert await drain(bus) == ["seen-1"]
    await bus.send_many(once, dedup=False)  # in the window, but not looked up: goes out
    assert await drain(bus) == ["seen-1"]
    fresh = [OutgoingMessage(QUEUE_SCHEDULED, {"i": 2}, TENANT, message_id="relayed-1")]
    await bus.send_many(fresh, dedup=False)
    assert await drain(bus) == ["relayed-1"]
    assert await bus._store.seen_ids(["seen-1", "relayed-1"]) == {"seen-1"}  # not recorded
