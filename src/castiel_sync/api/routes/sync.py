"""Sync Now: a tenant admin asks for a full or incremental sync of an integration (or of
one entity). The request is a ``SyncRequested`` event published through the outbox; the
inbound worker runs it like a scheduled sync and records its executions."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path

from castiel_sync.api.deps import TenantAdminDep
from castiel_sync.api.problems import UnprocessableProblem
from castiel_sync.api.schemas import Out
from castiel_sync.bus.outbox import publish
from castiel_sync.domain.config import CamelModel
from castiel_sync.domain.events import sync_requested
from castiel_sync.store.repositories import IntegrationRepository

router = APIRouter(tags=["sync"])


class SyncNowIn(CamelModel):
    sync_type: Literal["full", "incremental"] = "incremental"
    entity: str | None = None


class SyncNowOut(Out):
    request_id: str
    integration_id: str
    sync_type: str
    entity: str | None


@router.post(
    "/integrations/{integration_id}/sync",
    status_code=202,
    summary="Sync Now: queue a full or incremental sync (every inbound entity, or one)",
)
async def sync_now(
    access: TenantAdminDep,
    integration_id: Annotated[str, Path(max_length=64)],
    body: SyncNowIn | None = None,
) -> SyncNowOut:
    body = body or SyncNowIn()
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        settings = IntegrationRepository.settings_of(row)
        inbound = {
            m.entity for m in settings.entity_mappings if m.enabled and m.direction != "outbound"
        }
        if body.entity is not None and body.entity not in inbound:
            raise UnprocessableProblem(
                f"entity {body.entity!r} is not synced inbound by this integration"
            )
        if row.status in {"disabled", "paused"}:
            raise UnprocessableProblem(f"the integration is {row.status}; activate it first")
        event = sync_requested(
            tenant_id=access.tenant_id, integration_id=integration_id, entity=body.entity,
            sync_type=body.sync_type, requested_by=access.principal.user_id,
        )  # fmt: skip
        publish(repos.session, event)
        await repos.audit.record(
            **access.audit_actor(), action="integration.sync_requested",
            object_type="integration", object_id=integration_id,
            after={"syncType": body.sync_type, "entity": body.entity, "requestId": event.id},
        )  # fmt: skip
    return SyncNowOut(
        request_id=event.id, integration_id=integration_id, sync_type=body.sync_type,
        entity=body.entity,
    )  # fmt: skip
