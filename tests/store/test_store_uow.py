from __future__ import annotations

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B, make_integration

from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import (
    AuditRepository,
    IntegrationRepository,
    OAuthStateRepository,
)


async def test_a_transaction_commits_or_rolls_back_as_a_whole(store: Store) -> None:
    row = await make_integration(store)
    with pytest.raises(RuntimeError):
        async with store.transaction() as session:
            await IntegrationRepository(session, TENANT_A).update(row.id, name="lost")
            await AuditRepository(session, TENANT_A).record(
                actor_user_id="u",
                actor_role="tenant_admin",
                action="integration.update",
                object_type="integration",
                object_id=row.id,
            )
            raise RuntimeError("boom")
    async with store.transaction() as session:
        assert (await IntegrationRepository(session, TENANT_A).get(row.id)).name == row.name
        assert await AuditRepository(session, SYSTEM).list() == []


async def test_bulk_methods_of_tenant_b_leave_tenant_a_alone(store: Store) -> None:
    integration = await make_integration(store)
    async with store.transaction() as session:
        state = await OAuthStateRepository(session, TENANT_A).create(
            integration_id=integration.id,
            redirect_uri="x",
            verifier_secret_name="x",
            expires_at=utcnow(),
        )
        await AuditRepository(session, TENANT_A).record(
            actor_user_id="u",
            actor_role="tenant_admin",
            action="integration.create",
            object_type="integration",
            object_id=integration.id,
        )
    async with store.transaction() as session:
        assert await OAuthStateRepository(session, TENANT_B).purge_expired() == 0
        assert await AuditRepository(session, TENANT_B).list(object_id=integration.id) == []
    async with store.transaction() as session:
        assert await OAuthStateRepository(session, SYSTEM).purge_expired() == 1
        with pytest.raises(NotFoundError):
            await OAuthStateRepository(session, SYSTEM).consume(state.state)
