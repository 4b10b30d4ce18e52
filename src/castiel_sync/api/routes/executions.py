"""Sync execution history: one record per sync job, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from castiel_sync.api.deps import TenantAccessDep
from castiel_sync.api.schemas import Out
from castiel_sync.store.repositories.executions import ExecutionRepository
from castiel_sync.store.tables import SyncExecutionRow

router = APIRouter(tags=["executions"])


class ExecutionOut(Out):
    id: str
    integration_id: str
    entity: str | None
    trigger: str
    sync_type: str
    status: str
    counts: dict[str, int]
    cursor_before: dict[str, Any] | None
    cursor_after: dict[str, Any] | None
    record_errors: list[dict[str, Any]]
    error: str | None
    parent_execution_id: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None


COUNTS = ("fetched", "created", "updated", "unchanged", "deleted", "failed", "conflicts")


def execution_out(row: SyncExecutionRow) -> ExecutionOut:
    return ExecutionOut(
        id=row.id, integration_id=row.integration_id, entity=row.entity, trigger=row.trigger,
        sync_type=row.sync_type, status=row.status,
        counts={name: getattr(row, name) for name in COUNTS},
        cursor_before=row.cursor_before, cursor_after=row.cursor_after,
        record_errors=list(row.record_errors or []), error=row.error,
        parent_execution_id=row.parent_execution_id, started_at=row.started_at,
        finished_at=row.finished_at, duration_ms=row.duration_ms,
    )  # fmt: skip


@router.get("/integrations/{integration_id}/executions", summary="An integration's sync runs")
async def list_executions(
    access: TenantAccessDep,
    integration_id: Annotated[str, Path(max_length=64)],
    entity: Annotated[str | None, Query(max_length=100)] = None,
    run_id: Annotated[str | None, Query(alias="runId", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ExecutionOut]:
    async with access.transaction() as repos:
        await repos.integrations.get(integration_id)  # 404 outside the tenant
        rows = await ExecutionRepository(repos.session, access.scope).list(
            integration_id=integration_id, entity=entity, run_id=run_id, limit=limit
        )
    return [execution_out(row) for row in rows]


@router.get("/executions/{execution_id}", summary="One sync execution")
async def get_execution(
    access: TenantAccessDep, execution_id: Annotated[str, Path(max_length=64)]
) -> ExecutionOut:
    async with access.transaction() as repos:
        row = await ExecutionRepository(repos.session, access.scope).get(execution_id)
    return execution_out(row)
