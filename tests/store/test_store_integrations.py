from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B, make_integration

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import ConflictError, NotFoundError, ScopeError
from castiel_sync.store.repositories import IntegrationRepository

SETTINGS = {
    "syncEnabled": True,
    "syncDirection": "bidirectional",
    "syncFrequency": {"kind": "interval", "minutes": 15},
    "entityMappings": [
        {
            "entity": "Account",
            "shardType": "c_company",
            "fieldMappings": [{"external": "Name", "castiel": "name", "transforms": ["trim"]}],
        }
    ],
    "conflictResolution": "manual",
    "allowedShardTypes": ["c_company"],
    "matchRules": [{"shardType": "c_company", "fields": ["name"]}],
}


async def test_create_get_and_settings_round_trip(store: Store) -> None:
    created = await make_integration(store, **SETTINGS)
    assert created.tenant_id == "tenant-a"
    assert created.status == "pending" and created.row_version == 1
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        row = await repo.get(created.id)
        settings = repo.settings_of(row)
    assert settings == IntegrationSettings.model_validate(SETTINGS)
    assert row.sync_frequency == {"kind": "interval", "minutes": 15, "at": None, "cron": None}


async def test_several_instances_per_provider_and_duplicate_instance_conflicts(
    store: Store,
) -> None:
    await make_integration(store, instance_id="sales")
    await make_integration(store, instance_id="support")
    await make_integration(store, TENANT_B, instance_id="sales")  # other tenant: no clash
    with pytest.raises(ConflictError, match="instance id 'sales' already exists"):
        await make_integration(store, instance_id="sales")
    async with store.transaction() as session:
        rows = await IntegrationRepository(session, TENANT_A).list()
    assert sorted(r.instance_id for r in rows) == ["sales", "support"]


async def test_create_needs_a_provider_the_tenant_can_see(store: Store) -> None:
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        for hidden in ("google_news", "gong", "nope"):
            with pytest.raises(NotFoundError, match=f"provider '{hidden}' was not found"):
                await repo.create(
                    provider_id=hidden,
                    name="x",
                    instance_id="x",
                    settings=IntegrationSettings(),
                    created_by=None,
                )


async def test_list_filters(store: Store) -> None:
    one = await make_integration(store, instance_id="one")
    await make_integration(store, instance_id="two")
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        await repo.update(one.id, status="active")
        assert [r.id for r in await repo.list(status="active")] == [one.id]
        assert len(await repo.list(provider_id="salesforce")) == 2
        assert await repo.list(provider_id="hubspot") == []


async def test_update_bumps_version_and_applies_settings(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        updated = await repo.update(
            row.id,
            name="Renamed",
            settings=IntegrationSettings.model_validate(SETTINGS),
            cursors={"Account": {"since": "2026-01-01T00:00:00Z"}},
        )
    assert updated.row_version == 2 and updated.name == "Renamed"
    assert updated.sync_enabled is True and updated.conflict_resolution == "manual"
    assert updated.cursors == {"Account": {"since": "2026-01-01T00:00:00Z"}}
    async with store.transaction() as session:
        again = await IntegrationRepository(session, TENANT_A).get(row.id)
    assert again.row_version == 2 and again.name == "Renamed"


async def test_update_refuses_fields_that_are_not_updatable(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        for field in ("tenant_id", "id", "row_version", "provider_id"):
            with pytest.raises(ValueError, match="cannot be updated"):
                await repo.update(row.id, **{field: "x"})
        with pytest.raises(ValueError, match="status"):
            await repo.update(row.id, status="bogus")


async def test_optimistic_lock(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        first = await repo.update(row.id, expected_row_version=1, name="first")
        assert first.row_version == 2
    with pytest.raises(ConflictError, match="changed by someone else"):
        async with store.transaction() as session:
            await IntegrationRepository(session, TENANT_A).update(
                row.id, expected_row_version=1, name="stale"
            )
    async with store.transaction() as session:
        current = await IntegrationRepository(session, TENANT_A).get(row.id)
    assert current.name == "first" and current.row_version == 2


async def test_delete(store: Store) -> None:
    row = await make_integration(store)
    async with store.transaction() as session:
        deleted = await IntegrationRepository(session, TENANT_A).delete(row.id)
    assert deleted.id == row.id and deleted.name == row.name
    async with store.transaction() as session:
        repo = IntegrationRepository(session, TENANT_A)
        with pytest.raises(NotFoundError):
            await repo.get(row.id)
        with pytest.raises(NotFoundError):
            await repo.delete(row.id)


async def test_due_is_cross_tenant_for_the_system(store: Store) -> None:
    now = utcnow()
    a = await make_integration(store, TENANT_A, instance_id="a", syncEnabled=True)
    b = await make_integration(store, TENANT_B, instance_id="b", syncEnabled=True)
    later = await make_integration(store, TENANT_B, instance_id="later", syncEnabled=True)
    off = await make_integration(store, TENANT_A, instance_id="off", syncEnabled=False)
    paused = await make_integration(store, TENANT_A, instance_id="paused", syncEnabled=True)
    async with store.transaction() as session:
        system = IntegrationRepository(session, SYSTEM)
        await system.update(a.id, status="active", next_sync_at=now - timedelta(minutes=2))
        await system.update(b.id, status="active", next_sync_at=now - timedelta(minutes=1))
        await system.update(later.id, status="active", next_sync_at=now + timedelta(hours=1))
        await system.update(off.id, status="active", next_sync_at=now - timedelta(hours=1))
        await system.update(paused.id, status="paused", next_sync_at=now - timedelta(hours=1))
    async with store.transaction() as session:
        system = IntegrationRepository(session, SYSTEM)
        assert [r.id for r in await system.due(now, 10)] == [a.id, b.id]
        assert [r.id for r in await system.due(now, 1)] == [a.id]
        assert [r.id for r in await system.due(now, 10, lock=True)] == [a.id, b.id]
        assert [r.id for r in await IntegrationRepository(session, TENANT_B).due(now, 10)] == [b.id]


async def test_system_scope_reads_across_tenants_but_cannot_create(store: Store) -> None:
    a = await make_integration(store, TENANT_A, instance_id="a")
    b = await make_integration(store, TENANT_B, instance_id="b")
    async with store.transaction() as session:
        system = IntegrationRepository(session, SYSTEM)
        assert {r.id for r in await system.list()} == {a.id, b.id}
        assert (await system.get(b.id)).tenant_id == "tenant-b"
        with pytest.raises(ScopeError, match="for_tenant"):
            await system.create(
                provider_id="salesforce",
                name="x",
                instance_id="x",
                settings=IntegrationSettings(),
                created_by=None,
            )
        scoped = system.for_tenant("tenant-b")
        assert [r.id for r in await scoped.list()] == [b.id]
        with pytest.raises(NotFoundError):
            await scoped.get(a.id)
        with pytest.raises(ScopeError):
            IntegrationRepository(session, TENANT_A).for_tenant("tenant-b")


async def test_a_repository_needs_a_scope(store: Store) -> None:
    async with store.transaction() as session:
        with pytest.raises(TypeError):
            IntegrationRepository(session, "tenant-a")  # type: ignore[arg-type]


async def test_tenant_b_cannot_reach_tenant_a(store: Store) -> None:
    a = await make_integration(store, TENANT_A, **SETTINGS)
    async with store.transaction() as session:
        repo_b = IntegrationRepository(session, TENANT_B)
        with pytest.raises(NotFoundError) as foreign:
            await repo_b.get(a.id)
        with pytest.raises(NotFoundError) as missing:
            await repo_b.get("no-such-id")
        assert str(foreign.value) == str(missing.value).replace("no-such-id", a.id)
        with pytest.raises(NotFoundError):
            await repo_b.update(a.id, name="hijacked")
        with pytest.raises(NotFoundError):
            await repo_b.update(a.id, expected_row_version=1, name="hijacked")
        with pytest.raises(NotFoundError):
            await repo_b.delete(a.id)
        assert await repo_b.list() == []
        assert await repo_b.list(provider_id="salesforce") == []
        assert await repo_b.due(utcnow() + timedelta(days=365), 10) == []
        assert await repo_b.count() == 0
    async with store.transaction() as session:
        unchanged = await IntegrationRepository(session, TENANT_A).get(a.id)
    assert unchanged.name == a.name and unchanged.row_version == 1
    assert unchanged.tenant_id == "tenant-a"
