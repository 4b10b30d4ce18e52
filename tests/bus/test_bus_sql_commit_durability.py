"""On PostgreSQL the embedded bus waits for the WAL flush where losing the commit would
lose a message (send, nack), and not where it would only mean a redelivery (claim, ack,
renew): at-least-once delivery already allows that."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import QUEUE_WEBHOOK
from castiel_sync.bus.sql import SqlBus

RELAXED = "SET LOCAL synchronous_commit = off"


async def test_only_settling_commits_skip_the_wal_flush(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's durability is the store's (WAL, synchronous=NORMAL)")
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.strip().split()[0].upper() if statement != RELAXED else RELAXED)

    bus = SqlBus(engine)
    relaxed: dict[str, bool] = {}

    async def run(name: str, operation: Any) -> Any:
        statements.clear()
        result = await operation
        relaxed[name] = RELAXED in statements
        return result

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await run("send", bus.send(QUEUE_WEBHOOK, {"n": 1}, tenant_id="t"))
        (lease,) = await run("claim", bus.receive([QUEUE_WEBHOOK], lease_seconds=30))
        assert await run("renew", bus.renew(lease, lease_seconds=30))
        assert await run("nack", bus.nack(lease, error="retry"))
        (lease,) = await bus.receive([QUEUE_WEBHOOK], lease_seconds=30)
        assert await run("ack", bus.ack(lease))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert relaxed == {"send": False, "claim": True, "renew": True, "nack": False, "ack": True}
    await bus.close()
