"""The runtime's writes go through repositories: ``IntegrationRepository.claim_due``,
``ConnectionRepository.try_lease(expected_version=)`` and ``WebhookDeliveryRepository``,
each scoped like every other repository; and the runtime modules and the webhook route
hold no SQL of their own."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B, make_integration

import castiel_sync
from castiel_sync.store import Store
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import (
    ConnectionRepository,
    IntegrationRepository,
    WebhookDeliveryRepository,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PACKAGE = Path(castiel_sync.__file__).parent
NO_SQL_MODULES = [
    "runtime/engine.py",
    "runtime/scheduler.py",
    "runtime/token_refresher.py",
    "api/routes/webhooks.py",
]


@pytest.mark.parametrize("module", NO_SQL_MODULES)
def test_the_module_writes_no_sql_of_its_own(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            names = {a.name for a in node.names} - {"AsyncEngine", "AsyncSession"}
            if names:
                problems.append(f"{node.lineno}: imports {sorted(names)} from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in {"__table__", "add", "execute"}:
            if isinstance(node.value, ast.Name) and node.value.id in {"session", "conn"}:
                problems.append(f"{node.lineno}: {node.value.id}.{node.attr}")
            elif node.attr == "__table__":
                problems.append(f"{node.lineno}: .__table__")
    assert problems == []


async def test_claim_due_moves_the_next_sync_once_and_only_in_scope(store: Store) -> None:
    row = await make_integration(store, sync_enabled=True)
    async with store.transaction() as session:
        await IntegrationRepository(session, TENANT_A).update(
            row.id, status="active", next_sync_at=T0
        )
    later = T0 + timedelta(minutes=15)
    async with store.transaction() as session:
        assert not await IntegrationRepository(session, TENANT_B).claim_due(row.id, T0, later)
        assert not await IntegrationRepository(session, TENANT_A).claim_due(
            row.id, T0 - timedelta(seconds=1), later
        )  # not the due time this scheduler read
        assert await IntegrationRepository(session, TENANT_A).claim_due(row.id, T0, later)
        assert not await IntegrationRepository(session, TENANT_A).claim_due(row.id, T0, later)
    async with store.transaction() as session:
        assert (await IntegrationRepository(session, TENANT_A).get(row.id)).next_sync_at == later
        await IntegrationRepository(session, TENANT_A).update(row.id, status="paused")
        assert not await IntegrationRepository(session, TENANT_A).claim_due(row.id, later, T0)


async def test_try_lease_with_an_expected_version(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        repo = ConnectionRepository(session, TENANT_A)
        conn = await repo.upsert(row.id, scope="tenant", credential_secret_name="s")
        version = conn.credential_version
    until = T0 + timedelta(seconds=30)
    async with store.transaction() as session:
        repo = ConnectionRepository(session, TENANT_A)
        assert not await repo.try_lease(conn.id, now=T0, until=until, expected_version=version + 1)
        assert await repo.try_lease(conn.id, now=T0, until=until, expected_version=version)
        assert not await repo.try_lease(conn.id, now=T0, until=until, expected_version=version)
    async with store.transaction() as session:
        with pytest.raises(NotFoundError):
            await ConnectionRepository(session, TENANT_B).try_lease(
                conn.id, now=until, until=until, expected_version=version
            )


async def test_webhook_deliveries_are_scoped_and_processed_once(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        delivery = await WebhookDeliveryRepository(session, TENANT_A).add(
            integration_id=row.id, headers={"_method": "POST"}, body=b"{}"
        )
    assert delivery.tenant_id == "tenant-a" and delivery.status == "received"
    async with store.transaction() as session:
        with pytest.raises(NotFoundError):
            await WebhookDeliveryRepository(session, TENANT_B).get(delivery.id)
        assert not await WebhookDeliveryRepository(session, TENANT_B).mark_processed(delivery.id)
        repo = WebhookDeliveryRepository(session, TENANT_A)
        assert (await repo.get(delivery.id)).body == b"{}"
        assert await repo.mark_processed(delivery.id)
        assert not await repo.mark_processed(delivery.id)
    async with store.transaction() as session:
        got = await WebhookDeliveryRepository(session, SYSTEM).get(delivery.id)
        assert got.status == "processed"
