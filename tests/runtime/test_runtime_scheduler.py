"""SyncScheduler: due slots enqueued exactly once (two schedulers, separate engines), the
next slot with jitter, manual never, and the per-tenant concurrency limit."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from runtime_support import T0, FakeClock, make_integration, outbox_events
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.events import SYNC_SCHEDULED
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.runtime import slots
from castiel_sync.runtime._db import write_connection
from castiel_sync.runtime.scheduler import SyncScheduler
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.repositories import IntegrationRepository, TenantSettingsRepository


async def _release_all(engine: AsyncEngine, events: list[dict]) -> None:
    async with write_connection(engine) as conn:
        for event in events:
            await slots.release(conn, holder=event["id"])


async def test_two_schedulers_enqueue_each_due_slot_once(
    rt_engine: AsyncEngine, db_url: str
) -> None:
    # Ten tenants, three integrations each (the default limit), all due at T0.
    ids = [await make_integration(rt_engine, f"t{t}", f"i{i}") for t in range(10) for i in range(3)]
    clock = FakeClock(T0 + timedelta(seconds=1))
    engines = [create_engine(db_url), create_engine(db_url)]
    try:
        schedulers = [SyncScheduler(e, clock=clock, settings=Settings()) for e in engines]
        for round_ in range(3):
            reports = await asyncio.gather(*(s.tick() for s in schedulers), schedulers[0].tick())
            enqueued = [i for r in reports for i in r.enqueued]
            assert sorted(enqueued) == sorted(ids), f"round {round_}"
            events = await outbox_events(rt_engine, SYNC_SCHEDULED)
            keys = [(e["data"]["integrationId"], e["data"]["dueAt"]) for e in events]
            assert len(keys) == len(set(keys)) == len(ids) * (round_ + 1)
            await _release_all(rt_engine, events)  # the jobs finished
            clock.now += timedelta(minutes=20)  # the next slot is due
    finally:
        for e in engines:
            await e.dispose()


async def test_next_slot_has_deterministic_jitter_and_manual_is_never_due(
    rt_engine: AsyncEngine,
) -> None:
    interval = await make_integration(rt_engine, "ta", "interval")
    manual = await make_integration(
        rt_engine, "ta", "manual", frequency={"kind": "manual"}, next_sync_at=None
    )
    daily = await make_integration(
        rt_engine, "ta", "daily", frequency={"kind": "daily", "at": "03:00"}
    )
    clock = FakeClock(T0)
    report = await SyncScheduler(rt_engine, clock=clock).tick()
    assert sorted(report.enqueued) == sorted([interval, daily])
    async with Store(rt_engine).transaction() as session:
        repo = IntegrationRepository(session, TenantScope(TenantId("ta")))
        nxt = (await repo.get(interval)).next_sync_at
        assert T0 + timedelta(minutes=15) <= nxt <= T0 + timedelta(minutes=16, seconds=30)
        d = (await repo.get(daily)).next_sync_at
        assert (
            (T0 + timedelta(days=1)).replace(hour=3)
            <= d
            < (T0 + timedelta(days=1)).replace(hour=3, minute=1, second=1)
        )
        assert (await repo.get(manual)).next_sync_at is None
    assert not (await SyncScheduler(rt_engine, clock=clock).tick()).enqueued  # nothing due


async def test_concurrency_limit_holds_excess_work_without_dropping_it(
    rt_engine: AsyncEngine,
) -> None:
    async with Store(rt_engine).transaction() as session:
        await TenantSettingsRepository(session, TenantScope(TenantId("busy"))).set_limits(
            max_concurrent_syncs=2
        )
    ids = [await make_integration(rt_engine, "busy", f"i{i}") for i in range(5)]
    other = await make_integration(rt_engine, "calm", "x")
    clock = FakeClock(T0 + timedelta(seconds=1))
    scheduler = SyncScheduler(rt_engine, clock=clock)

    first = await scheduler.tick()
    assert len([i for i in first.enqueued if i in ids]) == 2 and other in first.enqueued
    assert len(first.waiting) == 3
    assert not (await scheduler.tick()).enqueued  # still full: they keep waiting

    seen = set(first.enqueued) - {other}
    while len(seen) < 5:  # each finished job frees a slot for one waiting integration
        events = [
            e
            for e in await outbox_events(rt_engine, SYNC_SCHEDULED)
            if e["data"]["tenantId"] == "busy"
        ]
        await _release_all(rt_engine, events[:1] if len(seen) == 2 else events)
        report = await scheduler.tick()
        assert report.enqueued, "a freed slot must let waiting work through"
        seen |= set(report.enqueued)
    assert seen == set(ids)
    events = await outbox_events(rt_engine, SYNC_SCHEDULED)
    assert sorted(e["data"]["integrationId"] for e in events) == sorted([*ids, other])


async def test_a_crashed_workers_slot_frees_after_its_lease(rt_engine: AsyncEngine) -> None:
    async with Store(rt_engine).transaction() as session:
        await TenantSettingsRepository(session, TenantScope(TenantId("solo"))).set_limits(
            max_concurrent_syncs=1
        )
    a = await make_integration(rt_engine, "solo", "a")
    b = await make_integration(rt_engine, "solo", "b")
    clock = FakeClock(T0 + timedelta(seconds=1))
    scheduler = SyncScheduler(rt_engine, clock=clock, queued_slot_lease=120)
    assert len((await scheduler.tick()).enqueued) == 1  # nobody ever releases that slot
    clock.now += timedelta(seconds=60)
    assert not (await scheduler.tick()).enqueued
    clock.now += timedelta(seconds=61)  # the lease ran out
    assert len((await scheduler.tick()).enqueued) == 1
    events = await outbox_events(rt_engine, SYNC_SCHEDULED)
    assert {e["data"]["integrationId"] for e in events} == {a, b}
