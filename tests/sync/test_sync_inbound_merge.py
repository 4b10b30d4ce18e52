"""Inbound conflicts: three-way merge against the last synced snapshot, write-back of the
fields Castiel won, manual conflicts (deduplicated), decisions in the shard's history."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sync_support import ENTITY, Harness, make_harness

from castiel_sync.domain.events import WRITE_BACK_REQUESTED
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.repositories.shards import ShardRepository


async def castiel_edit(h: Harness, external_id: str, **changes: object) -> None:
    """A user's edit through Castiel (at the emulator's "now"): new data, version + 1."""
    shard = await h.shard_by_external(external_id)
    data = {**shard.structured_data, **changes}
    async with h.store.transaction() as session:
        await ShardRepository(session, h.scope).update_many(
            [{"id": shard.id, "structured_data": data, "version": shard.version + 1,
              "updated_at": h.emulator.clock.now()}]
        )  # fmt: skip


async def imported(engine: AsyncEngine, mode: str) -> Harness:
    h = await make_harness(engine, direction="bidirectional", conflictResolution=mode)
    h.emulator.store[ENTITY].create(
        {"name": "Dee", "email": "dee@x.io", "city": "Oslo", "score": "1"}, id="m1"
    )
    await h.engine().run_to_completion(h.job(sync_type="incremental"))
    return h


async def test_changes_to_different_fields_both_survive(engine: AsyncEngine) -> None:
    h = await imported(engine, "last_write_wins")
    await castiel_edit(h, "m1", name="Dee Castiel")
    h.emulator.clock.advance(30)
    h.emulator.store[ENTITY].update("m1", {"city": "Rome"})

    (outcome,) = await h.engine().run_to_completion(h.job(sync_type="incremental"))

    assert outcome.counts["updated"] == 1
    shard = await h.shard_by_external("m1")
    assert shard.structured_data["name"] == "Dee Castiel"
    assert shard.structured_data["address"] == {"city": "Rome"}
    assert shard.version == 3
    (write_back,) = await h.outbox(WRITE_BACK_REQUESTED)
    data = write_back.event["data"]
    assert (data["shardId"], data["externalId"], data["operation"]) == (shard.id, "m1", "update")
    assert write_back.session_key == h.integration_id
    (rel,) = await h.relationships()
    assert rel.sync_status == "pending"
    assert rel.last_synced_snapshot["name"] == "Dee"  # agreed only once written back
    assert rel.last_synced_snapshot["address"] == {"city": "Rome"}
    (entry,) = shard.history
    winners = {d["field"]: d["winner"] for d in entry["decisions"]}
    assert winners == {"name": "castiel", "address.city": "external"}


@pytest.mark.parametrize(
    ("mode", "winner"),
    [("castiel_wins", "Castiel"), ("external_wins", "External"), ("last_write_wins", "External")],
)
async def test_same_field_each_mode(engine: AsyncEngine, mode: str, winner: str) -> None:
    h = await imported(engine, mode)
    await castiel_edit(h, "m1", name="Castiel")
    h.emulator.clock.advance(30)  # the external edit is later (last_write_wins: external)
    h.emulator.store[ENTITY].update("m1", {"name": "External"})
    await h.engine().run_to_completion(h.job(sync_type="incremental"))
    shard = await h.shard_by_external("m1")
    assert shard.structured_data["name"] == winner
    write_backs = await h.outbox(WRITE_BACK_REQUESTED)
    assert len(write_backs) == (1 if winner == "Castiel" else 0)
    (rel,) = await h.relationships()
    assert rel.sync_status == ("pending" if winner == "Castiel" else "synced")
    if winner == "External":
        assert rel.last_synced_version == shard.version


async def test_manual_mode_opens_one_conflict_and_keeps_the_castiel_value(
    engine: AsyncEngine,
) -> None:
    h = await imported(engine, "manual")
    await castiel_edit(h, "m1", name="Castiel")
    h.emulator.clock.advance(30)
    h.emulator.store[ENTITY].update("m1", {"name": "External"})
    sync = h.engine()

    (outcome,) = await sync.run_to_completion(h.job(sync_type="incremental"))
    assert outcome.counts["conflicts"] == 1
    h.emulator.clock.advance(30)
    h.emulator.store[ENTITY].update("m1", {"name": "External again", "city": "Lima"})
    await sync.run_to_completion(h.job(sync_type="incremental"))

    shard = await h.shard_by_external("m1")
    assert shard.structured_data["name"] == "Castiel"
    assert shard.structured_data["address"] == {"city": "Lima"}
    async with h.store.transaction() as session:
        conflicts = await ConflictRepository(session, h.scope).list(shard_id=shard.id)
    (conflict,) = conflicts  # found twice, opened once
    assert (conflict.field, conflict.base_value, conflict.castiel_value) == (
        "name", "Dee", "Castiel",
    )  # fmt: skip
    assert conflict.external_value == "External"
    assert await h.outbox(WRITE_BACK_REQUESTED) == []
    assert any(d["winner"] == "pending" for e in shard.history for d in e.get("decisions", []))
