"""The embedded bus's SQLite writer thread: group commit keeps operations independent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from castiel_sync.bus import QUEUE_WEBHOOK
from castiel_sync.bus.sql import SqlBus
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all


async def test_a_failing_operation_in_a_group_commit_leaves_the_others(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await create_all(engine)
    bus = SqlBus(engine)
    writer = bus._writer
    assert writer is not None
    await writer.write(lambda conn: conn.execute(text("CREATE TABLE probe (n INTEGER)")))

    def slow(conn: Connection) -> None:  # holds the thread so the others queue up
        time.sleep(0.3)

    def insert(conn: Connection, n: int) -> int:
        conn.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
        return n

    def fail(conn: Connection) -> Any:
        conn.execute(text("INSERT INTO probe (n) VALUES (99)"))
        raise RuntimeError("this one fails")

    first = asyncio.create_task(writer.write(slow))
    await asyncio.sleep(0.05)
    results = await asyncio.gather(
        writer.write(insert, 1),
        writer.write(fail),
        writer.write(insert, 2),
        bus.send(QUEUE_WEBHOOK, {"n": 3}, tenant_id="t"),
        return_exceptions=True,
    )
    await first
    assert results[0] == 1 and results[2] == 2 and isinstance(results[3], str)
    assert isinstance(results[1], RuntimeError)
    rows = await writer.read(lambda conn: conn.execute(text("SELECT n FROM probe")).scalars().all())
    assert sorted(rows) == [1, 2]  # the failed one's insert is gone, the others kept
    assert await bus.depth(QUEUE_WEBHOOK) == 1
    await bus.close()
    await engine.dispose()


async def test_closed_bus_refuses_then_reopens(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await create_all(engine)
    bus = SqlBus(engine)
    await bus.send(QUEUE_WEBHOOK, {"n": 1}, tenant_id="t")
    await bus.close()
    # close() stops the thread; the bus starts a fresh one when used again.
    [lease] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=1)
    assert await bus.ack(lease)
    await bus.close()
    await engine.dispose()


@pytest.mark.parametrize("url", ["sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"])
async def test_in_memory_sqlite_uses_the_engine_connection(url: str) -> None:
    engine = create_engine(url)
    bus = SqlBus(engine)
    assert bus._writer is None  # a second connection would see another database
    await engine.dispose()


async def test_a_commit_wakes_the_relay_before_its_poll(tmp_path: Path) -> None:
    from castiel_sync.bus import OutboxRelay, Router, publish
    from castiel_sync.store.base import session_factory

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    await create_all(engine)
    bus = SqlBus(engine)
    stop = asyncio.Event()
    relay = asyncio.create_task(
        OutboxRelay(engine, Router(bus), poll_interval=3600).run_forever(stop)
    )
    await asyncio.sleep(0.1)  # its first (empty) pass is done: now it waits an hour
    event = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/test",
        "type": "Castiel.Integration.WebhookReceived",
        "data": {"tenantId": "t", "integrationId": "i"},
    }
    async with session_factory(engine).begin() as session:
        publish(session, event)
    [lease] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30, wait_seconds=10)
    assert lease.message.id == "evt-1"
    stop.set()
    await relay
    await bus.close()
    await engine.dispose()


async def test_writer_waits_for_another_connections_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import castiel_sync.bus.sql as bus_sql

    path = tmp_path / "bus.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await create_all(engine)
    bus = SqlBus(engine)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock
    send = asyncio.create_task(bus.send(QUEUE_WEBHOOK, {"n": 1}, tenant_id="t"))
    await asyncio.sleep(0.2)
    assert not send.done()  # waiting for the lock, not failed
    other.execute("COMMIT")
    assert isinstance(await send, str)
    assert await bus.depth(QUEUE_WEBHOOK) == 1

    monkeypatch.setattr(bus_sql, "_BUSY_TIMEOUT", 0.2)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await bus.send(QUEUE_WEBHOOK, {"n": 2}, tenant_id="t")
    other.execute("ROLLBACK")
    other.close()
    assert await bus.depth(QUEUE_WEBHOOK) == 1  # the refused send left nothing
    await bus.close()
    await engine.dispose()
