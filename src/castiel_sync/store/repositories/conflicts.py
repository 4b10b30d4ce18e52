"""Field-level conflicts waiting for manual resolution (``conflicts``).

At most one *open* conflict per (shard, field): the sync engine asks :meth:`open_fields`
before opening new ones, so a conflict found again on every sync is not duplicated.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import ConflictError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import ConflictRow

C = ConflictRow


class ConflictRepository(ScopedRepository[ConflictRow]):
    model = ConflictRow
    object_type = "conflict"

    async def get(self, conflict_id: str) -> ConflictRow:
        row: ConflictRow = await self._fresh(self._select().where(C.id == conflict_id), conflict_id)
        return row

    async def list(
        self,
        *,
        status: str | None = "open",
        integration_id: str | None = None,
        shard_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[ConflictRow]:
        stmt = self._select().order_by(C.created_at, C.id).limit(limit)
        if status is not None:
            stmt = stmt.where(C.status == status)
        if integration_id is not None:
            stmt = stmt.where(C.integration_id == integration_id)
        if shard_id is not None:
            stmt = stmt.where(C.shard_id == shard_id)
        return await self._all(stmt.execution_options(populate_existing=True))

    async def open_fields(self, shard_ids: Iterable[str]) -> set[tuple[str, str]]:
        """``{(shard_id, field)}`` of the open conflicts of these shards."""
        ids = list(set(shard_ids))
        if not ids:
            return set()
        stmt = self._select(C.shard_id, C.field).where(C.shard_id.in_(ids), C.status == "open")
        return {(row.shard_id, row.field) for row in (await self._execute(stmt)).all()}

    async def insert_many(self, rows: builtins.list[dict[str, Any]]) -> None:
        await self._insert_many(rows)

    async def mark_resolved(
        self,
        conflict_id: str,
        *,
        resolution: str,
        resolved_value: Any,
        resolved_by: str | None,
        at: datetime | None = None,
    ) -> ConflictRow:
        """Close an open conflict (the caller applies the value); ConflictError if it was
        already resolved."""
        if resolution not in {"castiel", "external", "value"}:
            raise ValueError(f"unknown resolution {resolution!r}")
        result = await self._execute(
            self._update()
            .where(C.id == conflict_id, C.status == "open")
            .values(
                status="resolved",
                resolution=resolution,
                resolved_value=resolved_value,
                resolved_by=resolved_by,
                resolved_at=at or utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            await self.get(conflict_id)  # NotFoundError when not in scope
            raise ConflictError(f"conflict {conflict_id!r} is already resolved")
        return await self.get(conflict_id)


__all__ = ["ConflictRepository"]
