"""One obvious way to open a transaction.

store = Store(engine)                      # or Store.from_url(url)
async with store.transaction() as session:  # commits on success, rolls back on error
    repo = IntegrationRepository(session, TenantScope(tenant_id))
    ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from castiel_sync.store.base import create_engine, session_factory


class Store:
    """Holds the engine and its session factory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = session_factory(engine)

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Store:
        return cls(create_engine(url, **engine_kwargs))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction: committed when the block ends, rolled back if it
        raises. Rows stay readable after commit (``expire_on_commit=False``)."""
        async with self.sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


__all__ = ["Store"]
