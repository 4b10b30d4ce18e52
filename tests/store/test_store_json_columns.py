"""JSON columns go through orjson, with the standard library for what orjson refuses."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.store.base import json_dumps, json_loads, session_factory, utcnow
from castiel_sync.store.tables import OutboxRow


def test_values_orjson_refuses_still_serialize() -> None:
    huge = 2**70  # a provider's numeric id past 64 bits
    assert json_loads(json_dumps({"id": huge})) == {"id": huge}
    assert json_loads(json_dumps({1: "a"})) == {"1": "a"}  # as json.dumps: keys become text
    assert math.isnan(json_loads('{"x": NaN}')["x"])  # rows written by the standard library


async def test_json_column_round_trip(engine: AsyncEngine) -> None:
    event = {"id": "e1", "type": "t", "data": {"big": 2**70, "text": "é\u2028", "n": None}}
    async with session_factory(engine).begin() as session:
        session.add(OutboxRow(tenant_id="t1", event_type="t", event=event, created_at=utcnow()))
    async with session_factory(engine)() as session:
        stored = (await session.execute(select(OutboxRow.event))).scalar_one()
    assert stored == event


async def test_stored_text_is_compact_json(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL stores JSONB, not the serializer's text")
    async with session_factory(engine).begin() as session:
        session.add(OutboxRow(tenant_id="t1", event_type="t", event={"a": 1}, created_at=utcnow()))
    async with engine.connect() as conn:
        raw = (await conn.execute(text("SELECT event FROM outbox"))).scalar_one()
    assert raw == '{"a":1}'
