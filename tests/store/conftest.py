"""Fixtures for the store's tests: a Store on each backend with a seeded provider catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from store_helpers import SYSTEM

from castiel_sync.store import Store
from castiel_sync.store.repositories import ProviderRepository


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Store]:
    store = Store(engine)
    async with store.transaction() as session:
        providers = ProviderRepository(session, SYSTEM)
        for pid, category, status, audience in [
            ("salesforce", "crm", "active", "tenant"),
            ("hubspot", "crm", "beta", "tenant"),
            ("gong", "communication", "deprecated", "tenant"),
            ("google_news", "news", "active", "system"),
        ]:
            await providers.upsert(
                provider_id=pid,
                name=pid.title(),
                category=category,
                status=status,
                audience=audience,
                auth_type="oauth2",
                definition={"id": pid},
            )
    yield store
