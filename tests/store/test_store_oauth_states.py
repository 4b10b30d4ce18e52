from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B, make_integration

from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError, ScopeError
from castiel_sync.store.repositories import OAuthStateRepository


async def _state(store: Store, integration_id: str, minutes: int = 10) -> str:
    async with store.transaction() as session:
        row = await OAuthStateRepository(session, TENANT_A).create(
            integration_id=integration_id,
            redirect_uri="http://127.0.0.1:8000/oauth/callback",
            verifier_secret_name="tenant-tenant-a-salesforce-sales-pkce",
            expires_at=utcnow() + timedelta(minutes=minutes),
        )
    assert row.tenant_id == "tenant-a" and len(row.state) >= 32
    return row.state


async def test_consume_once_from_the_system_scope(store: Store) -> None:
    integration = await make_integration(store)
    state = await _state(store, integration.id)
    async with store.transaction() as session:
        row = await OAuthStateRepository(session, SYSTEM).consume(state)
    assert row.tenant_id == "tenant-a" and row.integration_id == integration.id
    async with store.transaction() as session:
        with pytest.raises(NotFoundError):
            await OAuthStateRepository(session, SYSTEM).consume(state)


async def test_expired_state_is_not_found_and_gone(store: Store) -> None:
    integration = await make_integration(store)
    state = await _state(store, integration.id, minutes=-1)
    async with store.transaction() as session:
        with pytest.raises(NotFoundError) as expired:
            await OAuthStateRepository(session, TENANT_A).consume(state)
    async with store.transaction() as session:
        with pytest.raises(NotFoundError) as unknown:
            await OAuthStateRepository(session, TENANT_A).consume("unknown")
    assert str(expired.value) == str(unknown.value)


async def test_purge_expired(store: Store) -> None:
    integration = await make_integration(store)
    old = await _state(store, integration.id, minutes=-1)
    fresh = await _state(store, integration.id)
    async with store.transaction() as session:
        assert await OAuthStateRepository(session, SYSTEM).purge_expired() == 1
    async with store.transaction() as session:
        repo = OAuthStateRepository(session, TENANT_A)
        assert (await repo.consume(fresh)).state == fresh
        with pytest.raises(NotFoundError):
            await repo.consume(old)


async def test_cross_tenant_and_scope_rules(store: Store) -> None:
    integration = await make_integration(store)
    state = await _state(store, integration.id)
    async with store.transaction() as session:
        repo_b = OAuthStateRepository(session, TENANT_B)
        with pytest.raises(NotFoundError):
            await repo_b.consume(state)
        with pytest.raises(NotFoundError):  # B cannot start a flow for A's integration
            await repo_b.create(
                integration_id=integration.id,
                redirect_uri="x",
                verifier_secret_name="x",
                expires_at=utcnow() + timedelta(minutes=5),
            )
        with pytest.raises(ScopeError):
            await OAuthStateRepository(session, SYSTEM).create(
                integration_id=integration.id,
                redirect_uri="x",
                verifier_secret_name="x",
                expires_at=utcnow() + timedelta(minutes=5),
            )
    async with store.transaction() as session:  # B's attempt left it usable for A
        assert (await OAuthStateRepository(session, TENANT_A).consume(state)).state == state
