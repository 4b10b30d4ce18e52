"""Short write transactions that behave the same on SQLite and PostgreSQL.

SQLite has one writer: a deferred transaction that reads and then writes fails at once
(``SQLITE_BUSY``) when another process wrote in between, so runtime writes start with
``BEGIN IMMEDIATE`` (the write lock is taken before anything is read; other writers wait
in the busy handler). PostgreSQL uses an ordinary transaction and row locks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession


@asynccontextmanager
async def write_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a write transaction: committed at the end, rolled back on error."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            # Begun here, so a session bound to this connection joins the transaction
            # instead of owning (and, on close, rolling back) one of its own.
            await conn.begin()
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


@asynccontextmanager
async def write_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """An ORM session (for repositories and the outbox) inside :func:`write_connection`."""
    async with write_connection(engine) as conn:
        session = AsyncSession(bind=conn, expire_on_commit=False)
        try:
            yield session
            # The session joined the connection's transaction, so its commit only flushes
            # (the connection commits below); the outbox writes its events on that commit.
            await session.commit()
        finally:
            await session.close()
