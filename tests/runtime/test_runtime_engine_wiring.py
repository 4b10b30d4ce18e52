"""The sync engine is wired into the workers' registry (inbound, webhook, write-back)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import load_catalog
from castiel_sync.domain.events import (
    SYNC_REQUESTED,
    SYNC_SCHEDULED,
    WEBHOOK_RECEIVED,
    WRITE_BACK_REQUESTED,
    webhook_received,
)
from castiel_sync.runtime.engine import engine_registry
from castiel_sync.settings import Settings
from castiel_sync.vault import open_vault


async def test_every_routed_event_type_has_an_engine_handler(
    rt_engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path)
    registry = engine_registry(rt_engine, open_vault(settings, rt_engine), load_catalog(), settings)
    assert registry.event_types() == sorted(
        [SYNC_REQUESTED, SYNC_SCHEDULED, WEBHOOK_RECEIVED, WRITE_BACK_REQUESTED]
    )
    # A WebhookReceived whose delivery is gone (purged, or another tenant's) is a no-op.
    handler = registry.get(WEBHOOK_RECEIVED)
    assert handler is not None
    event = webhook_received(
        tenant_id="ta", integration_id="i", provider="hubspot", delivery_id="missing"
    )
    await handler(event, None)  # type: ignore[arg-type]
