"""Deleting a shard through ``ShardService`` publishes its ``Castiel.Shard.Deleted`` in the
transaction of the tombstone, on SQLite and PostgreSQL; a delete that fails publishes
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from writeback_support import Harness, imported

from castiel_sync.domain.events import SHARD_DELETED, WRITE_BACK_REQUESTED, CloudEvent
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.store.errors import ConflictError, NotFoundError
from castiel_sync.store.repositories.shards import ShardRepository
from castiel_sync.store.tables import OutboxRow, ShardRow


async def outbox(h: Harness, event_type: str) -> list[OutboxRow]:
    async with h.store.transaction() as session:
        stmt = select(OutboxRow).where(OutboxRow.event_type == event_type).order_by(OutboxRow.id)
        return list((await session.execute(stmt)).scalars().all())


async def test_delete_publishes_one_shard_deleted(engine: AsyncEngine) -> None:
    h = await imported(engine)
    shard = await h.shard()
    assert await outbox(h, SHARD_DELETED) == []
    [write_back_id] = await h.shards_service().delete(h.scope, shard.id, actor="user:alice")
    [row] = await outbox(h, SHARD_DELETED)
    event = CloudEvent.from_dict(row.event)
    assert row.tenant_id == h.tenant and event.subject == shard.id
    assert event.data["tenantId"] == h.tenant and event.data["shardId"] == shard.id
    assert event.data["shardType"] == "c_contact"
    assert event.data["version"] == shard.version + 1 == (await h.shard()).version
    # The write-back of the deletion goes out with it, as before.
    [(_, write_back)] = await h.write_back_events()
    assert write_back.id == write_back_id and write_back.data["operation"] == "delete"


async def test_delete_of_another_tenants_shard_publishes_nothing(engine: AsyncEngine) -> None:
    h = await imported(engine)
    shard = await h.shard()
    with pytest.raises(NotFoundError):
        await h.shards_service().delete(
            TenantScope(TenantId("tenantb")), shard.id, actor="user:mallory"
        )
    assert await outbox(h, SHARD_DELETED) == []
    assert await outbox(h, WRITE_BACK_REQUESTED) == []
    assert (await h.shard()).deleted_at is None


async def test_delete_that_loses_the_race_publishes_nothing(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await imported(engine)
    shard = await h.shard()
    read = ShardRepository.get

    async def read_then_concurrent_edit(self: ShardRepository, *args: Any, **kwargs: Any) -> Any:
        row = await read(self, *args, **kwargs)
        # Another writer moves the shard on between the delete's read and its
        # compare-and-swap.
        await self._session.execute(
            update(ShardRow)
            .where(ShardRow.id == row.id)
            .values(version=ShardRow.version + 1)
            .execution_options(synchronize_session=False)
        )
        return row

    monkeypatch.setattr(ShardRepository, "get", read_then_concurrent_edit)
    with pytest.raises(ConflictError):
        await h.shards_service().delete(h.scope, shard.id, actor="user:alice")
    monkeypatch.undo()
    assert await outbox(h, SHARD_DELETED) == []
    assert await outbox(h, WRITE_BACK_REQUESTED) == []
    after = await h.shard()
    assert after.deleted_at is None and after.version == shard.version
