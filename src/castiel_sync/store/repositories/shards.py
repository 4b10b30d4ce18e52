"""Shards and their external relationships (the spec's ``shards`` container and each
shard's ``external_relationships``).

Both repositories are bulk-capable: the sync engine applies a page of up to 1000 records
with a handful of statements (one SELECT of the page's relationships, executemany inserts
and updates), never one round trip per record. Single-row methods (``get``, ``for_shard``)
serve the API and the outbound worker. Lookups by a key ``IN`` list (or by shard) pass
``scope_index=False`` (``ScopedRepository._scope_terms``): on SQLite the tenant term must
not choose the ``tenant_id`` index, which holds all the tenant's rows, over the key's.

A relationship's dedup key is ``(integration_id, entity, external_id)``. Its lifecycle:
``sync_status`` ``synced`` / ``pending`` (a write-back is owed) / ``failed`` / ``deleted``
(tombstoned); ``deleted_upstream_at`` set and status not ``deleted`` means *pending
deletion* (seen gone upstream, waiting out the integration's delete grace period).
"""

from __future__ import annotations

# The repositories' ``list`` methods shadow the builtin inside their class bodies, so
# annotations there spell it ``builtins.list``.
import builtins
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_

from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import ExternalRelationshipRow, OutboxRow, ShardRow

R = ExternalRelationshipRow
S = ShardRow

#: Columns of :meth:`RelationshipRepository.by_external_ids` rows (attribute access).
RELATIONSHIP_STATE_COLUMNS = (
    R.id,
    R.shard_id,
    R.external_id,
    R.sync_status,
    R.last_synced_version,
    R.last_synced_hash,
    R.external_modified_at,
    R.deleted_upstream_at,
    S.version.label("shard_version"),
    S.deleted_at.label("shard_deleted_at"),
)


class ShardRepository(ScopedRepository[ShardRow]):
    model = ShardRow
    object_type = "shard"

    async def get(self, shard_id: str, *, include_deleted: bool = True) -> ShardRow:
        stmt = self._select().where(S.id == shard_id)
        if not include_deleted:
            stmt = stmt.where(S.deleted_at.is_(None))
        row: ShardRow = await self._fresh(stmt, shard_id)
        return row

    async def list(
        self,
        *,
        shard_type: str | None = None,
        include_deleted: bool = False,
        after_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ShardRow]:
        """Shards by id (keyset pagination with ``after_id``)."""
        stmt = self._select().order_by(S.id).limit(limit)
        if shard_type is not None:
            stmt = stmt.where(S.shard_type == shard_type)
        if not include_deleted:
            stmt = stmt.where(S.deleted_at.is_(None))
        if after_id is not None:
            stmt = stmt.where(S.id > after_id)
        return await self._all(stmt)

    async def count(self, *, shard_type: str | None = None, include_deleted: bool = False) -> int:
        stmt = self._select(func.count(S.id))
        if shard_type is not None:
            stmt = stmt.where(S.shard_type == shard_type)
        if not include_deleted:
            stmt = stmt.where(S.deleted_at.is_(None))
        return int((await self._execute(stmt)).scalar_one())

    async def contents(self, shard_ids: Iterable[str]) -> dict[str, Any]:
        """``{id: row}`` with ``structured_data``, ``history``, ``version``, ``shard_type``,
        ``updated_at``, ``deleted_at`` of the given shards (one SELECT)."""
        ids = list(set(shard_ids))
        if not ids:
            return {}
        stmt = self._select(
            S.id, S.structured_data, S.history, S.version, S.shard_type, S.updated_at, S.deleted_at,
            model=S, scope_index=False,
        ).where(S.id.in_(ids))  # fmt: skip
        return {row.id: row for row in (await self._execute(stmt)).all()}

    async def find_by_fields(
        self, shard_type: str, field: str, values: Iterable[str], *, exclude_held_by: Any = None
    ) -> builtins.list[Any]:
        """Live shards of ``shard_type`` whose ``structured_data`` at the dotted ``field``
        equals one of ``values``, case-insensitively. Rows: ``id``, ``key`` (the lowered
        value), ``structured_data``."""
        lowered = sorted({v.lower() for v in values if v})
        if not lowered:
            return []
        key = func.lower(S.structured_data[tuple(field.split("."))].as_string())
        stmt = self._select(S.id, key.label("key"), S.structured_data, model=S).where(
            S.shard_type == shard_type, S.deleted_at.is_(None), key.in_(lowered)
        )
        if exclude_held_by is not None:
            stmt = stmt.where(S.id.not_in(exclude_held_by))
        return list((await self._execute(stmt)).all())

    async def insert_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        """New shards; every row gives every column but ``tenant_id``."""
        await self._insert_many(rows)

    async def update_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        """Rows of ``{"id", <the same columns>...}``."""
        await self._update_many(rows)

    async def tombstone(self, shard_ids: Sequence[str], now: datetime) -> builtins.list[Any]:
        """Mark live shards deleted (version + 1); returns ``id, shard_type, version`` of
        those that were live."""
        if not shard_ids:
            return []
        live = self._select(S.id, S.shard_type, S.version, model=S, scope_index=False).where(
            S.id.in_(list(shard_ids)), S.deleted_at.is_(None)
        )
        rows = list((await self._execute(live)).all())
        if rows:
            await self._execute(
                self._update(scope_index=False)
                .where(S.id.in_([r.id for r in rows]))
                .values(deleted_at=now, version=S.version + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        return rows


class RelationshipRepository(ScopedRepository[ExternalRelationshipRow]):
    model = ExternalRelationshipRow
    object_type = "external relationship"

    async def get(self, relationship_id: str) -> ExternalRelationshipRow:
        row: ExternalRelationshipRow = await self._fresh(
            self._select().where(R.id == relationship_id), relationship_id
        )
        return row

    async def find(
        self, integration_id: str, entity: str, external_id: str
    ) -> ExternalRelationshipRow | None:
        row: ExternalRelationshipRow | None = await self._first(
            self._select()
            .where(R.integration_id == integration_id, R.entity == entity)
            .where(R.external_id == external_id)
            .execution_options(populate_existing=True)
        )
        return row

    async def for_shard(self, shard_id: str) -> builtins.list[ExternalRelationshipRow]:
        """A shard's ``external_relationships``, oldest first."""
        return await self._all(
            self._select(scope_index=False)
            .where(R.shard_id == shard_id)
            .order_by(R.created_at, R.id)
            .execution_options(populate_existing=True)
        )

    async def list(
        self, integration_id: str, entity: str | None = None, *, include_deleted: bool = False
    ) -> builtins.list[ExternalRelationshipRow]:
        stmt = self._select().where(R.integration_id == integration_id).order_by(R.external_id)
        if entity is not None:
            stmt = stmt.where(R.entity == entity)
        if not include_deleted:
            stmt = stmt.where(R.sync_status != "deleted")
        return await self._all(stmt.execution_options(populate_existing=True))

    async def by_external_ids(
        self, integration_id: str, entity: str, external_ids: Iterable[str]
    ) -> dict[str, Any]:
        """``{external_id: row}`` (columns :data:`RELATIONSHIP_STATE_COLUMNS`) for the
        page's records, with their shard's version and state: one SELECT."""
        ids = list(external_ids)
        if not ids:
            return {}
        stmt = (
            self._select(*RELATIONSHIP_STATE_COLUMNS, scope_index=False)
            .join(S, S.id == R.shard_id)
            .where(R.integration_id == integration_id, R.entity == entity)
            .where(R.external_id.in_(ids))
        )
        return {row.external_id: row for row in (await self._execute(stmt)).all()}

    async def snapshots(self, relationship_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{relationship_id: last_synced_snapshot}`` (the three-way merge bases)."""
        ids = list(set(relationship_ids))
        if not ids:
            return {}
        stmt = self._select(R.id, R.last_synced_snapshot, scope_index=False).where(R.id.in_(ids))
        return {row.id: row.last_synced_snapshot or {} for row in (await self._execute(stmt)).all()}

    async def holding(self, shard_ids: Iterable[str], *, entity: str | None = None) -> set[str]:
        """Which of ``shard_ids`` have a relationship that is not tombstoned."""
        ids = list(set(shard_ids))
        if not ids:
            return set()
        stmt = self._select(R.shard_id, scope_index=False).where(
            R.shard_id.in_(ids), R.sync_status != "deleted"
        )
        if entity is not None:
            stmt = stmt.where(R.entity == entity)
        return {row.shard_id for row in (await self._execute(stmt)).all()}

    def held_by(self, integration_id: str, entity: str) -> Any:
        """A subquery of the shard ids this integration's entity already holds."""
        return (
            self._select(R.shard_id)
            .where(R.integration_id == integration_id, R.entity == entity)
            .scalar_subquery()
        )

    async def insert_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        await self._insert_many(rows)

    async def update_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        await self._update_many(rows)

    async def mark_seen(
        self, integration_id: str, entity: str, external_ids: Sequence[str], run_id: str
    ) -> None:
        """Record that a full-sync run saw these records upstream (one UPDATE)."""
        if not external_ids:
            return
        await self._execute(
            self._update(scope_index=False)
            .where(R.integration_id == integration_id, R.entity == entity)
            .where(R.external_id.in_(list(external_ids)))
            .values(seen_run_id=run_id)
            .execution_options(synchronize_session=False)
        )

    async def sweep_unseen(
        self, integration_id: str, entity: str, run_id: str, *, run_started_at: datetime,
        now: datetime,
    ) -> int:  # fmt: skip
        """After a *complete* full run: every live relationship the run did not see, and
        that nothing else touched since the run began, becomes pending deletion."""
        result = await self._execute(
            self._update()
            .where(R.integration_id == integration_id, R.entity == entity)
            .where(or_(R.seen_run_id.is_(None), R.seen_run_id != run_id))
            .where(R.deleted_upstream_at.is_(None), R.sync_status != "deleted")
            .where(R.created_at < run_started_at)
            .where(or_(R.last_synced_at.is_(None), R.last_synced_at < run_started_at))
            .values(deleted_upstream_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def due_for_tombstone(
        self, integration_id: str, entity: str, cutoff: datetime
    ) -> builtins.list[Any]:
        """Pending deletions whose grace period ended (``deleted_upstream_at <= cutoff``):
        rows ``id, shard_id``."""
        stmt = (
            self._select(R.id, R.shard_id)
            .where(R.integration_id == integration_id, R.entity == entity)
            .where(R.deleted_upstream_at.is_not(None), R.deleted_upstream_at <= cutoff)
            .where(R.sync_status != "deleted")
        )
        return list((await self._execute(stmt)).all())

    async def set_status(
        self, relationship_ids: Sequence[str], status: str, *, now: datetime | None = None
    ) -> None:
        if not relationship_ids:
            return
        values: dict[str, Any] = {"sync_status": status}
        if now is not None:
            values["last_synced_at"] = now
        await self._execute(
            self._update(scope_index=False)
            .where(R.id.in_(list(relationship_ids)))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


class OutboxWriter(ScopedRepository[OutboxRow]):
    """Bulk writes into the transactional outbox (``castiel_sync.bus.outbox.publish`` for
    one event): the events commit with the changes that caused them."""

    model = OutboxRow
    object_type = "outbox event"

    async def publish_many(self, rows: list[dict[str, Any]]) -> None:
        """Rows ``event_type, session_key, event, created_at, relayed_at``; the tenant is
        the scope's."""
        await self._insert_many(rows)


__all__ = [
    "RELATIONSHIP_STATE_COLUMNS",
    "OutboxWriter",
    "RelationshipRepository",
    "ShardRepository",
]
