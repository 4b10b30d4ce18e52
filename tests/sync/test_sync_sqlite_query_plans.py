"""On SQLite, the sync engine's lookups by a key ``IN`` list search the key's index, not
the ``tenant_id`` index (which holds every row of the tenant: without ``ANALYZE``
statistics SQLite's planner would otherwise pick it, and a page's lookup would scan the
whole tenant). A plan check, not a timing: the query plans of the statements a sync runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sync_support import ENTITY, make_harness

TENANT_INDEXES = ("ix_shard_external_relationships_tenant_id", "ix_shards_tenant_type")


async def test_page_lookups_do_not_scan_the_tenant(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner; PostgreSQL plans from its statistics")
    h = await make_harness(engine)
    h.seed(60)
    sync = h.engine()
    await sync.run_to_completion(h.job())

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if " IN (" in statement and statement.lstrip().startswith(("SELECT", "UPDATE")):
            captured.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        h.emulator.clock.advance(60)
        for n in range(5):
            h.emulator.store[ENTITY].update(f"c{n:05d}", {"city": "Rome"})
        await sync.run_to_completion(h.job())  # a re-sync with changes
        await sync.run_to_completion(h.job(sync_type="incremental"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)

    statements = {statement for statement, _ in captured}
    assert any("shard_external_relationships.external_id IN" in s for s in statements)
    assert any(s.startswith("UPDATE shard_external_relationships") for s in statements)
    assert any("FROM shards" in s and "shards.id IN" in s for s in statements)
    async with engine.connect() as conn:
        for statement, params in captured:
            plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)).all()
            details = " | ".join(str(row[-1]) for row in plan)
            assert not any(index in details for index in TENANT_INDEXES), (statement, details)
