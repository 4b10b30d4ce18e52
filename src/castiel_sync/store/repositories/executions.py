"""Sync executions (one row per sync job) and the per-entity sync checkpoints.

Checkpoints live in ``integrations.cursors[entity]`` (JSON). They are written only by
:class:`SyncStateRepository`, always after :meth:`SyncStateRepository.lock` in the same
transaction, so concurrent jobs of different entities of one integration never lose each
other's updates, and the checkpoint commits with the records it covers. Checkpoint writes
do not bump the integration's ``row_version`` (that guards admins' settings edits).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from castiel_sync.store.base import new_id, utcnow
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import IntegrationRow, SyncExecutionRow

E = SyncExecutionRow
I = IntegrationRow  # noqa: E741 - the table's initial, as E and R elsewhere

#: Execution counters, in the order the API shows them.
COUNTERS = ("fetched", "created", "updated", "unchanged", "deleted", "failed", "conflicts")
EXECUTION_STATUSES = frozenset({"running", "succeeded", "partial", "failed"})


class ExecutionRepository(ScopedRepository[SyncExecutionRow]):
    model = SyncExecutionRow
    object_type = "sync execution"

    async def start(
        self,
        *,
        integration_id: str,
        entity: str | None,
        trigger: str,
        sync_type: str,
        cursor_before: dict[str, Any] | None,
        parent_execution_id: str | None = None,
        execution_id: str | None = None,
        started_at: datetime | None = None,
    ) -> str:
        """A ``running`` execution; returns its id."""
        execution_id = execution_id or new_id()
        row: dict[str, Any] = {
            "id": execution_id,
            "integration_id": integration_id,
            "entity": entity,
            "trigger": trigger,
            "sync_type": sync_type,
            "status": "running",
            "cursor_before": cursor_before,
            "cursor_after": None,
            "record_errors": [],
            "error": None,
            "parent_execution_id": parent_execution_id,
            "started_at": started_at or utcnow(),
            "finished_at": None,
            "duration_ms": None,
            **dict.fromkeys(COUNTERS, 0),
        }
        await self._insert_many([row])
        return execution_id

    async def add_progress(
        self,
        execution_id: str,
        counts: dict[str, int],
        *,
        cursor_after: dict[str, Any] | None = None,
        record_errors: builtins.list[dict[str, Any]] | None = None,
        status: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Add ``counts`` to the counters (and set the cursor / record errors). With
        ``status``, also what :meth:`finish` sets, in the same UPDATE (``started_at``:
        the execution's, for its duration; the caller knows it)."""
        values: dict[str, Any] = {
            name: getattr(E, name) + counts[name] for name in COUNTERS if counts.get(name)
        }
        if cursor_after is not None:
            values["cursor_after"] = cursor_after
        if record_errors is not None:
            values["record_errors"] = record_errors
        if status is not None:
            if status not in EXECUTION_STATUSES - {"running"} or started_at is None:
                raise ValueError(f"not a final execution status with its start: {status!r}")
            finished = finished_at or utcnow()
            values["status"] = status
            values["error"] = None
            values["finished_at"] = finished
            values["duration_ms"] = max(0, int((finished - started_at).total_seconds() * 1000))
        if not values:
            return
        await self._execute(
            self._update()
            .where(E.id == execution_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def finish(
        self,
        execution_id: str,
        *,
        status: str,
        error: str | None = None,
        finished_at: datetime | None = None,
        cursor_after: dict[str, Any] | None = None,
        only_if_running: bool = False,
    ) -> None:
        if status not in EXECUTION_STATUSES - {"running"}:
            raise ValueError(f"not a final execution status: {status!r}")
        # Only the two columns needed (not the whole row with its JSON cursors and errors).
        stmt = self._select(E.status, E.started_at).where(E.id == execution_id)
        row = (await self._execute(stmt)).first()
        if row is None:
            raise NotFoundError(self.object_type, execution_id)
        if only_if_running and row.status != "running":
            return
        finished = finished_at or utcnow()
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": finished,
            "duration_ms": max(0, int((finished - row.started_at).total_seconds() * 1000)),
        }
        if cursor_after is not None:
            values["cursor_after"] = cursor_after
        await self._execute(
            self._update()
            .where(E.id == execution_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def get(self, execution_id: str) -> SyncExecutionRow:
        row: SyncExecutionRow = await self._fresh(
            self._select().where(E.id == execution_id), execution_id
        )
        return row

    async def list(
        self,
        *,
        integration_id: str | None = None,
        entity: str | None = None,
        run_id: str | None = None,
        limit: int = 50,
    ) -> builtins.list[SyncExecutionRow]:
        """Newest first. ``run_id``: the jobs of one run (its first job and follow-ups)."""
        stmt = self._select().order_by(E.started_at.desc(), E.id.desc()).limit(limit)
        if integration_id is not None:
            stmt = stmt.where(E.integration_id == integration_id)
        if entity is not None:
            stmt = stmt.where(E.entity == entity)
        if run_id is not None:
            stmt = stmt.where((E.id == run_id) | (E.parent_execution_id == run_id))
        return await self._all(stmt.execution_options(populate_existing=True))


class SyncStateRepository(ScopedRepository[IntegrationRow]):
    """The sync engine's view of an integration: checkpoints and sync times."""

    model = IntegrationRow
    object_type = "integration"

    async def lock(self, integration_id: str) -> dict[str, Any]:
        """Take the integration's row lock for this transaction (a no-op UPDATE: a row
        lock on PostgreSQL, the write lock on SQLite) and return its current ``cursors``
        (``RETURNING``: one statement). NotFoundError when the integration is not in
        scope."""
        result = await self._execute(
            self._update()
            .where(I.id == integration_id)
            .values(row_version=I.row_version)
            .returning(I.cursors)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        if row is None:
            raise NotFoundError(self.object_type, integration_id)
        return dict(row.cursors or {})

    async def cursors(self, integration_id: str) -> dict[str, Any]:
        row = await self._one(
            self._select(I.cursors, model=I).where(I.id == integration_id), integration_id
        )
        return dict(row or {})

    async def write_checkpoint(
        self,
        integration_id: str,
        entity: str,
        checkpoint: dict[str, Any],
        *,
        cursors: dict[str, Any],
        last_sync_at: datetime | None = None,
        next_sync_at: Any = ...,
    ) -> None:
        """Set ``cursors[entity]`` (``cursors`` as :meth:`lock` returned them) and, when
        given, ``last_sync_at`` / ``next_sync_at`` (None clears it)."""
        values: dict[str, Any] = {"cursors": {**cursors, entity: checkpoint}}
        if last_sync_at is not None:
            values["last_sync_at"] = last_sync_at
        if next_sync_at is not ...:
            values["next_sync_at"] = next_sync_at
        await self._execute(
            self._update()
            .where(I.id == integration_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


__all__ = ["COUNTERS", "ExecutionRepository", "SyncStateRepository"]
