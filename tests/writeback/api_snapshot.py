"""Every row of every table (for "nothing changed" checks)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select


async def snapshot(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    from castiel_sync.store.schema import metadata

    state: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in metadata().sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = (await conn.execute(select(table).order_by(*order))).all()
            state[table.name] = [tuple(row) for row in rows]
    return state
