"""The sync engine wired into the workers' handler registry.

=============================  =====================================================
``SyncScheduled``/``Requested``  ``InboundSync.run_job(SyncJob.from_event(event))``
``WebhookReceived``              the stored raw delivery (its tenant and integration) ->
                                 the adapter's ``parse_webhook`` ->
                                 ``InboundSync.apply_webhook_events``, which marks the
                                 delivery ``processed`` in the apply's transaction (a
                                 repeat is a no-op)
``WriteBackRequested``           ``OutboundSync`` (its own retry policy -> RetryLater /
                                 GiveUp, which the worker's error classes act on)
=============================  =====================================================

Credentials come from :class:`~castiel_sync.runtime.token_refresher.RefreshingCredentialProvider`,
so adapters refresh on a 401 through the token refresher's single flight.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.events import (
    SYNC_REQUESTED,
    SYNC_SCHEDULED,
    WEBHOOK_RECEIVED,
    WRITE_BACK_REQUESTED,
    CloudEvent,
)
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.runtime.token_refresher import RefreshingCredentialProvider, TokenRefresher
from castiel_sync.runtime.workers import Delivery, HandlerRegistry
from castiel_sync.sdk import WebhookRequest
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import IntegrationRepository, WebhookDeliveryRepository
from castiel_sync.store.repositories.webhook_deliveries import RECEIVED


def engine_registry(
    engine: AsyncEngine,
    vault: Any,
    catalog: Any,
    settings: Settings,
    *,
    refresher: TokenRefresher | None = None,
    adapter_factory: Any = None,
) -> HandlerRegistry:
    from castiel_sync.sync import InboundSync, SyncJob, default_adapter_factory
    from castiel_sync.sync.outbound import OutboundSync

    store = Store(engine)
    credentials = RefreshingCredentialProvider(refresher or TokenRefresher(engine, vault, catalog))
    factory = adapter_factory or default_adapter_factory
    inbound = InboundSync(store, credentials, adapter_factory=factory, settings=settings)
    outbound = OutboundSync(store, credentials, adapter_factory=factory)

    async def sync_job(event: CloudEvent, delivery: Delivery) -> None:
        await inbound.run_job(SyncJob.from_event(event))

    async def webhook(event: CloudEvent, delivery: Delivery) -> None:
        # The stored delivery, not the event, names the tenant and the integration.
        delivery_id = str(event.data["deliveryId"])
        async with store.transaction() as session:
            deliveries = WebhookDeliveryRepository(session, TenantScope(TenantId(event.tenant_id)))
            try:
                row = await deliveries.get(delivery_id)
            except NotFoundError:
                return  # gone (purged, or not this tenant's)
            if row.status != RECEIVED:
                return  # a repeat of a delivery already applied
            tenant, integration_id = row.tenant_id, row.integration_id
            integration = await IntegrationRepository(session, TenantScope(TenantId(tenant))).get(
                integration_id
            )
        meta = dict(row.headers or {})
        request = WebhookRequest(
            method=str(meta.pop("_method", "POST")),
            url=str(meta.pop("_url", "")),
            headers=httpx.Headers({k: str(v) for k, v in meta.items()}),
            body=bytes(row.body),
        )
        events = factory(integration).parse_webhook(request)
        # Applied and marked processed in one transaction: of two deliveries of the same
        # message (a redelivery after a crash before the ack) only one applies anything.
        await inbound.apply_webhook_events(tenant, integration_id, events, delivery_id=row.id)

    registry = HandlerRegistry()
    registry.register(SYNC_SCHEDULED, sync_job)
    registry.register(SYNC_REQUESTED, sync_job)
    registry.register(WEBHOOK_RECEIVED, webhook)
    registry.register(WRITE_BACK_REQUESTED, outbound)
    return registry
