"""Webhook sync, match rules, data access control, and adapter error handling."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sync_support import ENTITY, add_integration, make_harness, settings

from castiel_sync.domain.events import SHARD_CREATED
from castiel_sync.sdk import WebhookEvent
from castiel_sync.store.tables import ShardRow
from castiel_sync.sync import RetryableSyncError


async def test_a_replayed_webhook_changes_nothing(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    record = h.emulator.store[ENTITY].create({"name": "Ada", "email": "ADA@x.io"}, id="w1")
    delivery = h.emulator.build_webhook(h.emulator.webhook_payload(ENTITY, record, "created"))
    events = h.adapter().parse_webhook(delivery)
    sync = h.engine()

    first = await sync.apply_webhook_events(h.tenant, h.integration_id, events)
    assert first.counts["created"] == 1
    shard = await h.shard_by_external("w1")
    outbox = await h.count_outbox()

    for _ in range(2):
        again = await sync.apply_webhook_events(h.tenant, h.integration_id, events)
        assert again.counts["unchanged"] == 1 and again.counts["created"] == 0
    after = await h.shard_by_external("w1")
    assert (after.id, after.version, after.updated_at) == (shard.id, 1, shard.updated_at)
    assert await h.count_outbox() == outbox

    # The same record arriving by poll afterwards is the same shard, unchanged.
    (outcome,) = await sync.run_to_completion(h.job())
    assert outcome.counts["unchanged"] == 1
    assert await h.count(ShardRow) == 1


async def test_an_id_only_webhook_fetches_the_record(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.emulator.store[ENTITY].create({"name": "Bo", "city": "Lima"}, id="w2")
    events = [WebhookEvent(entity=ENTITY, external_id="w2", action="updated")]
    outcome = await h.engine().apply_webhook_events(h.tenant, h.integration_id, events)
    assert outcome.counts["created"] == 1
    assert h.emulator.requests_to(f"/api/v1/{ENTITY}/w2", "GET")
    shard = await h.shard_by_external("w2")
    assert shard.structured_data == {"name": "Bo", "address": {"city": "Lima"}}

    h.emulator.store[ENTITY].delete("w2")  # gone by the time the next webhook is handled
    outcome = await h.engine().apply_webhook_events(h.tenant, h.integration_id, events)
    assert outcome.counts["deleted"] == 1
    assert await h.shards() == []


async def test_a_stale_webhook_does_not_overwrite_newer_data(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    sync = h.engine()
    h.emulator.store[ENTITY].create({"name": "new"}, id="w3")
    h.emulator.clock.advance(10)
    h.emulator.store[ENTITY].update("w3", {"name": "newer"})
    await sync.run_to_completion(h.job())
    old = h.emulator.clock.now().replace(year=2000)
    stale = [WebhookEvent(entity=ENTITY, external_id="w3", data={"name": "old"}, modified_at=old)]
    outcome = await sync.apply_webhook_events(h.tenant, h.integration_id, stale)
    assert outcome.counts["unchanged"] == 1
    assert (await h.shard_by_external("w3")).structured_data["name"] == "newer"


async def test_match_rules_link_a_second_integration_to_the_same_shard(
    engine: AsyncEngine,
) -> None:
    rules = [{"shardType": "c_contact", "fields": ["email"]}]
    h = await make_harness(engine, matchRules=rules)
    h.emulator.store[ENTITY].create({"name": "Cy", "email": "CY@Example.com"}, id="a1")
    await h.engine().run_to_completion(h.job())

    second = await add_integration(h.store, h.tenant, "support", matchRules=rules)
    same = {"email": "cy@example.COM ", "city": "Oslo"}
    events = [
        WebhookEvent(entity=ENTITY, external_id="zz9", data=same),
        WebhookEvent(entity=ENTITY, external_id="zz8", data={"email": "other@example.com"}),
    ]
    outcome = await h.engine().apply_webhook_events(h.tenant, second, events)
    assert outcome.counts["created"] == 1 and outcome.counts["updated"] == 1
    shards = await h.shards()
    assert len(shards) == 2
    linked = next(s for s in shards if s.structured_data.get("name") == "Cy")
    assert linked.structured_data["address"] == {"city": "Oslo"} and linked.version == 2
    rels = [r for r in await h.relationships() if r.shard_id == linked.id]
    assert sorted(r.integration_id for r in rels) == sorted([h.integration_id, second])


async def test_only_allowed_shard_types_are_read_or_written(engine: AsyncEngine) -> None:
    h = await make_harness(engine, allowedShardTypes=["c_company"])
    h.seed(3)
    outcome = await h.engine().run_job(h.job())
    assert outcome.status == "failed" and "not allowed" in (outcome.error or "")
    assert not h.emulator.requests_to(f"/api/v1/{ENTITY}")  # nothing was fetched
    events = [WebhookEvent(entity=ENTITY, external_id="c00001", data={"name": "x"})]
    hooked = await h.engine().apply_webhook_events(h.tenant, h.integration_id, events)
    assert hooked.counts["failed"] == 1 and "not allowed" in hooked.record_errors[0]["reason"]
    assert await h.count(ShardRow) == 0

    await h.update_settings(settings(allowedShardTypes=["c_contact"]))
    (done,) = await h.engine().run_to_completion(h.job())
    assert done.counts["created"] == 3


async def test_rate_limits_raise_a_retryable_error_and_keep_progress(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    await h.set_limit(10)
    h.seed(25)
    sync = h.engine()
    first = await sync.run_job(h.job())
    h.emulator.faults.rate_limit(times=50, retry_after=7)
    with pytest.raises(RetryableSyncError) as caught:
        await sync.run_job(first.follow_ups[0])
    assert caught.value.retry_after == 7
    assert await h.count(ShardRow) == 10  # the committed page stays
    h.emulator.faults.clear()
    outcomes = await sync.run_to_completion(first.follow_ups[0])
    assert outcomes[-1].status == "completed"
    assert await h.count(ShardRow) == 25
    assert len(await h.outbox(SHARD_CREATED)) == 25


async def test_rejected_credentials_fail_the_execution_clearly(engine: AsyncEngine) -> None:
    h = await make_harness(engine)
    h.seed(3)
    h.emulator.faults.expire_tokens(after=0)
    outcome = await h.engine().run_job(h.job())
    assert outcome.status == "failed"
    (execution,) = await h.executions()
    assert execution.status == "failed"
    assert "reconnect the integration" in (execution.error or "")
