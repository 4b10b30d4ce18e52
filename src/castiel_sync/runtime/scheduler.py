"""``SyncScheduler``: the spec's timer function (every minute) that enqueues due syncs.

Each tick reads the integrations whose ``next_sync_at`` is due (enabled, active; manual
integrations have no ``next_sync_at`` and are never due) and, for each, in **one write
transaction**:

1. takes one of the tenant's sync slots for the job (:mod:`castiel_sync.runtime.slots`),
   the holder being the job's event id;
2. advances ``next_sync_at`` from the value it read to the next slot of the integration's
   frequency, plus a deterministic jitter, as a compare-and-swap (``WHERE next_sync_at =
   <the due value>``);
3. records ``SyncScheduled`` in the outbox (``castiel_sync.bus.publish``).

Exactly once per due slot: only one transaction can move ``next_sync_at`` away from a
given value, and the event commits with that move or not at all (SQLite serialises
writers with ``BEGIN IMMEDIATE``; PostgreSQL's row lock makes the loser re-check the
``WHERE`` and update nothing). The event id is derived from (integration, due time), so
even a replayed relay send is the same message.

Concurrency limit: when the tenant has no free slot the transaction rolls back, so the
integration stays due and is tried again at the next tick: excess work waits, it is never
dropped. Workers enforce the same slots for manual ``SyncRequested`` jobs.

Jitter: ``crc32(integration id)`` spreads integrations over up to ``max_jitter`` seconds
(at most a tenth of an interval), the same value in every scheduler process.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import publish
from castiel_sync.domain.config import SyncFrequency
from castiel_sync.domain.events import sync_scheduled
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.runtime import slots
from castiel_sync.runtime._db import write_session
from castiel_sync.runtime.clock import Clock, system_clock
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository, TenantSettingsRepository

log = structlog.get_logger(__name__)

#: How long a slot taken by the scheduler waits for a worker to adopt it.
DEFAULT_QUEUED_SLOT_LEASE = 900.0


@dataclass
class TickReport:
    enqueued: list[str] = field(default_factory=list)  # integration ids
    waiting: list[str] = field(default_factory=list)  # due, but the tenant is at its limit
    lost: list[str] = field(default_factory=list)  # another scheduler took the slot


class _NoCapacity(Exception):
    pass


class _Lost(Exception):
    pass


def jitter_seconds(integration_id: str, frequency: SyncFrequency, max_jitter: float) -> float:
    """Deterministic spread of an integration's runs (same value in every process)."""
    bound = max_jitter
    if frequency.kind == "interval" and frequency.minutes:
        bound = min(bound, frequency.minutes * 6.0)  # a tenth of the interval
    if bound <= 0:
        return 0.0
    return (zlib.crc32(integration_id.encode()) % int(bound * 1000)) / 1000.0


def next_run(
    integration_id: str, frequency: SyncFrequency, now: datetime, max_jitter: float
) -> datetime | None:
    nominal = frequency.next_after(now)
    if nominal is None:
        return None
    return nominal + timedelta(seconds=jitter_seconds(integration_id, frequency, max_jitter))


class SyncScheduler:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        settings: Settings | None = None,
        clock: Clock = system_clock,
        interval: float = 60.0,
        batch_size: int = 200,
        max_jitter: float = 60.0,
        queued_slot_lease: float = DEFAULT_QUEUED_SLOT_LEASE,
    ) -> None:
        self.engine = engine
        self.store = Store(engine)
        self.settings = settings or Settings()
        self.clock = clock
        self.interval = interval
        self.batch_size = batch_size
        self.max_jitter = max_jitter
        self.queued_slot_lease = queued_slot_lease

    async def tick(self) -> TickReport:
        """One pass over the due integrations."""
        now = self.clock()
        report = TickReport()
        async with self.store.transaction() as session:
            due = await IntegrationRepository(session, SystemScope("sync scheduler")).due(
                now, self.batch_size
            )
            # due() selects only rows with a next_sync_at; the test narrows the type.
            candidates = [
                (r.id, r.tenant_id, r.next_sync_at, dict(r.sync_frequency or {}))
                for r in due
                if r.next_sync_at is not None
            ]
        full: set[str] = set()
        for integration_id, tenant_id, due_at, frequency in candidates:
            if tenant_id in full:
                report.waiting.append(integration_id)
                continue
            try:
                await self._enqueue(integration_id, tenant_id, due_at, frequency, now)
            except _NoCapacity:
                full.add(tenant_id)
                report.waiting.append(integration_id)
            except _Lost:
                report.lost.append(integration_id)
            else:
                report.enqueued.append(integration_id)
        if report.enqueued or report.waiting:
            log.info(
                "scheduler tick",
                enqueued=len(report.enqueued),
                waiting=len(report.waiting),
                lost=len(report.lost),
            )
        return report

    async def _enqueue(
        self,
        integration_id: str,
        tenant_id: str,
        due_at: datetime,
        frequency_doc: dict[str, object],
        now: datetime,
    ) -> None:
        try:
            frequency = SyncFrequency.model_validate(frequency_doc)
        except ValueError:
            frequency = SyncFrequency(kind="manual")
        following = next_run(integration_id, frequency, now, self.max_jitter)
        event = sync_scheduled(tenant_id=tenant_id, integration_id=integration_id, due_at=due_at)
        async with write_session(self.engine) as session:
            limits = await TenantSettingsRepository(
                session, TenantScope(TenantId(tenant_id)), defaults=self.settings
            ).effective()
            conn = await session.connection()
            slot = await slots.acquire(
                conn,
                tenant_id=tenant_id,
                holder=event.id,
                integration_id=integration_id,
                limit=max(1, min(10, limits.max_concurrent_syncs)),
                now=now.timestamp(),
                lease_seconds=self.queued_slot_lease,
            )
            if slot is None:
                raise _NoCapacity
            claimed = await IntegrationRepository(
                session, TenantScope(TenantId(tenant_id))
            ).claim_due(integration_id, due_at, following)
            if not claimed:
                raise _Lost  # rolls the slot back too
            publish(session, event)

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler tick failed; trying again next tick")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
