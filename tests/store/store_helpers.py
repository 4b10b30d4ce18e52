"""Shared values and helpers for the store's tests (imported by name: unique basename)."""

from __future__ import annotations

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.tables import IntegrationRow

TENANT_A = TenantScope(TenantId("tenant-a"))
TENANT_B = TenantScope(TenantId("tenant-b"))
SYSTEM = SystemScope("tests")


async def make_integration(
    store: Store, scope: TenantScope = TENANT_A, instance_id: str = "sales", **settings: object
) -> IntegrationRow:
    async with store.transaction() as session:
        return await IntegrationRepository(session, scope).create(
            provider_id="salesforce",
            name=f"Salesforce - {instance_id}",
            instance_id=instance_id,
            settings=IntegrationSettings.model_validate(settings),
            created_by="user-1",
        )
