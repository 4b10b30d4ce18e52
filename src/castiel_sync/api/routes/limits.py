"""Sync limits: records per sync job (at most 1000) and concurrent syncs per tenant
(default 3, at most 10). Everyone reads their tenant's effective limits; only super
admins change them, globally or for one named tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from castiel_sync.api.deps import TENANT_ID_PATTERN, SuperAdminDep, TenantAccessDep
from castiel_sync.api.problems import BadRequest
from castiel_sync.api.schemas import LimitOverridesOut, LimitsIn, LimitsOut
from castiel_sync.store.repositories import UNSET, LimitOverrides

router = APIRouter(tags=["limits"])

TenantPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN, description="The tenant's id.")]


def _overrides_out(overrides: LimitOverrides) -> LimitOverridesOut:
    return LimitOverridesOut(
        max_records_per_sync=overrides.max_records_per_sync,
        max_concurrent_syncs=overrides.max_concurrent_syncs,
    )


def _changes(body: LimitsIn) -> dict[str, Any]:
    if not body.model_fields_set:
        raise BadRequest("send maxRecordsPerSync and/or maxConcurrentSyncs (null clears one)")
    return {
        name: (getattr(body, name) if name in body.model_fields_set else UNSET)
        for name in ("max_records_per_sync", "max_concurrent_syncs")
    }


def _dump(overrides: LimitOverrides) -> dict[str, Any]:
    return _overrides_out(overrides).model_dump(by_alias=True)


@router.get("/limits", summary="Your tenant's effective limits")
async def effective_limits(access: TenantAccessDep) -> LimitsOut:
    async with access.transaction() as repos:
        limits = await repos.tenant_settings.effective()
    return LimitsOut(
        max_records_per_sync=limits.max_records_per_sync,
        max_concurrent_syncs=limits.max_concurrent_syncs,
    )


@router.get("/admin/limits", summary="The global limit overrides (super admin)")
async def get_global_limits(access: SuperAdminDep) -> LimitOverridesOut:
    async with access.transaction() as repos:
        return _overrides_out(await repos.tenant_settings.global_overrides())


@router.patch("/admin/limits", summary="Change the global limits (super admin)")
async def patch_global_limits(access: SuperAdminDep, body: LimitsIn) -> LimitOverridesOut:
    changes = _changes(body)
    async with access.transaction() as repos:
        before = await repos.tenant_settings.global_overrides()
        after = await repos.tenant_settings.set_global_limits(**changes)
        await repos.audit.record(
            **access.audit_actor(),
            action="limits.update",
            object_type="limits",
            object_id="*",
            before=_dump(before),
            after=_dump(after),
        )
        return _overrides_out(after)


@router.get(
    "/admin/tenants/{tenant_id}/limits", summary="One tenant's limit overrides (super admin)"
)
async def get_tenant_limits(access: SuperAdminDep, tenant_id: TenantPath) -> LimitOverridesOut:
    async with access.transaction() as repos:
        return _overrides_out(await repos.tenant_settings.for_tenant(tenant_id).overrides())


@router.patch(
    "/admin/tenants/{tenant_id}/limits", summary="Change one tenant's limits (super admin)"
)
async def patch_tenant_limits(
    access: SuperAdminDep, tenant_id: TenantPath, body: LimitsIn
) -> LimitOverridesOut:
    changes = _changes(body)
    async with access.transaction() as repos:
        settings = repos.tenant_settings.for_tenant(tenant_id)
        before = await settings.overrides()
        after = await settings.set_limits(**changes)
        await repos.audit.for_tenant(tenant_id).record(
            **access.audit_actor(),
            action="limits.update",
            object_type="limits",
            object_id=tenant_id,
            before=_dump(before),
            after=_dump(after),
        )
        return _overrides_out(after)
