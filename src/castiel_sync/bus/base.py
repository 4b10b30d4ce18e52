"""The queue port: one small interface, two backends (``sql.py``, ``rabbitmq.py``).

Semantics every backend keeps (the contract suite in ``tests/bus`` pins them):

- **At least once.** ``receive`` hands out a :class:`Lease`; the message comes back if the
  lease is not acked in time (a crashed worker), with ``delivery_count`` one higher.
- **Retry.** ``nack(lease, delay_seconds=..., error=...)`` makes it visible again after the
  delay; once a message has been delivered ``max_deliveries`` times (default 10, as Service
  Bus) the next failure moves it to ``sync-deadletter`` with its last error and original
  queue kept. Dead letters are listed, replayed and purged per tenant.
- **Priority.** ``receive`` over several queues serves them in :data:`QUEUE_RANK` order
  (webhook traffic before write-back before scheduled), then higher ``priority`` first,
  then first in first out.
- **Sessions.** Messages with a ``session_key`` are delivered one at a time per key, in the
  order sent: the next one waits until the previous one is acked or dead-lettered.
- **Idempotent send.** A ``message_id`` is accepted once per de-duplication window; a
  second send with the same id is a no-op (see each backend for the exact guarantee).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from castiel_sync.domain import events
from castiel_sync.domain.tenancy import Scope, SystemScope, TenantScope

# The queue names are the domain's (DESIGN.md §3); the bus only gives them short aliases.
QUEUE_WEBHOOK = events.QUEUE_INBOUND_WEBHOOK
QUEUE_SCHEDULED = events.QUEUE_INBOUND_SCHEDULED
QUEUE_OUTBOUND = events.QUEUE_OUTBOUND
QUEUE_DEADLETTER = events.DEAD_LETTER_QUEUE
WORK_QUEUES = (QUEUE_WEBHOOK, QUEUE_OUTBOUND, QUEUE_SCHEDULED)
ALL_QUEUES = (*WORK_QUEUES, QUEUE_DEADLETTER)

#: Lower rank is served first when one ``receive`` covers several queues.
QUEUE_RANK = {QUEUE_WEBHOOK: 0, QUEUE_OUTBOUND: 1, QUEUE_SCHEDULED: 2, QUEUE_DEADLETTER: 9}

DEFAULT_MAX_DELIVERIES = 10
#: System-level messages (no tenant) carry this tenant id; ``SystemScope`` sees them.
SYSTEM_TENANT = "*"

Body = bytes | dict[str, Any]


class BusError(Exception):
    """Base of the bus's errors."""


class UnknownQueueError(BusError):
    """A queue name the bus does not serve."""


@dataclass(slots=True)
class Message:
    id: str
    queue: str
    body: Body
    tenant_id: str
    priority: int = 0
    session_key: str | None = None
    delivery_count: int = 0
    enqueued_at: datetime | None = None
    not_before: datetime | None = None
    last_error: str | None = None
    #: For a dead letter: the queue it failed on.
    original_queue: str | None = None


@dataclass(slots=True)
class Lease:
    """A message handed to one consumer until ``expires_at`` (or until acked/nacked)."""

    message: Message
    token: str
    expires_at: datetime
    #: Backend-private handle (row key, AMQP delivery).
    handle: Any = field(default=None, repr=False)


@dataclass(slots=True, frozen=True)
class OutgoingMessage:
    """One item of :meth:`Bus.send_many`; the fields mirror :meth:`Bus.send`."""

    queue: str
    body: Body
    tenant_id: str
    priority: int = 0
    not_before: datetime | None = None
    session_key: str | None = None
    message_id: str | None = None
    #: The CloudEvent type; RabbitMQ routes on it through the topic exchange.
    event_type: str | None = None


def check_queue(queue: str) -> None:
    if queue not in ALL_QUEUES:
        raise UnknownQueueError(f"unknown queue {queue!r}; known: {', '.join(ALL_QUEUES)}")


def scope_tenant(scope: Scope) -> str | None:
    """The tenant id a dead-letter query is confined to; None for a system scope."""
    if isinstance(scope, TenantScope):
        return str(scope.tenant_id)
    if isinstance(scope, SystemScope):
        return None
    raise TypeError(f"not a scope: {scope!r}")


def session_shard(session_key: str, shards: int) -> int:
    """Stable shard of a session key (crc32: the same in every process and language)."""
    return zlib.crc32(session_key.encode()) % shards


class Bus(ABC):
    """Durable queues with leases, retry, dead letters, priorities and sessions."""

    max_deliveries: int = DEFAULT_MAX_DELIVERIES

    async def start(self) -> None:  # noqa: B027 - optional hook, most backends need none
        """Create what the backend needs (idempotent)."""

    async def send(
        self,
        queue: str,
        body: Body,
        *,
        tenant_id: str,
        priority: int = 0,
        not_before: datetime | None = None,
        session_key: str | None = None,
        message_id: str | None = None,
        event_type: str | None = None,
    ) -> str:
        """Enqueue durably; returns the message id. Repeating a ``message_id`` is a no-op."""
        out = OutgoingMessage(
            queue, body, tenant_id, priority, not_before, session_key, message_id, event_type
        )
        return (await self.send_many([out]))[0]

    @abstractmethod
    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, dedup: bool = True
    ) -> list[str]:
        """Enqueue several messages; backends batch this (one transaction, one confirm wait).

        ``dedup=False`` skips the de-duplication window (no look-up, no record): for a
        sender that knows its ids are new, as the outbox relay does."""

    @abstractmethod
    async def receive(
        self,
        queues: Sequence[str],
        *,
        lease_seconds: float,
        max_messages: int = 1,
        wait_seconds: float = 0.0,
    ) -> list[Lease]:
        """Lease up to ``max_messages`` ready messages, waiting up to ``wait_seconds``."""

    @abstractmethod
    async def ack(self, lease: Lease) -> bool:
        """Done: delete the message. False if the lease had already been lost."""

    async def ack_many(self, leases: Sequence[Lease]) -> int:
        return sum([await self.ack(lease) for lease in leases])

    @abstractmethod
    async def nack(self, lease: Lease, *, delay_seconds: float = 0.0, error: str = "") -> bool:
        """Failed: retry after ``delay_seconds``, or dead-letter past the delivery limit."""

    @abstractmethod
    async def list_dead_letters(self, scope: Scope, *, limit: int = 100) -> list[Message]:
        """Dead letters of the scope's tenant (every tenant for a system scope), oldest first."""

    @abstractmethod
    async def replay(self, scope: Scope, ids: Sequence[str]) -> int:
        """Send dead letters back to their original queue with a fresh delivery count."""

    @abstractmethod
    async def purge(self, scope: Scope, ids: Sequence[str]) -> int:
        """Delete dead letters for good."""

    @abstractmethod
    async def depth(self, queue: str) -> int:
        """Messages in the queue (ready, delayed and leased)."""

    @abstractmethod
    async def oldest_age(self, queue: str) -> float:
        """Seconds since the oldest message in the queue was enqueued; 0 when empty."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; leases not acked come back after they expire."""
