from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.store.base import session_factory
from castiel_sync.store.tables import IntegrationProviderRow


async def test_datetimes_come_back_aware_utc(engine: AsyncEngine) -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    async with session_factory(engine)() as session, session.begin():
        session.add(
            IntegrationProviderRow(
                id="p",
                name="P",
                category="crm",
                status="active",
                audience="tenant",
                auth_type="oauth2",
                definition={"k": [1, 2]},
                created_at=moment,
            )
        )
    async with session_factory(engine)() as session:
        row = (await session.execute(select(IntegrationProviderRow))).scalar_one()
    assert row.created_at == moment
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timedelta(0)
    assert row.definition == {"k": [1, 2]}


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        session.add(
            IntegrationProviderRow(
                id="p",
                name="P",
                category="crm",
                status="active",
                audience="tenant",
                auth_type="oauth2",
                definition={},
                created_at=datetime(2026, 1, 1),
            )
        )
        with pytest.raises(Exception, match="naive datetime"):
            await session.flush()
    assert UTC
