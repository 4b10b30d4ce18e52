"""Write-back end to end with the example emulator, on SQLite and PostgreSQL: edits land
reverse-mapped, echoes are recognised, nothing stale or doubled, retries by policy."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from writeback_support import ENTITY, Harness, imported, make_harness

from castiel_sync.store.repositories.shards import ShardRepository
from castiel_sync.sync.outbound import GiveUp, RetryLater


async def test_patch_writes_back_reverse_mapped(engine: AsyncEngine) -> None:
    h = await imported(engine)
    shard = await h.shard()
    result = await h.shards_service().patch(
        h.scope, shard.id, {"address.city": "Bergen", "score": 7}, actor="user:alice"
    )
    assert result.shard.version == 2 and len(result.write_backs) == 1
    before = len(h.writes())
    [outcome] = await h.run_outbound()
    assert outcome.status == "updated" and sorted(outcome.fields) == ["address.city", "score"]
    [write] = h.writes()[before:]
    assert write.method == "PATCH" and write.json() == {"city": "Bergen", "score": 7}
    assert h.external()["city"] == "Bergen" and h.external()["name"] == "Ada"
    rel = await h.relationship()
    assert rel.sync_status == "synced" and rel.last_synced_version == 2
    assert rel.last_synced_snapshot["address"]["city"] == "Bergen"
    assert rel.last_synced_at is not None and rel.last_error is None


async def test_inbound_changes_never_write_back(engine: AsyncEngine) -> None:
    h = await imported(engine)
    h.emulator.store[ENTITY].update("c1", {"city": "Paris"})
    h.emulator.clock.advance(60)
    await h.sync()
    assert (await h.shard()).structured_data["address"]["city"] == "Paris"
    assert await h.write_back_events() == []


@pytest.mark.parametrize("via", ["poll", "webhook"])
async def test_echo_creates_no_version_and_no_write(engine: AsyncEngine, via: str) -> None:
    h = await imported(engine)
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"name": "Ada L."}, actor="user:alice")
    await h.run_outbound()
    writes, version = len(h.writes()), (await h.shard()).version
    h.emulator.clock.advance(60)
    if via == "poll":
        await h.sync()
    else:
        await h.webhook("c1")
    assert (await h.shard()).version == version == 2
    assert await h.run_outbound() == []
    assert len(h.writes()) == writes


async def test_out_of_order_versions_only_newest_lands(engine: AsyncEngine) -> None:
    h = await imported(engine)
    shard = await h.shard()
    service = h.shards_service()
    await service.patch(h.scope, shard.id, {"name": "v2"}, actor="user:alice")
    await service.patch(h.scope, shard.id, {"name": "v3"}, actor="user:alice")
    events = await h.write_back_events()
    assert [e.data["shardVersion"] for _, e in events] == [2, 3]
    before = len(h.writes())
    newest = await h.outbound().handle(events[1][1])
    stale = await h.outbound().handle(events[0][1])
    assert newest.status == "updated" and stale.status == "skipped"
    assert [w.json() for w in h.writes()[before:]] == [{"name": "v3"}]
    assert h.external()["name"] == "v3"


async def test_in_order_delivery_writes_current_state(engine: AsyncEngine) -> None:
    h = await imported(engine)
    shard = await h.shard()
    service = h.shards_service()
    await service.patch(h.scope, shard.id, {"name": "v2"}, actor="user:alice")
    await service.patch(h.scope, shard.id, {"name": "v3"}, actor="user:alice")
    before = len(h.writes())
    outcomes = await h.run_outbound()
    assert [o.status for o in outcomes] == ["updated", "skipped"]
    assert [w.json() for w in h.writes()[before:]] == [{"name": "v3"}]


async def test_retry_schedule_follows_policy_and_retry_after(engine: AsyncEngine) -> None:
    h = await imported(engine, writeBack={"enabled": True, "entities": [ENTITY],
                                          "retryPolicy": {"maxAttempts": 3}})  # fmt: skip
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"name": "Grace"}, actor="user:alice")
    [(_, event)] = await h.write_back_events()
    delays = []
    h.emulator.faults.server_error(times=1, status=500, path_prefix="/api/v1/contacts/")
    with pytest.raises(RetryLater) as first:
        await h.outbound().handle(event, attempt=1)
    delays.append(first.value.delay_seconds)
    # Retry-After beyond what the adapter sleeps through in-process goes to the queue.
    h.emulator.faults.rate_limit(times=10, retry_after=120, path_prefix="/api/v1/contacts/")
    with pytest.raises(RetryLater) as second:
        await h.outbound().handle(event, attempt=2)
    delays.append(second.value.delay_seconds)
    assert delays == [5.0, 120.0]
    rel = await h.relationship()
    assert rel.sync_status == "pending" and "attempt 2 of 3" in (rel.last_error or "")
    with pytest.raises(GiveUp) as last:
        await h.outbound().handle(event, attempt=3)
    assert "gave up after 3 attempts" in str(last.value)
    rel = await h.relationship()
    assert rel.sync_status == "failed" and "rate limiting" in (rel.last_error or "")
    assert h.external()["name"] == "Ada"


async def test_policy_backoff_doubles_without_retry_after(engine: AsyncEngine) -> None:
    h = await imported(engine, writeBack={"enabled": True, "entities": [ENTITY],
                                          "retryPolicy": {"maxAttempts": 4,
                                                          "backoffMs": 1000}})  # fmt: skip
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"name": "Grace"}, actor="user:alice")
    [(_, event)] = await h.write_back_events()
    delays = []
    for attempt in (1, 2, 3):
        h.emulator.faults.server_error(times=1, status=500, path_prefix="/api/v1/contacts/")
        with pytest.raises(RetryLater) as caught:
            await h.outbound().handle(event, attempt=attempt)
        delays.append(caught.value.delay_seconds)
    assert delays == [1.0, 2.0, 4.0]
    outcome = await h.outbound().handle(event, attempt=4)
    assert outcome.status == "updated" and h.external()["name"] == "Grace"
    assert (await h.relationship()).sync_status == "synced"


async def test_ambiguous_create_is_looked_up_not_duplicated(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    shard_id = await new_castiel_shard(h)
    await h.shards_service().link(h.scope, shard_id, h.integration_id, ENTITY, actor="user:alice")
    [(_, event)] = await h.write_back_events()
    assert h.transport is not None
    h.transport.fail_posts = 1
    with pytest.raises(RetryLater):
        await h.outbound().handle(event, attempt=1)
    assert len(h.emulator.store[ENTITY]) == 1  # the create landed, its answer did not
    outcome = await h.outbound().handle(event, attempt=2)
    assert outcome.status == "linked"
    assert len(h.emulator.store[ENTITY]) == 1
    [record] = list(h.emulator.store[ENTITY])
    rel = await h.relationship()
    assert rel.external_id == record.id == outcome.external_id and rel.sync_status == "synced"
    assert record.data == {"name": "Lin", "email": "lin@example.com", "city": "Rome"}
    # The created record's echo is recognised too.
    h.emulator.clock.advance(60)
    await h.sync("full")
    assert (await h.shard()).version == 1


async def test_create_then_delete(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    shard_id = await new_castiel_shard(h)
    await h.shards_service().link(h.scope, shard_id, h.integration_id, ENTITY, actor="user:alice")
    [created] = await h.run_outbound()
    assert created.status == "created" and len(h.emulator.store[ENTITY]) == 1
    await h.shards_service().delete(h.scope, shard_id, actor="user:alice")
    [deleted] = await h.run_outbound()
    assert deleted.status == "deleted" and len(h.emulator.store[ENTITY]) == 0
    assert (await h.relationship()).sync_status == "deleted"


async def new_castiel_shard(harness: Harness) -> str:
    async with harness.store.transaction() as session:
        await ShardRepository(session, harness.scope).insert_many(
            [{"id": "s-new", "shard_type": "c_contact", "version": 1, "content_hash": None,
              "structured_data": {"name": "Lin", "email": "lin@example.com",
                                  "address": {"city": "Rome"}},
              "history": [], "updated_by": "user:alice", "deleted_at": None,
              "created_at": harness.clock(), "updated_at": harness.clock()}]
        )  # fmt: skip
    return "s-new"
