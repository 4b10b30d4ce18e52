"""The sync engine's bulk writes keep tenancy: another tenant's ids match nothing, a row
cannot move itself to another tenant, and a system scope cannot bulk-write."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store.base import new_id, utcnow
from castiel_sync.store.errors import ScopeError
from castiel_sync.store.repositories.shards import ShardRepository
from castiel_sync.store.tables import ShardRow
from castiel_sync.store.uow import Store

A = TenantScope(TenantId("tenanta"))
B = TenantScope(TenantId("tenantb"))


def shard(name: str) -> dict[str, object]:
    now = utcnow()
    return {
        "id": new_id(), "shard_type": "c_company", "structured_data": {"name": name},
        "version": 1, "content_hash": None, "history": [], "updated_by": None,
        "deleted_at": None, "created_at": now, "updated_at": now,
    }  # fmt: skip


async def rows(engine: AsyncEngine) -> list[tuple[str, str, dict[str, object], int]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(ShardRow.id, ShardRow.tenant_id, ShardRow.structured_data, ShardRow.version)
        )
        return sorted(tuple(r) for r in result.all())  # type: ignore[misc]


async def test_bulk_update_cannot_reach_or_move_another_tenants_rows(engine: AsyncEngine) -> None:
    store = Store(engine)
    mine = shard("Acme")
    async with store.transaction() as session:
        await ShardRepository(session, A).insert_many([mine])
    before = await rows(engine)

    attack = [{"id": mine["id"], "structured_data": {"name": "pwned"}, "version": 99}]
    async with store.transaction() as session:
        await ShardRepository(session, B).update_many(attack)
    assert await rows(engine) == before

    for scope, change in [
        (A, [{"id": mine["id"], "tenant_id": "tenantb", "version": 2}]),
        (SystemScope("test"), attack),
    ]:
        with pytest.raises(ScopeError):
            async with store.transaction() as session:
                await ShardRepository(session, scope).update_many(change)
    assert await rows(engine) == before

    async with store.transaction() as session:
        await ShardRepository(session, A).update_many(
            [{"id": mine["id"], "structured_data": {"name": "Acme Corp"}, "version": 2}]
        )
    (after,) = await rows(engine)
    assert after[1:] == ("tenanta", {"name": "Acme Corp"}, 2)
