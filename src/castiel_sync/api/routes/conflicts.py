"""Field-level conflicts waiting for manual resolution: list (any role of the tenant) and
resolve (tenant admins). The resolution syncs both ways (``ConflictService``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from castiel_sync.api.deps import TenantAccessDep, TenantAdminDep
from castiel_sync.api.problems import UnprocessableProblem
from castiel_sync.api.schemas import Out
from castiel_sync.domain.config import CamelModel
from castiel_sync.domain.paths import MISSING
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.tables import ConflictRow
from castiel_sync.sync.conflict_service import ConflictService

router = APIRouter(prefix="/conflicts", tags=["conflicts"])

ConflictId = Annotated[str, Path(max_length=64, description="The conflict's id.")]


class ConflictOut(Out):
    id: str
    integration_id: str
    shard_id: str
    relationship_id: str
    field: str
    base_value: Any = None
    castiel_value: Any = None
    external_value: Any = None
    status: str
    resolution: str | None
    resolved_value: Any = None
    resolved_by: str | None
    resolved_at: datetime | None
    created_at: datetime


class ResolveIn(CamelModel):
    """``choice``: keep Castiel's value, take the external one, or give ``value`` (null
    clears the field)."""

    choice: Literal["castiel", "external", "value"]
    value: Any = None


def conflict_out(row: ConflictRow) -> ConflictOut:
    return ConflictOut(
        id=row.id, integration_id=row.integration_id, shard_id=row.shard_id,
        relationship_id=row.relationship_id, field=row.field, base_value=row.base_value,
        castiel_value=row.castiel_value, external_value=row.external_value, status=row.status,
        resolution=row.resolution, resolved_value=row.resolved_value,
        resolved_by=row.resolved_by, resolved_at=row.resolved_at, created_at=row.created_at,
    )  # fmt: skip


@router.get("", summary="The tenant's conflicts (open ones by default)")
async def list_conflicts(
    access: TenantAccessDep,
    status: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
    shard_id: Annotated[str | None, Query(alias="shardId", max_length=64)] = None,
    integration_id: Annotated[str | None, Query(alias="integrationId", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ConflictOut]:
    async with access.transaction() as repos:
        rows = await ConflictRepository(repos.session, access.scope).list(
            status=None if status == "all" else status, shard_id=shard_id,
            integration_id=integration_id, limit=limit,
        )  # fmt: skip
    return [conflict_out(row) for row in rows]


@router.post("/{conflict_id}/resolve", summary="Settle a conflict; the value syncs both ways")
async def resolve_conflict(
    access: TenantAdminDep, conflict_id: ConflictId, body: ResolveIn
) -> ConflictOut:
    if body.choice == "value" and "value" not in body.model_fields_set:
        raise UnprocessableProblem("choice 'value' needs a value (null clears the field)")
    if body.choice != "value" and "value" in body.model_fields_set:
        raise UnprocessableProblem("a value is only given with choice 'value'")
    value = body.value if body.choice == "value" else MISSING
    result = await ConflictService(access.ctx.store).resolve(
        access.tenant_scope,
        conflict_id,
        body.choice,
        value,
        actor=f"user:{access.principal.user_id}",
    )
    async with access.transaction() as repos:
        await repos.audit.record(
            **access.audit_actor(), action="conflict.resolve", object_type="conflict",
            object_id=conflict_id, after={"choice": body.choice, "field": result.conflict.field},
        )  # fmt: skip
    return conflict_out(result.conflict)
