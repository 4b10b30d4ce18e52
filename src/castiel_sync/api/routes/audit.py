"""The audit log of configuration changes, for a tenant's admins (their tenant only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from castiel_sync.api.deps import SuperAdminDep, TenantAdminDep
from castiel_sync.api.schemas import AuditEntryOut
from castiel_sync.store.tables import AuditLogRow

router = APIRouter(tags=["audit"])


def _out(row: AuditLogRow) -> AuditEntryOut:
    return AuditEntryOut(
        id=row.id,
        tenant_id=row.tenant_id,
        actor_user_id=row.actor_user_id,
        actor_role=row.actor_role,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        before=row.before,
        after=row.after,
        at=row.at,
    )


Limit = Annotated[int, Query(ge=1, le=1000)]
BeforeId = Annotated[int | None, Query(alias="beforeId", ge=1, le=2**62)]
ObjectType = Annotated[str | None, Query(alias="objectType", max_length=64)]
ObjectId = Annotated[str | None, Query(alias="objectId", max_length=128)]


@router.get(
    "/audit-log",
    summary="Your tenant's configuration changes, newest first",
    description="Page with `beforeId` = the last `id` of the previous page.",
)
async def list_audit(
    access: TenantAdminDep,
    object_type: ObjectType = None,
    object_id: ObjectId = None,
    limit: Limit = 100,
    before_id: BeforeId = None,
) -> list[AuditEntryOut]:
    async with access.transaction() as repos:
        rows = await repos.audit.list(
            object_type=object_type, object_id=object_id, limit=limit, before_id=before_id
        )
    return [_out(row) for row in rows]


@router.get("/admin/audit-log", summary="Every tenant's changes and system ones (super admin)")
async def list_all_audit(
    access: SuperAdminDep,
    object_type: ObjectType = None,
    object_id: ObjectId = None,
    limit: Limit = 100,
    before_id: BeforeId = None,
) -> list[AuditEntryOut]:
    async with access.transaction() as repos:
        rows = await repos.audit.list(
            object_type=object_type, object_id=object_id, limit=limit, before_id=before_id
        )
    return [_out(row) for row in rows]
