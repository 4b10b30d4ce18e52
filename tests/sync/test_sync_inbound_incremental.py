"""Incremental sync (high-water mark, ties, look-back) and deletes (full-sync detection with
grace, incomplete fetch never deletes, provider-reported deletions, shared shards)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sync_support import ENTITY, add_integration, make_harness

from castiel_sync.domain.events import SHARD_DELETED
from castiel_sync.sync import EntityCheckpoint, RetryableSyncError


async def test_records_sharing_the_high_water_instant_across_a_page_boundary(
    engine: AsyncEngine,
) -> None:
    h = await make_harness(engine)
    await h.set_limit(10)
    h.seed(15)  # all 15 at one instant: the first job's page ends inside the tie
    sync = h.engine()
    await sync.run_to_completion(h.job(sync_type="incremental"))
    checkpoint = EntityCheckpoint.load((await h.integration()).cursors, ENTITY)
    assert checkpoint.since == h.emulator.clock.now()
    assert len(checkpoint.since_ids) == 15

    # Five more records at that very instant, sorting before and after the old ones.
    for n in (3, 99, 100, 101, 102):
        h.emulator.store[ENTITY].create({"name": f"late {n}"}, id=f"c{n:05d}x")
    outcomes = await sync.run_to_completion(h.job(sync_type="incremental"))
    assert sum(o.counts["created"] for o in outcomes) == 5
    assert len(await h.shards()) == 20


async def test_look_back_refetches_a_window_and_overlap_is_harmless(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(10, step_seconds=10)  # t0, t10, ... t90
    plain = h.engine()
    await plain.run_to_completion(h.job(sync_type="incremental"))

    (outcome,) = await plain.run_to_completion(h.job(sync_type="incremental"))
    assert outcome.counts["fetched"] == 1  # only the record at the mark itself

    windowed = h.engine(look_back=timedelta(seconds=35))
    (outcome,) = await windowed.run_to_completion(h.job(sync_type="incremental"))
    assert outcome.counts["fetched"] == 4 and outcome.counts["unchanged"] == 4
    assert {s.version for s in await h.shards()} == {1}


async def test_full_sync_detects_records_gone_upstream_after_the_grace(
    engine: AsyncEngine,
) -> None:
    h = await make_harness(engine, deleteGraceSeconds=3600)
    h.seed(8)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    for gone in ("c00002", "c00005"):
        h.emulator.store[ENTITY].delete(gone)
    h.clock.advance(1)

    await sync.run_to_completion(h.job())
    rels = {r.external_id: r for r in await h.relationships()}
    assert rels["c00002"].deleted_upstream_at is not None
    assert rels["c00002"].sync_status == "synced"  # pending: inside the grace period
    assert len(await h.shards()) == 8 and await h.outbox(SHARD_DELETED) == []

    h.clock.advance(3601)
    (outcome,) = await sync.run_to_completion(h.job())  # the next run reaps
    assert outcome.status == "completed"
    rels = {r.external_id: r for r in await h.relationships()}
    assert rels["c00002"].sync_status == rels["c00005"].sync_status == "deleted"
    assert len(await h.shards()) == 6
    deleted = await h.outbox(SHARD_DELETED)
    assert len(deleted) == 2 and {e.event["data"]["version"] for e in deleted} == {2}

    # The record comes back upstream: the shard is revived, not duplicated.
    h.emulator.store[ENTITY].create({"name": "back", "email": "b@x.io"}, id="c00002")
    await sync.run_to_completion(h.job())
    assert len(await h.shards()) == 7
    revived = await h.shard_by_external("c00002")
    assert revived.deleted_at is None and revived.version == 3


async def test_a_record_seen_again_within_the_grace_is_not_deleted(engine: AsyncEngine) -> None:
    h = await make_harness(engine, deleteGraceSeconds=60)
    h.seed(3)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    h.emulator.store[ENTITY].delete("c00001")
    h.clock.advance(1)
    await sync.run_to_completion(h.job())
    h.emulator.store[ENTITY].create({"name": "Person 1"}, id="c00001")  # restored
    h.clock.advance(1)
    await sync.run_to_completion(h.job())
    h.clock.advance(120)
    await sync.run_to_completion(h.job())
    assert len(await h.shards()) == 3
    assert all(r.deleted_upstream_at is None for r in await h.relationships())


async def test_an_incomplete_full_fetch_never_deletes(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    await h.set_limit(10)
    h.seed(30)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    for n in range(20, 30):
        h.emulator.store[ENTITY].delete(f"c{n:05d}")
    h.clock.advance(1)

    first = await sync.run_job(h.job())  # one page of the new full run committed
    assert first.status == "continued"
    h.emulator.faults.server_error(times=50)
    with pytest.raises(RetryableSyncError):
        await sync.run_job(first.follow_ups[0])
    assert len(await h.shards()) == 30  # the failed run deleted nothing
    assert all(r.deleted_upstream_at is None for r in await h.relationships())
    executions = await h.executions()
    assert executions[-1].status == "failed" and "retried" in (executions[-1].error or "")

    h.emulator.faults.clear()
    outcomes = await sync.run_to_completion(first.follow_ups[0])  # the redelivery resumes
    assert outcomes[-1].status == "completed"
    assert len(await h.shards()) == 20


async def test_provider_reported_deletions_tombstone(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(4, step_seconds=1)
    sync = h.engine()
    await sync.run_to_completion(h.job(sync_type="incremental"))
    h.emulator.clock.advance(5)
    h.emulator.store[ENTITY].delete("c00001")
    (outcome,) = await sync.run_to_completion(h.job(sync_type="incremental"))
    assert outcome.counts["deleted"] == 1
    assert len(await h.shards()) == 3
    assert len(await h.outbox(SHARD_DELETED)) == 1


async def test_a_shard_another_relationship_holds_is_not_tombstoned(engine: AsyncEngine) -> None:
    rules = [{"shardType": "c_contact", "fields": ["email"]}]
    h = await make_harness(engine, matchRules=rules)
    h.seed(2)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    # A second integration of the tenant links its record to the same shard by email.
    second = await add_integration(h.store, h.tenant, "support", matchRules=rules)
    h2 = type(h)(h.store, h.emulator, h.clock, integration_id=second)
    await h2.engine().run_to_completion(h2.job())
    assert len(await h.shards()) == 2 and len(await h.relationships()) == 4

    h.emulator.store[ENTITY].delete("c00000")
    h.clock.advance(1)
    await sync.run_to_completion(h.job())  # only the first integration sees it gone
    assert len(await h.shards()) == 2
    rels = [r for r in await h.relationships() if r.external_id == "c00000"]
    assert sorted(r.sync_status for r in rels) == ["deleted", "synced"]
