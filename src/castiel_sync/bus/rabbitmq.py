"""RabbitMQ bus, selected by ``CASTIEL_BUS_URL=amqp://...``.

aio-pika keeps the (robust) connection and channels and declares the topology; messages
are published and consumed on the channels' aiormq layer, without aio-pika's per-message
objects (see ``_publish_confirmed`` and ``_ensure_consumers``).

Topology (every name carries the optional ``namespace`` prefix):

- ``castiel.integration`` (topic): the router. Routing key = the CloudEvent type; each
  work queue is bound with the event types the routing table sends to it. Sends that
  name a queue but no event type go through the default exchange.
- Work queues are durable **quorum** queues with ``x-delivery-limit`` and a dead-letter
  exchange (``castiel.deadletter``, fanout) into the quorum queue ``sync-deadletter``,
  with at-least-once dead-lettering. The broker's limit catches crash loops (a consumer
  that dies holding the message); failures reported by ``nack`` are counted by us.
- **Ordering per integration** on ``sync-outbound``: the queue is ``outbound_shards``
  quorum queues ``sync-outbound.<i>``; a message goes to shard ``crc32(session_key) % N``
  (the topic key is ``<event type>.<i>``). Each shard has ``x-single-active-consumer``:
  with any number of workers, exactly one consumes a shard at a time, so one process sees
  all of a session's messages in order; inside it the bus hands out one message per
  session key at a time, the oldest first. When that worker dies its unacked messages go
  back to the head of the shard (quorum queues serve returns first) and the next
  consumer takes over. Throughput for one integration is serial, as the spec's sessions.
- **Delayed retry**: quorum queues have no per-message delay, so there are delay tiers
  ``castiel.delay.<ms>`` (durable classic queues with ``x-message-ttl`` whose dead-letter exchange
  ``castiel.delay.return``, a headers exchange, sends each message back to the queue named
  in its ``castiel-target`` header). A retry goes to the largest tier not longer than the
  delay and carries ``castiel-not-before``; a message that comes back early is re-delayed
  (without counting a delivery) with the shortest tier, so no message is ever delivered
  before its time. A retry within a session is held by the single active consumer instead
  (re-delaying it through a tier would let the next message of the session overtake it).
- **Priority**: a consumer per queue with its own prefetch; ``receive`` hands out from
  the webhook buffer first, then write-back, then scheduled; higher ``priority`` first
  within what is buffered.
- **Leases**: a lease is an unacked delivery; a reaper returns expired leases to the
  broker (``basic.nack`` with requeue: the broker counts the delivery). A worker that is
  SIGKILLed loses its connection and the broker redelivers everything it held.
- **Lost connection** (broker restart, network): aio-pika reconnects and reopens the
  channels, and the bus consumes again; what the lost channel had delivered comes again
  from the broker, so it is dropped here (a lease on it is lost: its ack returns False).
- **Acks** from concurrent handlers are gathered per event-loop turn: where the acked
  deliveries are the oldest this process still holds on their channel, one
  ``basic.ack(multiple=True)`` settles them all; the rest are acked one by one. A
  multiple ack never covers a delivery that is still buffered or leased.
- **Publisher confirms** on every send; ``send_many`` publishes its batch in one socket
  write (persistent, mandatory) and awaits all the confirms together.
- **Dead letters** are drained from ``sync-deadletter`` into the store's ``bus_messages``
  table (as ``sync-deadletter`` rows with their tenant) before every list/replay/purge, so
  they can be inspected and managed per tenant; replay publishes them back (confirmed)
  before deleting the stored copy.
- **Idempotent send** uses the store's ``bus_dedup`` table: ids seen in the window are
  skipped; ids are recorded after the broker confirms (a crash in between, or two
  concurrent sends of one id, can still yield a duplicate: consumers stay idempotent).
  Concurrent sends share those store reads and writes.
- **Metrics** without the management plugin: ``depth`` is a passive declare's ready count
  (plus this process's buffered and leased messages); ``oldest_age`` is the age of the
  oldest message this process holds (the broker only tells its age by delivering it).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Generic, TypeVar, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractRobustChannel,
    AbstractRobustConnection,
    HeadersType,
)
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp.commands import Basic
from pamqp.header import ContentHeader
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus.base import (
    QUEUE_DEADLETTER,
    QUEUE_OUTBOUND,
    QUEUE_RANK,
    WORK_QUEUES,
    Body,
    Bus,
    Lease,
    Message,
    OutgoingMessage,
    check_queue,
    session_shard,
)
from castiel_sync.bus.router import routing_table
from castiel_sync.bus.sql import SqlBus, decode_body, encode_body
from castiel_sync.domain.tenancy import Scope, SystemScope

log = structlog.get_logger(__name__)
R = TypeVar("R")
EXCHANGE = "castiel.integration"
DEFAULT_DELAY_TIERS = (0.05, 0.25, 1.0, 5.0, 30.0, 300.0, 1800.0)
DEFAULT_PREFETCH = {
    "sync-inbound-webhook": 500,
    "sync-outbound": 500,
    "sync-inbound-scheduled": 8,  # long jobs: don't hoard them from other workers
    QUEUE_DEADLETTER: 10,
}
_PERSISTENT = 2  # AMQP delivery mode: written to disk (quorum queues store every message)
_JSON = "application/json"
_BYTES = "application/octet-stream"


@dataclass(slots=True)
class _Outgoing:
    """One message ready to publish; ``target`` is the queue it is for."""

    body: bytes
    properties: Basic.Properties
    target: str


@dataclass(slots=True)
class _Held:
    """A delivery this process holds: buffered (ready) or leased."""

    delivery: DeliveredMessage
    #: The aiormq channel it came on and its tag there (what acks it).
    channel: aiormq.Channel
    tag: int
    message: Message
    not_before: float = 0.0
    #: Arrival order in this process (ties in priority are served oldest first).
    order: int = 0
    token: str | None = None
    expires: float = 0.0


@dataclass
class _QueueState:
    """Buffered deliveries of one logical queue, kept ready to hand out in order.

    Messages without a session key sit in a heap on (-priority, arrival); each session key
    has a FIFO whose head alone can be handed out. ``_pick`` merges the two without
    sorting the whole buffer on every call (it holds up to the prefetch, 500).
    """

    plain: list[tuple[int, int, _Held]] = field(default_factory=list)
    sessions: dict[str, deque[_Held]] = field(default_factory=dict)
    size: int = 0
    consumers: list[_Consumer] = field(default_factory=list)

    def push(self, held: _Held, *, front: bool = False) -> None:
        """Buffer ``held``; ``front``: a session message given back, again its session's head."""
        self.size += 1
        key = held.message.session_key
        if key is None:
            heapq.heappush(self.plain, (-held.message.priority, held.order, held))
            return
        fifo = self.sessions.setdefault(key, deque())
        if front:
            fifo.appendleft(held)
        else:
            fifo.append(held)

    def held(self) -> Iterator[_Held]:
        for _, _, h in self.plain:
            yield h
        for fifo in self.sessions.values():
            yield from fifo

    def drop_from(self, channel: aiormq.Channel) -> None:
        """Forget the buffered deliveries of ``channel`` (closed: the broker has them back)."""
        self.plain = [entry for entry in self.plain if entry[2].channel is not channel]
        heapq.heapify(self.plain)
        for key, fifo in list(self.sessions.items()):
            kept = deque(h for h in fifo if h.channel is not channel)
            if kept:
                self.sessions[key] = kept
            else:
                del self.sessions[key]
        self.size = len(self.plain) + sum(len(fifo) for fifo in self.sessions.values())


@dataclass(slots=True)
class _Consumer:
    """A consumer of one physical queue: aio-pika's robust channel, and the aiormq channel
    and consumer tag it currently consumes with (both change when the channel reopens)."""

    channel: AbstractRobustChannel
    name: str
    underlay: aiormq.Channel
    tag: str


def _us(epoch: float) -> int:
    return round(epoch * 1_000_000)


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _int_header(headers: HeadersType, key: str) -> int | None:
    """An integer header (ours, or the broker's ``x-delivery-count``); None if absent."""
    value = headers.get(key)
    if value is None:
        return None
    if isinstance(value, int | float | str | bytes | bytearray | Decimal):
        return int(value)
    raise TypeError(f"header {key!r} is not an integer: {value!r}")


async def _publish_confirmed(
    channel: aiormq.Channel, publishes: Sequence[tuple[str, str, _Outgoing]]
) -> None:
    """Publish (exchange, routing key, message) items, mandatory, in one socket write, and
    wait until the broker has confirmed every one (a ``basic.nack`` raises
    ``aiormq.exceptions.DeliveryError``; a returned, unroutable message resolves like
    aio-pika's default ``on_return_raises=False``).

    ``aiormq.Channel.basic_publish`` takes the channel lock, queues one write and awaits
    the confirm, per message: a batch of 500 was 500 tasks and 500 socket writes, about
    half of the publishing CPU. This registers each confirm exactly as ``basic_publish``
    does (next delivery tag, a future in ``channel.confirmations``, the message id for
    returns, all under ``channel.lock``), so aiormq's reader settles them unchanged, and
    queues the frames as one write. It relies on those aiormq internals (7.x); the tests
    in ``tests/bus/test_bus_rabbitmq_publish.py`` pin the behaviour against the broker.
    """
    if not publishes:
        return
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    assert channel.publisher_confirms, "without confirm mode no confirm would ever come"
    confirms: list[asyncio.Future[Any]] = []
    frames: list[Any] = []
    async with channel.lock:
        first = channel.delivery_tag + 1
        for exchange, routing_key, message in publishes:
            channel.delivery_tag += 1
            tag = channel.delivery_tag
            message_id = message.properties.message_id
            assert message_id, "every message carries its id (returns are matched on it)"
            confirm = channel.create_future()
            channel.confirmations[tag] = confirm
            channel.message_id_delivery_tag[message_id] = tag
            confirm.add_done_callback(partial(_forget_message_id, channel, message_id, tag))
            confirms.append(confirm)
            frames.append(Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True))
            frames.append(ContentHeader(properties=message.properties, body_size=len(message.body)))
            frames.extend(channel._split_body(message.body))
        try:
            await channel.write_queue.put(ChannelFrame.marshall(channel.number, frames))
        except BaseException:
            # Not written: the broker never saw these tags, so they are reused.
            for tag in range(first, channel.delivery_tag + 1):
                channel.confirmations.pop(tag, None)
            channel.delivery_tag = first - 1
            for confirm in confirms:
                confirm.cancel()
            raise
    await asyncio.gather(*confirms)


def _forget_message_id(channel: aiormq.Channel, message_id: str, tag: int, _: Any) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        del channel.message_id_delivery_tag[message_id]


class _Merged(Generic[R]):
    """``store_call(ids)`` shared by concurrent callers: the calls made while one runs (or
    within one event-loop turn) go to the store as one call with all their ids, and each
    caller gets its result (or its error) once that call has finished.

    The dedup window costs a store read before and a write after every send: under load,
    when sends pile up, they now share those instead of queueing one each behind the
    store's writer thread."""

    def __init__(self, store_call: Callable[[list[str]], Awaitable[R]]) -> None:
        self._store_call = store_call
        self._ids: list[str] = []
        self._callers: list[asyncio.Future[R]] = []
        self._running: asyncio.Task[None] | None = None

    async def __call__(self, ids: Sequence[str]) -> R:
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._ids.extend(ids)
        self._callers.append(result)
        if self._running is None:
            self._running = asyncio.create_task(self._run())
        return await result

    async def _run(self) -> None:
        try:
            while self._callers:
                ids, callers = self._ids, self._callers
                self._ids, self._callers = [], []
                try:
                    outcome = await self._store_call(ids)
                except Exception as exc:
                    for caller in callers:
                        if not caller.done():
                            caller.set_exception(exc)
                else:
                    for caller in callers:
                        if not caller.done():
                            caller.set_result(outcome)
        finally:
            self._running = None


class RabbitBus(Bus):
    def __init__(
        self,
        url: str,
        engine: AsyncEngine,
        *,
        max_deliveries: int = 10,
        namespace: str = "",
        outbound_shards: int = 4,
        prefetch: dict[str, int] | None = None,
        delay_tiers: Sequence[float] = DEFAULT_DELAY_TIERS,
        dedup_window: float = 600.0,
    ) -> None:
        self.url = url
        self.max_deliveries = max_deliveries
        self.ns = namespace
        self.outbound_shards = outbound_shards
        self.prefetch = {**DEFAULT_PREFETCH, **(prefetch or {})}
        self.delay_tiers = sorted(delay_tiers)
        self.routes = routing_table()
        # The store keeps dead letters (for inspection) and the dedup window.
        self._store = SqlBus(engine, dedup_window=dedup_window)
        # Concurrent sends share their dedup window reads and writes (see _Merged).
        self._seen_ids = _Merged(self._store.seen_ids)
        self._remember_ids = _Merged(self._store.remember_ids)
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._topic_name = f"{self.ns}{EXCHANGE}"
        self._queues: dict[str, _QueueState] = {}
        self._leased: dict[str, _Held] = {}
        self._busy: set[tuple[str, str]] = set()  # (queue, session key) in flight
        self._arrivals = itertools.count()
        # Lease tokens only need to be unique among this bus's leases: a counter is enough
        # (uuid4 read the OS's random source for every message handed out).
        self._lease_prefix = f"{uuid.uuid4().hex[:8]}-"
        self._lease_numbers = itertools.count(1)
        # Per consumer channel, delivery tags not yet settled, in delivery order (None once
        # they arrive out of order there: then no multiple acks on that channel).
        self._unsettled: dict[Any, dict[int, None] | None] = {}
        self._acks: list[tuple[_Held, asyncio.Future[bool]]] = []
        self._ack_flusher: asyncio.Task[None] | None = None
        self._declared_tiers: set[int] = set()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None

    # -- names --------------------------------------------------------------------------

    def _phys(self, queue: str, shard: int | None = None) -> str:
        return f"{self.ns}{queue}" if shard is None else f"{self.ns}{queue}.{shard}"

    def _physical_queues(self, queue: str) -> list[str]:
        if queue == QUEUE_OUTBOUND:
            return [self._phys(queue, i) for i in range(self.outbound_shards)]
        return [self._phys(queue)]

    def _target(self, queue: str, session_key: str | None, message_id: str) -> tuple[str, int]:
        if queue != QUEUE_OUTBOUND:
            return self._phys(queue), -1
        shard = session_shard(session_key or message_id, self.outbound_shards)
        return self._phys(queue, shard), shard

    def _tier_name(self, ms: int) -> str:
        return f"{self.ns}castiel.delay.{ms}ms"

    # -- topology -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._conn is not None:
            return
        self._conn = await aio_pika.connect_robust(
            # Named for the broker's connection list (management UI, rabbitmqctl).
            self.url,
            client_properties={"connection_name": f"castiel-sync bus {self.ns}".strip()},
        )
        self._pub = await self._conn.channel(publisher_confirms=True)
        ch = self._pub
        topic = await ch.declare_exchange(
            self._topic_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await ch.declare_exchange(
            f"{self.ns}castiel.deadletter", aio_pika.ExchangeType.FANOUT, durable=True
        )
        back = await ch.declare_exchange(
            f"{self.ns}castiel.delay.return", aio_pika.ExchangeType.HEADERS, durable=True
        )
        quorum = {
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
        dlq = await ch.declare_queue(
            self._phys(QUEUE_DEADLETTER), durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(dlx, routing_key="")
        for queue in WORK_QUEUES:
            args = {
                **quorum,
                "x-delivery-limit": self.max_deliveries,
                "x-dead-letter-exchange": dlx.name,
            }
            if queue == QUEUE_OUTBOUND:
                args["x-single-active-consumer"] = True
            for shard, name in enumerate(self._physical_queues(queue)):
                q = await ch.declare_queue(name, durable=True, arguments=args)
                await q.bind(back, arguments={"x-match": "all", "castiel-target": name})
                for event_type, target in self.routes.items():
                    if target != queue:
                        continue
                    key = f"{event_type}.{shard}" if queue == QUEUE_OUTBOUND else event_type
                    await q.bind(topic, routing_key=key)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def _tier(self, delay: float) -> tuple[str, float]:
        """The delay tier for ``delay`` (the largest not longer, else the shortest)."""
        fitting = [t for t in self.delay_tiers if t <= delay]
        tier = fitting[-1] if fitting else self.delay_tiers[0]
        ms = round(tier * 1000)
        name = self._tier_name(ms)
        if ms not in self._declared_tiers:
            assert self._pub is not None
            await self._pub.declare_queue(
                name,
                durable=True,
                # Classic: one TTL per queue, cheap to declare. Its dead-lettering is at most
                # once: a broker crash at the instant of expiry could drop a retry.
                arguments={
                    "x-queue-type": "classic",
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": f"{self.ns}castiel.delay.return",
                },
            )
            self._declared_tiers.add(ms)
        return name, tier

    async def delete_topology(self) -> None:
        """Delete every queue and exchange of this namespace (tests, benchmarks)."""
        if self._conn is None:
            return
        await self._stop_consumers()
        ch = await self._conn.channel()
        names = [self._phys(QUEUE_DEADLETTER)]
        for queue in WORK_QUEUES:
            names += self._physical_queues(queue)
        names += [self._tier_name(round(t * 1000)) for t in self.delay_tiers]
        for name in names:
            with contextlib.suppress(Exception):
                await ch.queue_delete(name)
        for name in (EXCHANGE, "castiel.deadletter", "castiel.delay.return"):
            with contextlib.suppress(Exception):
                await ch.exchange_delete(f"{self.ns}{name}")
        await ch.close()

    # -- send ---------------------------------------------------------------------------

    def _amqp(
        self,
        queue: str,
        body: Body,
        *,
        tenant_id: str,
        message_id: str,
        target: str,
        priority: int = 0,
        session_key: str | None = None,
        count: int = 0,
        not_before: float | None = None,
        enqueued: float | None = None,
        last_error: str | None = None,
        original_queue: str | None = None,
    ) -> _Outgoing:
        is_json, raw = encode_body(body)
        headers: dict[str, Any] = {
            "castiel-queue": queue,
            "castiel-target": target,
            "castiel-tenant": tenant_id,
            # Epochs travel as integer microseconds (pamqp sends a float as 32 bits).
            "castiel-enqueued": _us(enqueued if enqueued is not None else time.time()),
        }
        # Defaults (priority 0, JSON body, no earlier deliveries) are left out: every
        # header is encoded and decoded per message, and the reader assumes them.
        if priority:
            headers["castiel-priority"] = priority
        if not is_json:
            headers["castiel-json"] = 0
        if count:
            headers["castiel-count"] = count
        if session_key is not None:
            headers["castiel-session"] = session_key
        if not_before is not None:
            headers["castiel-not-before"] = _us(not_before)
        if last_error:
            headers["castiel-last-error"] = last_error[:4000]
        if original_queue:
            headers["castiel-original-queue"] = original_queue
        properties = Basic.Properties(
            content_type=_JSON if is_json else _BYTES,
            delivery_mode=_PERSISTENT,
            headers=headers,
            message_id=message_id,
        )
        return _Outgoing(raw, properties, target)

    async def _publish(self, message: _Outgoing, *, delay: float = 0.0) -> None:
        """Confirmed publish to ``castiel-target`` (through a delay tier if asked)."""
        routing_key = (await self._tier(delay))[0] if delay > 0 else message.target
        await self._publish_all([("", routing_key, message)])

    async def _publish_all(self, publishes: Sequence[tuple[str, str, _Outgoing]]) -> None:
        """Publish each (exchange, routing key, message) and wait for all their confirms."""
        assert self._pub is not None, "call start() first"
        channel = cast(aiormq.Channel, await self._pub.get_underlay_channel())
        await _publish_confirmed(channel, publishes)

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, dedup: bool = True
    ) -> list[str]:
        assert self._pub is not None, "call start() first"
        ids: list[str] = []
        explicit = [m.message_id for m in messages if m.message_id] if dedup else []
        # (A copy: it also collects this batch's own ids, and other sends share the result.)
        seen = set(await self._seen_ids(explicit)) if explicit else set()
        now = time.time()
        publishes: list[tuple[str, str, _Outgoing]] = []
        delayed: list[Awaitable[None]] = []
        for m in messages:
            check_queue(m.queue)
            mid = m.message_id or str(uuid.uuid4())
            ids.append(mid)
            if mid in seen:
                continue
            seen.add(mid)  # a repeat inside this batch
            target, shard = self._target(m.queue, m.session_key, mid)
            nb = m.not_before.timestamp() if m.not_before else None
            amqp = self._amqp(
                m.queue,
                m.body,
                tenant_id=m.tenant_id,
                message_id=mid,
                target=target,
                priority=m.priority,
                session_key=m.session_key,
                not_before=nb,
                enqueued=now,
            )
            if nb is not None and nb > now:
                delayed.append(self._publish(amqp, delay=nb - now))
            elif m.event_type and self.routes.get(m.event_type) == m.queue:
                key = f"{m.event_type}.{shard}" if shard >= 0 else m.event_type
                publishes.append((self._topic_name, key, amqp))
            else:
                publishes.append(("", target, amqp))
        await asyncio.gather(self._publish_all(publishes), *delayed)
        if explicit:
            await self._remember_ids(explicit)
        return ids

    # -- consume ------------------------------------------------------------------------

    async def _ensure_consumers(self, queues: Sequence[str]) -> bool:
        """Start consumers for queues not consumed yet; True if any were started."""
        assert self._conn is not None, "call start() first"
        started = False
        for queue in queues:
            if queue in self._queues:
                continue
            state = self._queues[queue] = _QueueState()
            for name in self._physical_queues(queue):
                ch = cast(AbstractRobustChannel, await self._conn.channel())
                await ch.set_qos(prefetch_count=self.prefetch.get(queue, 50))
                underlay, tag = await self._consume(ch, name, queue)
                consumer = _Consumer(ch, name, underlay, tag)
                state.consumers.append(consumer)
                ch.reopen_callbacks.add(partial(self._on_reopen, queue, consumer))
            started = True
        return started

    async def _consume(
        self, channel: AbstractRobustChannel, name: str, queue: str
    ) -> tuple[aiormq.Channel, str]:
        # Consumed on the aiormq channel: aio-pika would wrap every delivery in an
        # IncomingMessage (copying each property) and run the callback in a second task;
        # _accept needs neither. Its robust channel still reopens after a lost
        # connection; _on_reopen then consumes again.
        underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
        ok = await underlay.basic_consume(name, self._on_delivery_for(queue))
        assert ok.consumer_tag is not None
        return underlay, ok.consumer_tag

    def _on_reopen(self, queue: str, consumer: _Consumer, *_: Any) -> None:
        """aio-pika reopened ``consumer``'s channel (the connection was lost and is back)."""
        self._spawn(self._resume(queue, consumer))

    async def _resume(self, queue: str, consumer: _Consumer) -> None:
        """Consume again on the reopened channel. The old channel's deliveries are void (the
        broker redelivers them): buffered ones are dropped and leased ones are lost leases
        (their ack or nack returns False, as after an expired lease)."""
        state = self._queues.get(queue)
        if state is None or consumer not in state.consumers:
            return  # stopped meanwhile
        old = consumer.underlay
        state.drop_from(old)
        for token, held in list(self._leased.items()):
            if held.channel is old:
                del self._leased[token]
                if held.message.session_key is not None:
                    self._busy.discard((held.message.queue, held.message.session_key))
        self._unsettled.pop(old, None)
        try:
            consumer.underlay, consumer.tag = await self._consume(
                consumer.channel, consumer.name, queue
            )
        except Exception:
            log.exception("could not consume again after reconnecting", queue=consumer.name)

    def _on_delivery_for(self, queue: str) -> Any:
        async def on_delivery(delivery: DeliveredMessage) -> None:
            self._accept(queue, delivery)

        return on_delivery

    def _parse(self, queue: str, delivery: DeliveredMessage) -> Message:
        properties = delivery.header.properties
        h = properties.headers or {}
        broker_count = _int_header(h, "x-delivery-count") or 0
        own_count = _int_header(h, "castiel-count") or 0
        enqueued = _int_header(h, "castiel-enqueued")
        nb = _int_header(h, "castiel-not-before")
        is_json = _int_header(h, "castiel-json")
        session = h.get("castiel-session")
        last_error = h.get("castiel-last-error")
        original = h.get("castiel-original-queue")
        return Message(
            id=properties.message_id or "",
            queue=queue,
            body=decode_body(1 if is_json is None else is_json, delivery.body),
            tenant_id=str(h.get("castiel-tenant") or ""),
            priority=_int_header(h, "castiel-priority") or 0,
            session_key=str(session) if session is not None else None,
            delivery_count=own_count + broker_count + 1,
            enqueued_at=_dt(enqueued / 1e6) if enqueued is not None else None,
            not_before=_dt(nb / 1e6) if nb is not None else None,
            last_error=str(last_error) if last_error is not None else None,
            original_queue=str(original) if original is not None else None,
        )

    def _track(self, channel: aiormq.Channel, tag: int) -> None:
        tags = self._unsettled.setdefault(channel, {})
        if tags is None:
            return
        if tags and tag <= next(reversed(tags)):
            self._unsettled[channel] = None  # out of order: single acks only
            return
        tags[tag] = None

    def _settled(self, held: _Held) -> None:
        tags = self._unsettled.get(held.channel)
        if tags is not None:
            tags.pop(held.tag, None)

    @staticmethod
    def _target_of(held: _Held) -> str:
        return str((held.delivery.header.properties.headers or {})["castiel-target"])

    async def _settle(self, held: _Held, *, requeue: bool | None = None) -> None:
        """Ack ``held`` (``requeue`` given: nack it, back to the broker or not)."""
        self._settled(held)
        if requeue is None:
            await held.channel.basic_ack(held.tag)
        else:
            await held.channel.basic_nack(held.tag, requeue=requeue)

    def _accept(self, queue: str, delivery: DeliveredMessage) -> None:
        tag = delivery.delivery_tag
        assert tag is not None  # a consumer's deliveries always carry one
        channel = cast(aiormq.Channel, delivery.channel)
        # Tracked before parsing: a delivery that fails to parse stays unsettled, so no
        # multiple ack ever covers it.
        self._track(channel, tag)
        message = self._parse(queue, delivery)
        nb = message.not_before.timestamp() if message.not_before else 0.0
        held = _Held(delivery, channel, tag, message, not_before=nb, order=next(self._arrivals))
        if nb > time.time() and message.session_key is None:
            # Came back from a delay tier early: wait again, not counted as a delivery.
            self._spawn(self._redelay(held, nb - time.time()))
            return
        self._queues[queue].push(held)
        self._notify()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redelay(self, held: _Held, delay: float) -> None:
        m = held.message
        copy = self._amqp(
            m.queue,
            m.body,
            tenant_id=m.tenant_id,
            message_id=m.id,
            target=self._target_of(held),
            priority=m.priority,
            session_key=m.session_key,
            count=m.delivery_count - 1,
            not_before=held.not_before,
            enqueued=m.enqueued_at.timestamp() if m.enqueued_at else None,
            last_error=m.last_error,
        )
        await self._publish(copy, delay=delay)
        await self._settle(held)

    async def receive(
        self,
        queues: Sequence[str],
        *,
        lease_seconds: float,
        max_messages: int = 1,
        wait_seconds: float = 0.0,
    ) -> list[Lease]:
        for q in queues:
            check_queue(q)
        ordered = sorted(dict.fromkeys(queues), key=lambda q: QUEUE_RANK.get(q, 5))
        if await self._ensure_consumers(ordered):
            # Let the prefetch fill so priorities see what is already waiting.
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + wait_seconds
        while True:
            wakeup = self._wakeup
            leases = await self._pick(ordered, lease_seconds, max_messages)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(remaining, 0.05))

    async def _pick(self, queues: list[str], lease_seconds: float, limit: int) -> list[Lease]:
        leases: list[Lease] = []
        now = time.time()
        for queue in queues:
            state = self._queues[queue]
            if not state.size:
                continue
            # Session heads that may go out now, in delivery order.
            heads = sorted(
                (-fifo[0].message.priority, fifo[0].order, key)
                for key, fifo in state.sessions.items()
                if (queue, key) not in self._busy and fifo[0].not_before <= now
            )
            next_head = 0
            later: list[tuple[int, int, _Held]] = []
            while len(leases) < limit:
                plain = state.plain[0] if state.plain else None
                head = heads[next_head] if next_head < len(heads) else None
                if plain is None and head is None:
                    break
                if head is None or (plain is not None and plain[:2] < head[:2]):
                    entry = heapq.heappop(state.plain)
                    h = entry[2]
                    if h.not_before > now:
                        later.append(entry)
                        continue
                else:
                    next_head += 1
                    fifo = state.sessions[head[2]]
                    h = fifo.popleft()
                    if not fifo:
                        del state.sessions[head[2]]
                state.size -= 1
                if h.message.delivery_count > self.max_deliveries:
                    # Delivered the maximum number of times; its last holder never settled.
                    self._spawn(self._dead_letter(h, h.message.last_error or "lease expired"))
                    continue
                h.token = f"{self._lease_prefix}{next(self._lease_numbers)}"
                h.expires = now + lease_seconds
                self._leased[h.token] = h
                key = h.message.session_key
                if key is not None:
                    self._busy.add((queue, key))
                expires = _dt(h.expires)
                assert expires is not None
                leases.append(Lease(h.message, h.token, expires, handle=h))
            for entry in later:
                heapq.heappush(state.plain, entry)
            if len(leases) >= limit:
                return leases
        return leases

    # -- settle -------------------------------------------------------------------------

    def _release(self, lease: Lease) -> _Held | None:
        held = self._leased.pop(lease.token, None)
        if held is None:
            return None
        if held.message.session_key is not None:
            self._busy.discard((held.message.queue, held.message.session_key))
        self._notify()
        return held

    async def ack(self, lease: Lease) -> bool:
        held = self._release(lease)
        if held is None:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._acks.append((held, future))
        if self._ack_flusher is None:
            self._ack_flusher = asyncio.create_task(self._flush_acks())
        return await asyncio.shield(future)

    async def ack_many(self, leases: Sequence[Lease]) -> int:
        return sum(await asyncio.gather(*(self.ack(lease) for lease in leases)))

    async def _flush_acks(self) -> None:
        """Send the acks gathered so far: a multiple ack for each channel's oldest run."""
        try:
            while self._acks:
                batch, self._acks = self._acks, []
                by_channel: dict[Any, dict[int, tuple[_Held, asyncio.Future[bool]]]] = {}
                singles: list[tuple[_Held, asyncio.Future[bool]]] = []
                for held, future in batch:
                    if self._unsettled.get(held.channel) is None:
                        singles.append((held, future))
                    else:
                        by_channel.setdefault(held.channel, {})[held.tag] = (held, future)
                sends: list[Any] = []
                for channel, pending in by_channel.items():
                    tags = self._unsettled.get(channel)
                    run: list[tuple[_Held, asyncio.Future[bool]]] = []
                    if tags is not None:
                        # The oldest unsettled deliveries of the channel, all being acked.
                        for tag in tags:
                            if tag not in pending:
                                break
                            run.append(pending.pop(tag))
                    if len(run) > 1:
                        sends.append(self._send_acks(run, multiple=True))
                    else:
                        singles.extend(run)
                    singles.extend(pending.values())
                sends.extend(self._send_acks([one], multiple=False) for one in singles)
                await asyncio.gather(*sends)
        finally:
            self._ack_flusher = None

    async def _send_acks(
        self, run: list[tuple[_Held, asyncio.Future[bool]]], *, multiple: bool
    ) -> None:
        """Ack ``run`` (one delivery, or with ``multiple`` the oldest run up to its last)."""
        for held, _ in run:
            self._settled(held)
        last = run[-1][0]
        try:
            await last.channel.basic_ack(last.tag, multiple=multiple)
            ok = True
        except Exception:  # the channel is gone: the broker redelivers them
            ok = False
        for _, future in run:
            if not future.done():
                future.set_result(ok)

    async def nack(self, lease: Lease, *, delay_seconds: float = 0.0, error: str = "") -> bool:
        held = self._release(lease)
        if held is None:
            return False
        m = held.message
        if m.delivery_count >= self.max_deliveries:
            await self._dead_letter(held, error)
            return True
        if m.session_key is not None:
            # Keep it here, at the head of its session (single active consumer).
            retry = replace(m, delivery_count=m.delivery_count + 1, last_error=error or None)
            held.message = retry
            held.not_before = time.time() + max(0.0, delay_seconds)
            held.token = None
            self._queues[m.queue].push(held, front=True)
            if delay_seconds > 0:
                asyncio.get_running_loop().call_later(delay_seconds, self._notify)
            return True
        copy = self._amqp(
            m.queue,
            m.body,
            tenant_id=m.tenant_id,
            message_id=m.id,
            target=self._target_of(held),
            priority=m.priority,
            session_key=m.session_key,
            count=m.delivery_count,
            not_before=time.time() + delay_seconds if delay_seconds > 0 else None,
            enqueued=m.enqueued_at.timestamp() if m.enqueued_at else None,
            last_error=error,
        )
        await self._publish(copy, delay=delay_seconds)
        await self._settle(held)
        return True

    async def _dead_letter(self, held: _Held, error: str) -> None:
        m = held.message
        copy = self._amqp(
            QUEUE_DEADLETTER,
            m.body,
            tenant_id=m.tenant_id,
            message_id=m.id,
            target=self._phys(QUEUE_DEADLETTER),
            priority=m.priority,
            session_key=m.session_key,
            count=m.delivery_count,
            enqueued=m.enqueued_at.timestamp() if m.enqueued_at else None,
            last_error=error or m.last_error,
            original_queue=m.queue,
        )
        await self._publish(copy)
        await self._settle(held)
        self._notify()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.time()
            for token, held in list(self._leased.items()):
                if held.expires > now:
                    continue
                del self._leased[token]
                m = held.message
                if m.session_key is not None:
                    # Offer it again here, still first in its session.
                    self._busy.discard((m.queue, m.session_key))
                    held.message = replace(m, delivery_count=m.delivery_count + 1)
                    held.token = None
                    self._queues[m.queue].push(held, front=True)
                else:
                    with contextlib.suppress(Exception):
                        await self._settle(held, requeue=True)
                self._notify()

    # -- dead letters -------------------------------------------------------------------

    async def _drain_dead_letters(self) -> None:
        """Move dead letters from the broker into the store (then ack them there)."""
        assert self._conn is not None, "call start() first"
        ch = await self._conn.channel()
        try:
            underlay = await ch.get_underlay_channel()
            while True:
                batch: list[DeliveredMessage] = []
                while len(batch) < 100:
                    got = await underlay.basic_get(self._phys(QUEUE_DEADLETTER), no_ack=False)
                    if got.delivery_tag is None:  # Basic.GetEmpty
                        break
                    batch.append(got)
                if not batch:
                    return
                messages = []
                for delivery in batch:
                    m = self._parse(QUEUE_DEADLETTER, delivery)
                    h = delivery.header.properties.headers or {}
                    if m.original_queue is None:  # dead-lettered by the broker
                        m.original_queue = str(h.get("castiel-queue") or "")
                        m.last_error = m.last_error or "delivery limit reached (broker)"
                    messages.append(m)
                await self._store.store_dead_letters(messages)
                for delivery in batch:
                    assert delivery.delivery_tag is not None
                    await underlay.basic_ack(delivery.delivery_tag)
        finally:
            await ch.close()

    async def list_dead_letters(self, scope: Scope, *, limit: int = 100) -> list[Message]:
        await self._drain_dead_letters()
        return await self._store.list_dead_letters(scope, limit=limit)

    async def replay(self, scope: Scope, ids: Sequence[str]) -> int:
        await self._drain_dead_letters()
        messages = await self._store.take_dead_letters(scope, ids)
        publishes = []
        for m in messages:
            queue = m.original_queue or ""
            if queue not in WORK_QUEUES:
                continue
            target, _ = self._target(queue, m.session_key, m.id)
            publishes.append(
                self._publish(
                    self._amqp(
                        queue,
                        m.body,
                        tenant_id=m.tenant_id,
                        message_id=m.id,
                        target=target,
                        priority=m.priority,
                        session_key=m.session_key,
                        last_error=m.last_error,
                    )
                )
            )
        await asyncio.gather(*publishes)
        done = [m.id for m in messages if (m.original_queue or "") in WORK_QUEUES]
        await self._store.purge(SystemScope("replayed to RabbitMQ"), done)
        return len(done)

    async def purge(self, scope: Scope, ids: Sequence[str]) -> int:
        await self._drain_dead_letters()
        return await self._store.purge(scope, ids)

    # -- metrics ------------------------------------------------------------------------

    async def depth(self, queue: str) -> int:
        check_queue(queue)
        assert self._conn is not None, "call start() first"
        ch = await self._conn.channel()
        try:
            total = 0
            for name in self._physical_queues(queue):
                declared = await ch.declare_queue(name, passive=True)
                total += declared.declaration_result.message_count or 0
        finally:
            await ch.close()
        state = self._queues.get(queue)
        total += state.size if state else 0
        total += sum(1 for h in self._leased.values() if h.message.queue == queue)
        if queue == QUEUE_DEADLETTER:
            total += await self._store.depth(QUEUE_DEADLETTER)
        return total

    async def oldest_age(self, queue: str) -> float:
        check_queue(queue)
        held = [h for h in self._leased.values() if h.message.queue == queue]
        state = self._queues.get(queue)
        held += list(state.held()) if state else []
        stamps = [h.message.enqueued_at.timestamp() for h in held if h.message.enqueued_at]
        if queue == QUEUE_DEADLETTER:
            return max(await self._store.oldest_age(queue), 0.0)
        return max(0.0, time.time() - min(stamps)) if stamps else 0.0

    # -- shutdown -----------------------------------------------------------------------

    async def _stop_consumers(self) -> None:
        for state in self._queues.values():
            for consumer in state.consumers:
                with contextlib.suppress(Exception):
                    await consumer.underlay.basic_cancel(consumer.tag)
                with contextlib.suppress(Exception):
                    await consumer.channel.close()  # unacked deliveries go back to the broker
        self._queues.clear()
        self._leased.clear()
        self._busy.clear()
        self._unsettled.clear()

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        await self._stop_consumers()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        await self._store.close()
