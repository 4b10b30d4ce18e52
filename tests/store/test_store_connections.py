from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B, make_integration

from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError, ScopeError
from castiel_sync.store.repositories import ConnectionRepository, IntegrationRepository
from castiel_sync.store.tables import IntegrationConnectionRow


async def _connect(store: Store, integration_id: str, **kw: object) -> IntegrationConnectionRow:
    args: dict[str, object] = {
        "scope": "tenant",
        "credential_secret_name": "tenant-tenant-a-salesforce-sales-oauth",
        "token_expires_at": utcnow() + timedelta(hours=1),
        "status": "active",
    }
    args.update(kw)
    async with store.transaction() as session:
        return await ConnectionRepository(session, TENANT_A).upsert(integration_id, **args)  # type: ignore[arg-type]


async def test_upsert_get_for_and_list(store: Store) -> None:
    integration = await make_integration(store)
    first = await _connect(store, integration.id)
    assert first.tenant_id == "tenant-a" and first.credential_version == 1
    again = await _connect(store, integration.id, credential_secret_name="renamed")
    assert again.id == first.id and again.credential_version == 2
    assert again.credential_secret_name == "renamed"
    user = await _connect(store, integration.id, scope="user", user_id="u1")
    async with store.transaction() as session:
        repo = ConnectionRepository(session, TENANT_A)
        assert (await repo.get_for(integration.id, "tenant")).id == first.id
        assert (await repo.get_for(integration.id, "user", "u1")).id == user.id
        with pytest.raises(NotFoundError):
            await repo.get_for(integration.id, "user", "u2")
        assert {c.id for c in await repo.list()} == {first.id, user.id}
        assert len(await repo.list(integration.id)) == 2
        assert await repo.list("other") == []
        with pytest.raises(ValueError, match="user id"):
            await repo.upsert(integration.id, scope="user", credential_secret_name="x", user_id="")
        with pytest.raises(ValueError, match="scope"):
            await repo.upsert(integration.id, scope="galaxy", credential_secret_name="x")


async def test_set_status_delete_and_cascade(store: Store) -> None:
    integration = await make_integration(store)
    conn = await _connect(store, integration.id)
    async with store.transaction() as session:
        repo = ConnectionRepository(session, TENANT_A)
        assert (await repo.set_status(conn.id, "revoked")).status == "revoked"
        deleted = await repo.delete(conn.id)
        assert deleted.id == conn.id
        with pytest.raises(NotFoundError):
            await repo.get(conn.id)
    await _connect(store, integration.id)
    async with store.transaction() as session:
        await IntegrationRepository(session, TENANT_A).delete(integration.id)
    async with store.transaction() as session:
        assert await ConnectionRepository(session, TENANT_A).list() == []


async def test_tenant_b_cannot_reach_tenant_a_connections(store: Store) -> None:
    integration = await make_integration(store)
    conn = await _connect(store, integration.id)
    async with store.transaction() as session:
        repo_b = ConnectionRepository(session, TENANT_B)
        with pytest.raises(NotFoundError):
            await repo_b.get(conn.id)
        with pytest.raises(NotFoundError):
            await repo_b.get_for(integration.id, "tenant")
        assert await repo_b.list() == []
        assert await repo_b.list(integration.id) == []
        with pytest.raises(NotFoundError):
            # B cannot attach a connection to A's integration
            await repo_b.upsert(integration.id, scope="tenant", credential_secret_name="evil")
        with pytest.raises(NotFoundError):
            await repo_b.set_status(conn.id, "revoked")
        with pytest.raises(NotFoundError):
            await repo_b.delete(conn.id)
        with pytest.raises(NotFoundError):
            await repo_b.record_refresh(
                conn.id, expected_credential_version=1, token_expires_at=None, ok=False
            )
        assert await repo_b.expiring(utcnow() + timedelta(days=1)) == []
    async with store.transaction() as session:
        same = await ConnectionRepository(session, TENANT_A).get(conn.id)
    assert same.status == "active" and same.credential_version == 1
    assert same.credential_secret_name == conn.credential_secret_name


async def test_system_scope(store: Store) -> None:
    integration = await make_integration(store)
    soon = await _connect(store, integration.id, token_expires_at=utcnow() + timedelta(minutes=5))
    other = await make_integration(store, TENANT_B, instance_id="b")
    async with store.transaction() as session:
        b_conn = await ConnectionRepository(session, TENANT_B).upsert(
            other.id,
            scope="tenant",
            credential_secret_name="b",
            token_expires_at=utcnow() + timedelta(days=2),
        )
    async with store.transaction() as session:
        system = ConnectionRepository(session, SYSTEM)
        with pytest.raises(ScopeError):
            await system.upsert(integration.id, scope="tenant", credential_secret_name="x")
        assert [c.id for c in await system.expiring(utcnow() + timedelta(hours=1))] == [soon.id]
        assert {c.id for c in await system.expiring(utcnow() + timedelta(days=3))} == {
            soon.id,
            b_conn.id,
        }
        assert len(await system.list()) == 2
        assert await system.record_refresh(
            b_conn.id, expected_credential_version=1, token_expires_at=utcnow(), ok=True
        )


async def test_record_refresh_is_compare_and_swap(store: Store) -> None:
    integration = await make_integration(store)
    conn = await _connect(store, integration.id)
    expires = utcnow() + timedelta(hours=2)
    async with store.transaction() as session:
        repo = ConnectionRepository(session, SYSTEM)
        assert await repo.record_refresh(
            conn.id, expected_credential_version=1, token_expires_at=expires, ok=True
        )
        assert not await repo.record_refresh(
            conn.id, expected_credential_version=1, token_expires_at=expires, ok=True
        )
        assert await repo.record_refresh(
            conn.id, expected_credential_version=2, token_expires_at=None, ok=False, error="boom"
        )
    async with store.transaction() as session:
        row = await ConnectionRepository(session, TENANT_A).get(conn.id)
    assert row.credential_version == 3 and row.status == "refresh_failed"
    assert row.token_expires_at == expires  # a failed refresh keeps the old expiry
    assert [h["ok"] for h in row.refresh_history] == [True, False]
    assert row.refresh_history[-1]["error"] == "boom"


async def test_two_concurrent_refreshers_one_wins(store: Store) -> None:
    integration = await make_integration(store)
    conn = await _connect(store, integration.id)

    async def refresher(name: str) -> bool:
        async with store.transaction() as session:
            return await ConnectionRepository(session, SYSTEM).record_refresh(
                conn.id,
                expected_credential_version=1,
                token_expires_at=utcnow() + timedelta(hours=1),
                ok=True,
                error=None,
            )

    results = await asyncio.gather(refresher("one"), refresher("two"))
    assert sorted(results) == [False, True]
    async with store.transaction() as session:
        row = await ConnectionRepository(session, TENANT_A).get(conn.id)
    assert row.credential_version == 2 and len(row.refresh_history) == 1


async def test_refresh_lease(store: Store) -> None:
    integration = await make_integration(store)
    conn = await _connect(store, integration.id)
    now = utcnow()
    async with store.transaction() as session:
        system = ConnectionRepository(session, SYSTEM)
        assert await system.try_lease(conn.id, now=now, until=now + timedelta(minutes=5))
        assert not await system.try_lease(conn.id, now=now, until=now + timedelta(minutes=5))
        later = now + timedelta(minutes=6)  # the first lease ran out
        assert await system.try_lease(conn.id, now=later, until=later + timedelta(minutes=5))
        with pytest.raises(NotFoundError):
            await ConnectionRepository(session, TENANT_B).try_lease(conn.id, now=later, until=later)
        assert await system.record_refresh(
            conn.id, expected_credential_version=1, token_expires_at=later, ok=True
        )
        assert await system.try_lease(conn.id, now=now, until=now + timedelta(minutes=1))
