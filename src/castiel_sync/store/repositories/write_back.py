"""The statements of the write-back side (shard edits, the outbound worker, conflict
resolution), kept apart from the inbound engine's bulk repositories in ``shards.py``.

Every write here is a compare-and-swap, so two writers never silently overwrite each
other: a shard edit is applied only to the version it was made from, and a relationship
records a write-back only while no newer version was recorded before it.
"""

from __future__ import annotations

import builtins
from typing import Any

from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import ExternalRelationshipRow, ShardRow

R = ExternalRelationshipRow
S = ShardRow


class ShardEditRepository(ScopedRepository[ShardRow]):
    model = ShardRow
    object_type = "shard"

    async def update_if_version(
        self, shard_id: str, expected_version: int, values: dict[str, Any]
    ) -> bool:
        """Write ``values`` to the shard only if it is still at ``expected_version``."""
        result = await self._execute(
            self._update()
            .where(S.id == shard_id, S.version == expected_version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def list_held_by(
        self,
        integration_id: str,
        *,
        shard_type: str | None = None,
        after_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ShardRow]:
        """Live shards that hold a relationship with ``integration_id`` (keyset by id)."""
        held = (
            self._select(R.shard_id, model=R)
            .where(R.integration_id == integration_id, R.sync_status != "deleted")
            .scalar_subquery()
        )
        stmt = (
            self._select().where(S.id.in_(held), S.deleted_at.is_(None)).order_by(S.id).limit(limit)
        )
        if shard_type is not None:
            stmt = stmt.where(S.shard_type == shard_type)
        if after_id is not None:
            stmt = stmt.where(S.id > after_id)
        return await self._all(stmt.execution_options(populate_existing=True))


class RelationshipStateRepository(ScopedRepository[ExternalRelationshipRow]):
    model = ExternalRelationshipRow
    object_type = "external relationship"

    async def for_shard_entity(
        self, shard_id: str, integration_id: str, entity: str
    ) -> ExternalRelationshipRow | None:
        row: ExternalRelationshipRow | None = await self._first(
            self._select()
            .where(R.shard_id == shard_id, R.integration_id == integration_id)
            .where(R.entity == entity)
            .order_by(R.created_at, R.id)
            .execution_options(populate_existing=True)
        )
        return row

    async def set_values(self, relationship_id: str, values: dict[str, Any]) -> None:
        await self._execute(
            self._update()
            .where(R.id == relationship_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def record_synced(
        self, relationship_id: str, version: int, values: dict[str, Any]
    ) -> bool:
        """Record a write-back of shard ``version`` unless a newer one is recorded."""
        result = await self._execute(
            self._update()
            .where(R.id == relationship_id)
            .where((R.last_synced_version.is_(None)) | (R.last_synced_version <= version))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def add(self, row: ExternalRelationshipRow) -> ExternalRelationshipRow:
        added: ExternalRelationshipRow = await self._add(
            row, conflict="the shard already has this external relationship"
        )
        return added


__all__ = ["RelationshipStateRepository", "ShardEditRepository"]
