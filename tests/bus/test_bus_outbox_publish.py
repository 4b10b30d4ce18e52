"""``publish`` keeps events in the session and writes them when it commits.

Pinned here: events exist exactly when their transaction commits (on a rollback, on a
session reused after one, and on a session that joined a connection's transaction), in
the order published, and a commit writes all of its events in one INSERT statement
(the ORM wrote one statement per row on SQLite, which capped the outbox at ~2,000
events/s).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus.outbox import publish
from castiel_sync.runtime._db import write_session
from castiel_sync.store.base import session_factory
from castiel_sync.store.tables import OutboxRow


def _event(kind: str = "Castiel.Integration.SyncRequested", tenant: str = "t1") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/test",
        "type": kind,
        "time": "2024-01-01T00:00:00Z",
        "data": {"tenantId": tenant, "integrationId": "int-1"},
    }


async def _outbox(engine: AsyncEngine) -> list[OutboxRow]:
    async with session_factory(engine)() as session:
        return list((await session.execute(select(OutboxRow).order_by(OutboxRow.id))).scalars())


async def test_commit_writes_events_in_order_with_tenant_and_session_key(
    engine: AsyncEngine,
) -> None:
    events = [_event(tenant=f"t{i % 2}") for i in range(5)]
    async with session_factory(engine).begin() as session:
        for e in events:
            publish(session, e, session_key="int-1" if e is events[0] else None)
    rows = await _outbox(engine)
    assert [r.event["id"] for r in rows] == [e["id"] for e in events]
    assert [r.tenant_id for r in rows] == ["t0", "t1", "t0", "t1", "t0"]
    assert [r.session_key for r in rows] == ["int-1", None, None, None, None]
    assert all(
        r.relayed_at is None and r.event_type == e["type"]
        for r, e in zip(rows, events, strict=True)
    )


async def test_rollback_writes_nothing_and_a_reused_session_forgets(engine: AsyncEngine) -> None:
    dropped, kept = _event(), _event()
    async with session_factory(engine)() as session:
        with pytest.raises(RuntimeError):
            async with session.begin():
                publish(session, dropped)
                raise RuntimeError("the change failed")
        async with session.begin():
            publish(session, kept)
    assert [r.event["id"] for r in await _outbox(engine)] == [kept["id"]]


async def test_session_closed_without_commit_writes_nothing(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        publish(session, _event())
        await session.flush()
    assert await _outbox(engine) == []


async def test_session_joined_to_a_connection_transaction(engine: AsyncEngine) -> None:
    published = _event()
    async with write_session(engine) as session:
        publish(session, published)
    assert [r.event["id"] for r in await _outbox(engine)] == [published["id"]]
    with pytest.raises(RuntimeError):
        async with write_session(engine) as session:
            publish(session, _event())
            raise RuntimeError("the change failed")
    assert len(await _outbox(engine)) == 1


async def test_one_insert_statement_per_commit(engine: AsyncEngine) -> None:
    inserts: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            inserts.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with session_factory(engine).begin() as session:
            for _ in range(25):
                publish(session, _event())
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    # SQLite: the connection runs the one executemany inside its COMMIT call (not seen
    # by SQLAlchemy's cursor events); elsewhere one executemany through SQLAlchemy.
    assert len(inserts) == (0 if engine.dialect.name == "sqlite" else 1)
    assert len(await _outbox(engine)) == 25
