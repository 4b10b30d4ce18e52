"""Full sync: bounded jobs and follow-ups to completion, executions, no-op re-sync,
tenant isolation."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sync_support import CONTACT_MAPPINGS, ENTITY, OTHER_TENANT, make_harness, settings

from castiel_sync.domain.events import SHARD_CREATED, SYNC_REQUESTED, CloudEvent
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.tables import ExternalRelationshipRow, OutboxRow, ShardRow
from castiel_sync.sync import EntityCheckpoint, SyncJob


async def test_bounded_jobs_follow_up_until_the_import_is_complete(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(230)
    await h.set_limit(40)  # pages of 40 from a provider whose pages hold up to 100
    sync = h.engine()

    outcomes = await sync.run_to_completion(h.job())

    assert [o.status for o in outcomes] == ["continued"] * 5 + ["completed"]
    assert all(sum(o.counts.get("fetched", 0) for o in [x]) <= 40 for x in outcomes)
    shards = await h.shards()
    assert len(shards) == 230
    rels = await h.relationships()
    assert sorted(r.external_id for r in rels) == [f"c{n:05d}" for n in range(230)]
    assert {s.version for s in shards} == {1}
    first = await h.shard_by_external("c00007")
    assert first.structured_data == {
        "name": "Person 7", "email": "person7@example.com", "address": {"city": "Oslo"},
        "score": 7,
    }  # fmt: skip

    # Every job has an execution; follow-ups name the run's first execution as parent.
    executions = await h.executions()
    assert len(executions) == 6
    run_id = outcomes[0].run_id
    assert executions[0].id == run_id and executions[0].parent_execution_id is None
    assert all(e.parent_execution_id == run_id for e in executions[1:])
    assert [e.trigger for e in executions] == ["manual"] + ["followup"] * 5
    assert all(e.status == "succeeded" for e in executions)
    assert sum(e.created for e in executions) == 230
    assert sum(e.fetched for e in executions) == 230
    assert all(e.duration_ms is not None and e.finished_at for e in executions)

    # The follow-ups were published through the outbox, one per continued job.
    followups = await h.outbox(SYNC_REQUESTED)
    assert len(followups) == 5
    jobs = [SyncJob.from_event(CloudEvent.from_dict(r.event)) for r in followups]
    assert [j.trigger for j in jobs] == ["followup"] * 5
    assert {j.run_id for j in jobs} == {run_id}
    assert len(await h.outbox(SHARD_CREATED)) == 230

    # The run is complete: checkpoint closed, sync times advanced.
    integration = await h.integration()
    checkpoint = EntityCheckpoint.load(integration.cursors, ENTITY)
    assert checkpoint.run is None and checkpoint.last_run_id == run_id
    assert integration.last_sync_at is not None
    assert integration.next_sync_at is not None
    assert integration.next_sync_at > integration.last_sync_at

    # A follow-up the bus delivers again after the run ended is a no-op.
    again = await sync.run_job(jobs[2])
    assert again.status == "stale"
    assert await h.count(ShardRow) == 230


async def test_unchanged_resync_writes_nothing(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(120)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    before = {s.id: (s.version, s.updated_at) for s in await h.shards()}
    events = await h.count(OutboxRow)

    for sync_type in ("full", "incremental"):
        outcomes = await sync.run_to_completion(h.job(sync_type=sync_type))
        assert outcomes[-1].status == "completed"
        assert outcomes[-1].counts["unchanged"] == 120
        assert outcomes[-1].counts["created"] == outcomes[-1].counts["updated"] == 0

    assert {s.id: (s.version, s.updated_at) for s in await h.shards()} == before
    assert await h.count(OutboxRow) == events  # no shard event, no follow-up
    assert await h.count(ExternalRelationshipRow) == 120


async def test_a_changed_record_is_one_new_version_and_one_event(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(10, step_seconds=1)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    h.emulator.clock.advance(60)
    h.emulator.store[ENTITY].update("c00003", {"city": "Rome"})
    h.emulator.store[ENTITY].update("c00004", {"unmapped": "ignored"})  # not a mapped field

    (outcome,) = await sync.run_to_completion(h.job(sync_type="incremental"))

    # The two changed records, and the one at the previous high-water mark (inclusive).
    assert Counter({k: v for k, v in outcome.counts.items() if v}) == Counter(
        fetched=3, updated=1, unchanged=2
    )
    changed = await h.shard_by_external("c00003")
    assert changed.version == 2 and changed.structured_data["address"] == {"city": "Rome"}
    assert (await h.shard_by_external("c00004")).version == 1
    updates = await h.outbox("Castiel.Shard.Updated")
    assert [u.event["data"]["changedFields"] for u in updates] == [["address.city"]]


async def test_unmappable_values_are_reported_per_record(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(3)
    h.emulator.store[ENTITY].update("c00001", {"score": "not a number"})
    (outcome,) = await h.engine().run_to_completion(h.job())
    assert outcome.counts["created"] == 3 and outcome.counts["failed"] == 0
    (execution,) = await h.executions()
    (error,) = execution.record_errors
    assert error["externalId"] == "c00001" and error["field"] == "score"
    assert len(error["value"]) <= 80
    assert "score" not in (await h.shard_by_external("c00001")).structured_data


async def test_all_entities_fan_out_one_job_each(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(5)
    outcomes = await h.engine().run_to_completion(h.job(entity=None))
    assert [o.status for o in outcomes] == ["fanned_out", "completed"]
    assert outcomes[1].job.entity == ENTITY
    assert await h.count(ShardRow) == 5


async def test_another_tenants_integration_is_not_found(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(5)
    intruder = SyncJob(tenant_id=OTHER_TENANT, integration_id=h.integration_id, entity=ENTITY)
    with pytest.raises(NotFoundError):
        await h.engine().run_job(intruder)
    with pytest.raises(NotFoundError):
        await h.engine().apply_webhook_events(OTHER_TENANT, h.integration_id, [])
    assert await h.count(ShardRow) == 0
    assert await h.executions() == []
    assert (await h.integration()).cursors == {}


async def test_changed_mappings_are_applied_to_records_whose_time_did_not_change(
    engine: AsyncEngine,
) -> None:
    """Equal provider modification times skip re-mapping only while the mappings are the
    ones the last complete full run applied."""
    h = await make_harness(engine)
    h.seed(3)
    sync = h.engine()
    await sync.run_to_completion(h.job())
    (again,) = await sync.run_to_completion(h.job())
    assert again.counts["unchanged"] == 3

    mappings = [*CONTACT_MAPPINGS[:2], {"external": "city", "castiel": "town"}]
    await h.update_settings(settings(entityMappings=[
        {"entity": ENTITY, "shardType": "c_contact", "fieldMappings": mappings}
    ]))  # fmt: skip
    (remapped,) = await sync.run_to_completion(h.job(sync_type="incremental"))
    assert remapped.counts["updated"] == 3
    shard = await h.shard_by_external("c00001")
    assert shard.structured_data["town"] == "Oslo" and shard.version == 2
