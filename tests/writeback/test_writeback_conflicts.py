"""Both sides changed: different fields both survive in both systems (either order of
the two workers), each conflict mode end to end, and manual resolution syncs both ways."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from writeback_support import ENTITY, Harness, imported

from castiel_sync.store.repositories.conflicts import ConflictRepository


async def both_edit(h: Harness, castiel: dict, external: dict) -> None:
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, castiel, actor="user:alice")
    h.emulator.clock.advance(60)
    h.emulator.store[ENTITY].update("c1", external)
    h.emulator.clock.advance(60)


@pytest.mark.parametrize("order", ["outbound_first", "inbound_first"])
async def test_concurrent_edits_to_different_fields_both_survive(
    engine: AsyncEngine, order: str
) -> None:
    h = await imported(engine)
    await both_edit(h, {"name": "Ada Lovelace"}, {"city": "Paris"})
    if order == "outbound_first":
        await h.run_outbound()
        await h.sync()
    else:
        await h.sync()
        await h.run_outbound()
    await h.run_outbound()
    shard = await h.shard()
    assert shard.structured_data["name"] == "Ada Lovelace"
    assert shard.structured_data["address"]["city"] == "Paris"
    assert h.external()["name"] == "Ada Lovelace" and h.external()["city"] == "Paris"
    # Settled: another sync and another worker pass change nothing.
    version, writes = shard.version, len(h.writes())
    h.emulator.clock.advance(60)
    await h.sync()
    await h.run_outbound()
    assert (await h.shard()).version == version and len(h.writes()) == writes


@pytest.mark.parametrize(
    ("mode", "winner"),
    [("castiel_wins", "castiel"), ("external_wins", "external"), ("last_write_wins", "external")],
)
async def test_conflict_modes_end_to_end(engine: AsyncEngine, mode: str, winner: str) -> None:
    h = await imported(engine, conflictResolution=mode)
    # Castiel's edit is at 2026 on the engine clock; the external edit is made later.
    h.emulator.clock.advance(3 * 365 * 86400)
    await both_edit(h, {"address.city": "Bergen"}, {"city": "Paris"})
    await h.sync()
    await h.run_outbound()
    expected = "Bergen" if winner == "castiel" else "Paris"
    shard = await h.shard()
    assert shard.structured_data["address"]["city"] == expected
    assert h.external()["city"] == expected
    [entry] = [e for e in shard.history if e.get("mode") == mode]
    [decision] = [d for d in entry["decisions"] if d["field"] == "address.city"]
    assert decision["winner"] == winner and mode in decision["reason"]


async def test_manual_conflict_resolved_syncs_both_ways(engine: AsyncEngine) -> None:
    h = await imported(engine, conflictResolution="manual")
    await both_edit(h, {"address.city": "Bergen", "name": "Ada L."}, {"city": "Paris"})
    await h.sync()
    await h.run_outbound()
    # Open conflict: Castiel keeps its value, the provider keeps its value.
    assert (await h.shard()).structured_data["address"]["city"] == "Bergen"
    assert h.external()["city"] == "Paris" and h.external()["name"] == "Ada L."
    async with h.store.transaction() as session:
        [conflict] = await ConflictRepository(session, h.scope).list()
    assert conflict.field == "address.city" and conflict.external_value == "Paris"
    result = await h.conflicts_service().resolve(
        h.scope, conflict.id, "value", "Lyon", actor="user:admin"
    )
    assert result.write_back is not None and result.conflict.status == "resolved"
    await h.run_outbound()
    shard = await h.shard()
    assert shard.structured_data["address"]["city"] == "Lyon" == h.external()["city"]
    [entry] = [e for e in shard.history if e.get("action") == "conflict_resolved"]
    assert entry["decisions"][0]["winner"] == "admin" and entry["source"] == "user:admin"
    # The echo is recognised; the conflict does not come back.
    h.emulator.clock.advance(60)
    version = shard.version
    await h.sync()
    assert (await h.shard()).version == version
    async with h.store.transaction() as session:
        assert await ConflictRepository(session, h.scope).list() == []


async def test_manual_resolution_taking_external_writes_nothing_out(engine: AsyncEngine) -> None:
    h = await imported(engine, conflictResolution="manual")
    await both_edit(h, {"address.city": "Bergen"}, {"city": "Paris"})
    await h.sync()
    await h.run_outbound()
    async with h.store.transaction() as session:
        [conflict] = await ConflictRepository(session, h.scope).list()
    writes = len(h.writes())
    result = await h.conflicts_service().resolve(h.scope, conflict.id, "external", actor="u:a")
    assert result.write_back is None
    await h.run_outbound()
    assert (await h.shard()).structured_data["address"]["city"] == "Paris"
    assert len(h.writes()) == writes
