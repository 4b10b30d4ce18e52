"""``SyncInboundWorker`` and ``SyncOutboundWorker``: the spec's queue-triggered functions.

A worker leases messages from its queues, looks the event type up in a
:class:`HandlerRegistry` and calls ``await handler(event, delivery)``:

- success: ack;
- a failure is classified once (:mod:`castiel_sync.runtime.errors`): retryable ->
  nack with the error's ``retry_after`` (or backoff); permanent -> dead-letter at once with
  the reason; anything else -> nack with backoff until the bus's delivery limit
  (default 10) moves it to ``sync-deadletter``;
- sync jobs (``SyncScheduled`` / ``SyncRequested``) run only while holding one of their
  tenant's sync slots (:mod:`castiel_sync.runtime.slots`); with none free the message is
  re-sent with a delay and acked (waiting is not a failed delivery, so it never counts
  toward the delivery limit);
- while a handler runs, the message's lease (where the bus can renew it) and the sync
  slot are renewed; a worker that dies stops renewing and both come back after their
  lease.

Stopping (SIGTERM): the worker receives nothing more, waits up to ``drain_timeout`` for
in-flight handlers, then cancels the rest and hands their messages back (nack, no delay).

Handlers are idempotent (delivery is at least once). The inbound worker serves
``sync-inbound-webhook`` before ``sync-inbound-scheduled``; the outbound worker's
``sync-outbound`` keeps per-integration order through the bus's sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import QUEUE_OUTBOUND, QUEUE_SCHEDULED, QUEUE_WEBHOOK, Bus, Lease
from castiel_sync.domain.events import (
    SYNC_REQUESTED,
    SYNC_SCHEDULED,
    WEBHOOK_RECEIVED,
    WRITE_BACK_REQUESTED,
    CloudEvent,
)
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.runtime import metrics, slots
from castiel_sync.runtime._db import write_connection
from castiel_sync.runtime.clock import Clock, system_clock
from castiel_sync.runtime.errors import (
    HandlerNotReadyError,
    PermanentJobError,
    PoisonMessageError,
    classify,
)
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import TenantSettingsRepository

log = structlog.get_logger(__name__)

SYNC_JOB_TYPES = frozenset({SYNC_SCHEDULED, SYNC_REQUESTED})
INBOUND_QUEUES = (QUEUE_WEBHOOK, QUEUE_SCHEDULED)
OUTBOUND_QUEUES = (QUEUE_OUTBOUND,)


@dataclass
class Delivery:
    """One delivery of a message to a handler."""

    lease: Lease
    worker: Worker

    @property
    def delivery_count(self) -> int:
        return self.lease.message.delivery_count

    @property
    def message_id(self) -> str:
        return self.lease.message.id


Handler = Callable[[CloudEvent, Delivery], Awaitable[None]]


class HandlerRegistry:
    """Event type -> async handler. ``register`` works as a call or a decorator."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})

    def register(self, event_type: str, handler: Handler | None = None) -> Any:
        if handler is not None:
            self._handlers[event_type] = handler
            return handler

        def decorate(fn: Handler) -> Handler:
            self._handlers[event_type] = fn
            return fn

        return decorate

    def get(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._handlers

    def event_types(self) -> list[str]:
        return sorted(self._handlers)


# -- the seam the sync engine plugs into ---------------------------------------------------


async def inbound_engine_not_installed(event: CloudEvent, delivery: Delivery) -> None:
    """Placeholder until the inbound sync engine is wired: fails permanently, never fakes
    success, so the message is kept in ``sync-deadletter`` and can be replayed later."""
    raise HandlerNotReadyError(
        f"no inbound sync engine is wired into this worker for {event.type}; "
        "register one with HandlerRegistry.register (castiel_sync.runtime.workers)"
    )


async def outbound_engine_not_installed(event: CloudEvent, delivery: Delivery) -> None:
    raise HandlerNotReadyError(
        f"no outbound write-back engine is wired into this worker for {event.type}; "
        "register one with HandlerRegistry.register (castiel_sync.runtime.workers)"
    )


def placeholder_registry() -> HandlerRegistry:
    """Every routed event type mapped to a clearly failing placeholder."""
    registry = HandlerRegistry()
    for event_type in (WEBHOOK_RECEIVED, SYNC_SCHEDULED, SYNC_REQUESTED):
        registry.register(event_type, inbound_engine_not_installed)
    registry.register(WRITE_BACK_REQUESTED, outbound_engine_not_installed)
    return registry


async def dead_letter(bus: Bus, lease: Lease, reason: str) -> bool:
    """Move a leased message to ``sync-deadletter`` now, with ``reason`` kept.

    Uses ``bus.dead_letter`` when the backend has one; otherwise the interface's own rule
    (a failure at the delivery limit dead-letters) by marking the delivery as the last."""
    direct = getattr(bus, "dead_letter", None)
    if callable(direct):
        return bool(await direct(lease, error=reason))
    lease.message.delivery_count = max(lease.message.delivery_count, bus.max_deliveries)
    return await bus.nack(lease, error=reason)


class Worker:
    """Consumes ``queues`` with ``registry``'s handlers (see the module docstring)."""

    default_queues: tuple[str, ...] = INBOUND_QUEUES + OUTBOUND_QUEUES

    def __init__(
        self,
        bus: Bus,
        registry: HandlerRegistry,
        *,
        engine: AsyncEngine | None = None,
        settings: Settings | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        receive_wait: float = 1.0,
        drain_timeout: float = 30.0,
        slot_lease: float = 300.0,
        capacity_retry: float = 15.0,
        clock: Clock = system_clock,
    ) -> None:
        self.bus = bus
        self.registry = registry
        self.engine = engine
        self.settings = settings or Settings()
        self.queues = tuple(queues or self.default_queues)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.receive_wait = receive_wait
        self.drain_timeout = drain_timeout
        self.slot_lease = slot_lease
        self.capacity_retry = capacity_retry
        self.clock = clock
        self.inflight: set[asyncio.Task[str]] = set()

    # -- loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker started", queues=list(self.queues), concurrency=self.concurrency)
        while not stop.is_set():
            free = self.concurrency - len(self.inflight)
            if free <= 0:
                await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                leases = await self.bus.receive(
                    self.queues,
                    lease_seconds=self.lease_seconds,
                    max_messages=free,
                    wait_seconds=self.receive_wait,
                )
            except Exception:
                log.exception("receive failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                continue
            for lease in leases:
                task = asyncio.create_task(self.process(lease))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
        await self.drain()
        log.info("worker stopped", queues=list(self.queues))

    async def drain(self) -> None:
        """Let in-flight handlers finish; past ``drain_timeout`` hand their messages back."""
        if not self.inflight:
            return
        _, pending = await asyncio.wait(set(self.inflight), timeout=self.drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self, *, idle_rounds: int = 2) -> int:
        """Process until the queues have nothing ready (tests, one-shot commands)."""
        handled, idle = 0, 0
        while idle < idle_rounds:
            leases = await self.bus.receive(
                self.queues, lease_seconds=self.lease_seconds, max_messages=self.concurrency
            )
            if not leases:
                idle += 1
                await asyncio.sleep(0.05)
                continue
            idle = 0
            await asyncio.gather(*(self.process(lease) for lease in leases))
            handled += len(leases)
        return handled

    # -- one message --------------------------------------------------------------------

    async def process(self, lease: Lease) -> str:
        """Handle one leased message; returns the outcome label."""
        queue = lease.message.queue
        started = time.perf_counter()
        event_type = "unknown"
        outcome = "ack"
        holder: str | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            try:
                event = self._event(lease)
                event_type = event.type
                self._check_tenant(lease, event)
                handler = self.registry.get(event.type)
                if handler is None:
                    raise PermanentJobError(f"no handler for event type {event.type!r}")
                if event.type in SYNC_JOB_TYPES and self.engine is not None:
                    if not await self._take_slot(event):
                        outcome = await self._defer(lease, event)
                        return outcome
                    holder = event.id
                heartbeat = asyncio.create_task(self._heartbeat(lease, holder))
                await handler(event, Delivery(lease, self))
            except asyncio.CancelledError:
                outcome = "returned"
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.bus.nack(lease, error="worker shut down"))
                raise
            except Exception as exc:
                outcome = await self._failed(lease, exc)
            else:
                await self.bus.ack(lease)
            return outcome
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if holder is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release_slot(holder))
            metrics.DELIVERIES.labels(queue, outcome).inc()
            metrics.PROCESSING_SECONDS.labels(queue, event_type, outcome).observe(
                time.perf_counter() - started
            )

    def _event(self, lease: Lease) -> CloudEvent:
        body = lease.message.body
        if isinstance(body, bytes | bytearray):
            return CloudEvent.from_json(bytes(body))
        return CloudEvent.from_dict(body)

    @staticmethod
    def _check_tenant(lease: Lease, event: CloudEvent) -> None:
        """The message's tenant must be its event's ``data.tenantId``: a message that
        says one tenant and carries another's event is poison (never retried)."""
        if lease.message.tenant_id != event.tenant_id:
            log.warning(
                "message tenant does not match its event",
                message_id=lease.message.id,
                message_tenant=lease.message.tenant_id,
                event_tenant=event.tenant_id,
            )
            raise PoisonMessageError(
                "the message's tenant does not match its event's data.tenantId; not processed"
            )

    async def _failed(self, lease: Lease, exc: Exception) -> str:
        verdict = classify(exc, lease.message.delivery_count)
        queue = lease.message.queue
        log.warning(
            "handler failed",
            queue=queue,
            message_id=lease.message.id,
            delivery=lease.message.delivery_count,
            verdict=verdict.kind,
            reason=verdict.reason,
            detail=str(exc)[:2000],  # server log only (redacted), never the stored reason
        )
        if verdict.kind == "permanent":
            await dead_letter(self.bus, lease, verdict.reason)
            metrics.DEAD_LETTERS.labels(queue).inc()
            return "dead_letter"
        last = lease.message.delivery_count >= self.bus.max_deliveries
        await self.bus.nack(lease, delay_seconds=verdict.delay, error=verdict.reason)
        if last:
            metrics.DEAD_LETTERS.labels(queue).inc()
            return "dead_letter"
        return "retry"

    async def _heartbeat(self, lease: Lease, holder: str | None) -> None:
        renew = getattr(self.bus, "renew", None)
        period = max(0.05, min(self.lease_seconds, self.slot_lease) / 3)
        while True:
            await asyncio.sleep(period)
            try:
                if callable(renew):
                    await renew(lease, lease_seconds=self.lease_seconds)
                if holder is not None and self.engine is not None:
                    async with write_connection(self.engine) as conn:
                        await slots.renew(
                            conn,
                            holder=holder,
                            now=self.clock().timestamp(),
                            lease_seconds=self.slot_lease,
                        )
            except Exception:
                log.warning("lease renewal failed", message_id=lease.message.id)

    # -- sync slots ---------------------------------------------------------------------

    async def _take_slot(self, event: CloudEvent) -> bool:
        assert self.engine is not None
        tenant = event.tenant_id
        async with Store(self.engine).transaction() as session:
            limits = await TenantSettingsRepository(
                session, TenantScope(TenantId(tenant)), defaults=self.settings
            ).effective()
        async with write_connection(self.engine) as conn:
            slot = await slots.acquire(
                conn,
                tenant_id=tenant,
                holder=event.id,
                integration_id=event.integration_id,
                limit=max(1, min(10, limits.max_concurrent_syncs)),
                now=self.clock().timestamp(),
                lease_seconds=self.slot_lease,
            )
        return slot is not None

    async def _release_slot(self, holder: str) -> None:
        assert self.engine is not None
        async with write_connection(self.engine) as conn:
            await slots.release(conn, holder=holder)

    async def _defer(self, lease: Lease, event: CloudEvent) -> str:
        """The tenant is at its concurrent-sync limit: the job waits (a delayed copy), and
        the copy is sent before the original is acked, so a crash in between duplicates
        the job (harmless: handlers are idempotent) and never loses it."""
        m = lease.message
        base = m.id.split("~", 1)[0]
        await self.bus.send(
            m.queue,
            m.body,
            tenant_id=m.tenant_id,
            priority=m.priority,
            not_before=datetime.now(UTC) + timedelta(seconds=self.capacity_retry),
            session_key=m.session_key,
            message_id=f"{base}~wait-{uuid.uuid4().hex[:12]}",
            event_type=event.type,
        )
        await self.bus.ack(lease)
        return "deferred"


class SyncInboundWorker(Worker):
    """``sync-inbound-webhook`` (first) and ``sync-inbound-scheduled``."""

    default_queues = INBOUND_QUEUES


class SyncOutboundWorker(Worker):
    """``sync-outbound``: write-back, one message at a time per integration (sessions)."""

    default_queues = OUTBOUND_QUEUES
