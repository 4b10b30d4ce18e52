from __future__ import annotations

import pytest
from store_helpers import SYSTEM, TENANT_A

from castiel_sync.store import Store
from castiel_sync.store.errors import NotFoundError, ScopeError
from castiel_sync.store.repositories import ProviderRepository


async def test_tenant_sees_only_tenant_audience_active_or_beta(store: Store) -> None:
    async with store.transaction() as session:
        tenant = ProviderRepository(session, TENANT_A)
        assert [p.id for p in await tenant.list()] == ["hubspot", "salesforce"]
        assert [p.id for p in await tenant.list(category="crm")] == ["hubspot", "salesforce"]
        assert await tenant.list(category="news") == []
        assert (await tenant.get("salesforce")).category == "crm"
        for hidden in ("google_news", "gong"):
            with pytest.raises(NotFoundError) as hidden_error:
                await tenant.get(hidden)
            assert str(hidden_error.value) == f"provider '{hidden}' was not found"


async def test_system_sees_all(store: Store) -> None:
    async with store.transaction() as session:
        system = ProviderRepository(session, SYSTEM)
        assert {p.id for p in await system.list()} == {
            "salesforce",
            "hubspot",
            "gong",
            "google_news",
        }
        assert (await system.get("google_news")).audience == "system"
        with pytest.raises(NotFoundError):
            await system.get("nope")


async def test_status_and_audience_changes_are_system_only_and_survive_reload(
    store: Store,
) -> None:
    async with store.transaction() as session:
        tenant = ProviderRepository(session, TENANT_A)
        with pytest.raises(ScopeError):
            await tenant.set_status("salesforce", "disabled")
        with pytest.raises(ScopeError):
            await tenant.set_audience("salesforce", "system")
        with pytest.raises(ScopeError):
            await tenant.upsert(
                provider_id="x",
                name="x",
                category="crm",
                status="active",
                audience="tenant",
                auth_type="oauth2",
                definition={},
            )
    async with store.transaction() as session:
        system = ProviderRepository(session, SYSTEM)
        row = await system.set_status("salesforce", "disabled")
        assert row.status == "disabled" and row.status_overridden
        row = await system.set_audience("google_news", "tenant")
        assert row.audience == "tenant" and row.audience_overridden
        with pytest.raises(ValueError, match="status"):
            await system.set_status("salesforce", "gone")
        with pytest.raises(ValueError, match="audience"):
            await system.set_audience("salesforce", "everyone")
        with pytest.raises(NotFoundError):
            await system.set_status("nope", "active")
    async with store.transaction() as session:
        system = ProviderRepository(session, SYSTEM)
        # A catalog reload keeps the overrides and updates everything else.
        reloaded = await system.upsert(
            provider_id="salesforce",
            name="Salesforce CRM",
            category="crm",
            status="active",
            audience="tenant",
            auth_type="oauth2",
            definition={"v": 2},
        )
        assert reloaded.status == "disabled" and reloaded.name == "Salesforce CRM"
        assert reloaded.definition == {"v": 2}
    async with store.transaction() as session:
        tenant = ProviderRepository(session, TENANT_A)
        assert [p.id for p in await tenant.list()] == ["hubspot", "google_news"]
