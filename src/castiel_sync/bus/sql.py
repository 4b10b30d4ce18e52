"""Embedded bus: durable queues as tables in the store (SQLite or PostgreSQL).

One row per message in ``bus_messages``. A single time column, ``visible_at``, carries
the whole life cycle: a new message is visible at its not-before time, a claim pushes it
to the lease's end (so a worker that dies simply lets the lease run out and the message
becomes visible again), a nack to the end of the retry delay. ``delivery_count`` is
bumped by every claim; a claim that finds it past the limit moves the message to
``sync-deadletter`` in the same transaction (the previous holder never acked it).

Claims never hand one message to two workers:

- SQLite has one writer. Claims run in a ``BEGIN IMMEDIATE`` transaction (the write lock
  is taken before anything is read), as ``UPDATE ... WHERE seq IN (SELECT ... LIMIT n)
  RETURNING``. In-process writers also queue on an asyncio lock so they don't spin in
  SQLite's busy handler.
- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` in a CTE feeding the UPDATE.

Sessions: a message with a session key is claimable only while it is the oldest message
of its (queue, session key), i.e. the head. While the head is leased or delayed it is not
visible, so nothing else of that key is handed out: one in flight per key, FIFO.

Idempotent send: ``message_id`` is unique in ``bus_messages`` and remembered in
``bus_dedup`` for ``dedup_window`` seconds (default 10 minutes, as Service Bus duplicate
detection), so a repeat is dropped while the message waits and for a while after its ack;
both rows commit in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Double,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from castiel_sync.bus.base import (
    QUEUE_DEADLETTER,
    QUEUE_RANK,
    Body,
    Bus,
    Lease,
    Message,
    OutgoingMessage,
    check_queue,
    scope_tenant,
)
from castiel_sync.domain.tenancy import Scope
from castiel_sync.store.base import Base


class BusMessageRow(Base):
    """A queued message of the embedded bus (times are epoch seconds, UTC)."""

    __tablename__ = "bus_messages"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    message_id: Mapped[str] = mapped_column(String(128), unique=True)
    queue: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    session_key: Mapped[str | None] = mapped_column(String(200), default=None)
    is_json: Mapped[int] = mapped_column(Integer, default=1)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    delivery_count: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[float] = mapped_column(Double)
    not_before: Mapped[float | None] = mapped_column(Double, default=None)
    visible_at: Mapped[float] = mapped_column(Double)
    lease_token: Mapped[str | None] = mapped_column(String(36), default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    original_queue: Mapped[str | None] = mapped_column(String(64), default=None)
    dead_lettered_at: Mapped[float | None] = mapped_column(Double, default=None)


# The claim scans a queue in delivery order and filters on visibility.
Index(
    "ix_bus_messages_claim",
    BusMessageRow.queue,
    BusMessageRow.priority.desc(),
    BusMessageRow.seq,
)
# Session head lookup: min(seq) per (queue, session_key).
Index("ix_bus_messages_session", BusMessageRow.queue, BusMessageRow.session_key, BusMessageRow.seq)
# Depth and oldest age per queue; dead letters per tenant.
Index("ix_bus_messages_queue_enqueued", BusMessageRow.queue, BusMessageRow.enqueued_at)
Index("ix_bus_messages_tenant_queue", BusMessageRow.tenant_id, BusMessageRow.queue)


class BusDedupRow(Base):
    """Message ids seen recently, for idempotent send after the message is gone."""

    __tablename__ = "bus_dedup"

    message_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Double, index=True)


_T = BusMessageRow.__table__
_D = BusDedupRow.__table__

_CLAIM_SQLITE = text(
    """
    UPDATE bus_messages
    SET lease_token = :token, visible_at = :until, delivery_count = delivery_count + 1
    WHERE seq IN (
        SELECT m.seq FROM bus_messages AS m
        WHERE m.queue = :queue AND m.visible_at <= :now
          AND (m.session_key IS NULL OR m.seq = (
                SELECT min(s.seq) FROM bus_messages AS s
                WHERE s.queue = m.queue AND s.session_key = m.session_key))
        ORDER BY m.priority DESC, m.seq
        LIMIT :limit)
    RETURNING seq, message_id, queue, tenant_id, priority, session_key, is_json, body,
              delivery_count, enqueued_at, not_before, last_error, original_queue
    """
)

_CLAIM_PG = text(
    """
    WITH c AS (
        SELECT m.seq FROM bus_messages AS m
        WHERE m.queue = :queue AND m.visible_at <= :now
          AND (m.session_key IS NULL OR m.seq = (
                SELECT min(s.seq) FROM bus_messages AS s
                WHERE s.queue = m.queue AND s.session_key = m.session_key))
        ORDER BY m.priority DESC, m.seq
        LIMIT :limit
        FOR UPDATE OF m SKIP LOCKED)
    UPDATE bus_messages AS b
    SET lease_token = :token, visible_at = :until, delivery_count = b.delivery_count + 1
    FROM c WHERE b.seq = c.seq
    RETURNING b.seq, b.message_id, b.queue, b.tenant_id, b.priority, b.session_key, b.is_json,
              b.body, b.delivery_count, b.enqueued_at, b.not_before, b.last_error,
              b.original_queue
    """
)


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def encode_body(body: Body) -> tuple[int, bytes]:
    if isinstance(body, bytes | bytearray | memoryview):
        return 0, bytes(body)
    return 1, orjson.dumps(body)


def decode_body(is_json: int, raw: bytes) -> Body:
    return orjson.loads(raw) if is_json else bytes(raw)


def _message(row: Any) -> Message:
    return Message(
        id=row.message_id,
        queue=row.queue,
        body=decode_body(row.is_json, row.body),
        tenant_id=row.tenant_id,
        priority=row.priority,
        session_key=row.session_key,
        delivery_count=row.delivery_count,
        enqueued_at=_dt(row.enqueued_at),
        not_before=_dt(row.not_before),
        last_error=row.last_error,
        original_queue=row.original_queue,
    )


class SqlBus(Bus):
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_deliveries: int = 10,
        dedup_window: float = 600.0,
        poll_interval: float = 0.2,
    ) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self.max_deliveries = max_deliveries
        self.dedup_window = dedup_window
        self.poll_interval = poll_interval
        self._write_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._next_dedup_sweep = 0.0
        self._insert = sqlite_insert if self._sqlite else pg_insert

    # -- transactions -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A short write transaction; on SQLite it holds the write lock from the start."""
        if not self._sqlite:
            async with self._engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self._engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # -- send ---------------------------------------------------------------------------

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
        out = OutgoingMessage(
            queue, body, tenant_id, priority, not_before, session_key, message_id, event_type
        )
        return (await self.send_many([out]))[0]

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        now = time.time()
        ids: list[str] = []
        rows: list[dict[str, Any]] = []
        explicit: list[str] = []
        for m in messages:
            check_queue(m.queue)
            mid = m.message_id or str(uuid.uuid4())
            ids.append(mid)
            if m.message_id:
                explicit.append(mid)
            is_json, raw = encode_body(m.body)
            nb = m.not_before.timestamp() if m.not_before else None
            rows.append(
                {
                    "message_id": mid,
                    "queue": m.queue,
                    "tenant_id": m.tenant_id,
                    "priority": m.priority,
                    "session_key": m.session_key,
                    "is_json": is_json,
                    "body": raw,
                    "delivery_count": 0,
                    "enqueued_at": now,
                    "not_before": nb,
                    "visible_at": max(now, nb) if nb else now,
                }
            )
        async with self._write() as conn:
            if explicit:
                seen = set(
                    (
                        await conn.execute(
                            select(_D.c.message_id).where(
                                _D.c.message_id.in_(explicit), _D.c.expires_at > now
                            )
                        )
                    ).scalars()
                )
                if seen:
                    rows = [r for r in rows if r["message_id"] not in seen]
                fresh = [m for m in explicit if m not in seen]
                if fresh:
                    ins = self._insert(_D)
                    await conn.execute(
                        ins.on_conflict_do_update(
                            index_elements=[_D.c.message_id],
                            set_={"expires_at": ins.excluded.expires_at},
                        ),
                        [{"message_id": m, "expires_at": now + self.dedup_window} for m in fresh],
                    )
                if now >= self._next_dedup_sweep:
                    self._next_dedup_sweep = now + 60
                    await conn.execute(delete(_D).where(_D.c.expires_at < now))
            if rows:
                await conn.execute(
                    self._insert(_T).on_conflict_do_nothing(index_elements=[_T.c.message_id]),
                    rows,
                )
        self._notify()
        return ids

    # -- receive ------------------------------------------------------------------------

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
        deadline = time.monotonic() + wait_seconds
        while True:
            wakeup = self._wakeup
            leases = await self._claim(ordered, lease_seconds, max_messages)
            remaining = deadline - time.monotonic()
            if leases or remaining <= 0:
                return leases
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(remaining, self.poll_interval))

    async def _any_ready(self, queues: list[str], now: float) -> bool:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(_T.c.seq).where(_T.c.queue.in_(queues), _T.c.visible_at <= now).limit(1)
                )
            ).first()
            await conn.rollback()
        return row is not None

    async def _claim(self, queues: list[str], lease_seconds: float, limit: int) -> list[Lease]:
        now = time.time()
        # Cheap read first: idle pollers never take SQLite's write lock.
        if not await self._any_ready(queues, now):
            return []
        token = str(uuid.uuid4())
        until = now + lease_seconds
        leases: list[Lease] = []
        claim = _CLAIM_SQLITE if self._sqlite else _CLAIM_PG
        async with self._write() as conn:
            for queue in queues:
                want = limit - len(leases)
                if want <= 0:
                    break
                rows = (
                    await conn.execute(
                        claim,
                        {"token": token, "until": until, "now": now, "queue": queue, "limit": want},
                    )
                ).all()
                rows.sort(key=lambda r: (-r.priority, r.seq))
                expired = [r for r in rows if r.delivery_count > self.max_deliveries]
                if expired:
                    # Delivered max times and the last holder never settled it.
                    await self._dead_letter(
                        conn, [r.seq for r in expired], "lease expired without ack", now
                    )
                    expired_seqs = {r.seq for r in expired}
                    rows = [r for r in rows if r.seq not in expired_seqs]
                expires = _dt(until)
                assert expires is not None
                leases.extend(Lease(_message(r), token, expires, handle=r.seq) for r in rows)
        return leases

    # -- settle -------------------------------------------------------------------------

    async def ack(self, lease: Lease) -> bool:
        return await self.ack_many([lease]) == 1

    async def ack_many(self, leases: Sequence[Lease]) -> int:
        if not leases:
            return 0
        by_token: dict[str, list[int]] = defaultdict(list)
        for lease in leases:
            by_token[lease.token].append(lease.handle)
        done = 0
        async with self._write() as conn:
            for token, seqs in by_token.items():
                result = await conn.execute(
                    delete(_T).where(_T.c.seq.in_(seqs), _T.c.lease_token == token)
                )
                done += result.rowcount
        self._notify()  # a session's next message may be ready now
        return done

    async def nack(self, lease: Lease, *, delay_seconds: float = 0.0, error: str = "") -> bool:
        now = time.time()
        held = (_T.c.seq == lease.handle) & (_T.c.lease_token == lease.token)
        async with self._write() as conn:
            if lease.message.delivery_count >= self.max_deliveries:
                count = await self._dead_letter(conn, [lease.handle], error, now, held)
            else:
                result = await conn.execute(
                    update(_T)
                    .where(held)
                    .values(
                        visible_at=now + max(0.0, delay_seconds),
                        lease_token=None,
                        last_error=error or None,
                    )
                )
                count = result.rowcount
        self._notify()
        return count == 1

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        """Extend a lease still held (long work); False if it was lost."""
        until = time.time() + lease_seconds
        async with self._write() as conn:
            result = await conn.execute(
                update(_T)
                .where(_T.c.seq == lease.handle, _T.c.lease_token == lease.token)
                .values(visible_at=until)
            )
        if result.rowcount == 1:
            expires = _dt(until)
            assert expires is not None
            lease.expires_at = expires
            return True
        return False

    async def _dead_letter(
        self,
        conn: AsyncConnection,
        seqs: list[int],
        error: str,
        now: float,
        extra: Any = None,
    ) -> int:
        where = _T.c.seq.in_(seqs)
        if extra is not None:
            where = where & extra
        result = await conn.execute(
            update(_T)
            .where(where)
            .values(
                original_queue=_T.c.queue,
                queue=QUEUE_DEADLETTER,
                last_error=error if error else _T.c.last_error,
                dead_lettered_at=now,
                visible_at=now,
                lease_token=None,
            )
        )
        return int(result.rowcount)

    # -- dead letters -------------------------------------------------------------------

    def _dead_where(self, scope: Scope, ids: Sequence[str] | None = None) -> Any:
        where = _T.c.queue == QUEUE_DEADLETTER
        tenant = scope_tenant(scope)
        if tenant is not None:
            where = where & (_T.c.tenant_id == tenant)
        if ids is not None:
            where = where & _T.c.message_id.in_(list(ids))
        return where

    async def list_dead_letters(self, scope: Scope, *, limit: int = 100) -> list[Message]:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_T).where(self._dead_where(scope)).order_by(_T.c.seq).limit(limit)
                )
            ).all()
            await conn.rollback()
        return [_message(r) for r in rows]

    async def replay(self, scope: Scope, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self._write() as conn:
            result = await conn.execute(
                update(_T)
                .where(self._dead_where(scope, ids), _T.c.original_queue.is_not(None))
                .values(
                    queue=_T.c.original_queue,
                    original_queue=None,
                    delivery_count=0,
                    visible_at=time.time(),
                    lease_token=None,
                    dead_lettered_at=None,
                )
            )
        self._notify()
        return int(result.rowcount)

    async def purge(self, scope: Scope, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        async with self._write() as conn:
            result = await conn.execute(delete(_T).where(self._dead_where(scope, ids)))
        return int(result.rowcount)

    async def store_dead_letters(self, messages: Sequence[Message]) -> None:
        """Keep dead letters drained from another backend (RabbitMQ) for inspection."""
        now = time.time()
        rows = []
        for m in messages:
            is_json, raw = encode_body(m.body)
            rows.append(
                {
                    "message_id": m.id,
                    "queue": QUEUE_DEADLETTER,
                    "tenant_id": m.tenant_id,
                    "priority": m.priority,
                    "session_key": m.session_key,
                    "is_json": is_json,
                    "body": raw,
                    "delivery_count": m.delivery_count,
                    "enqueued_at": m.enqueued_at.timestamp() if m.enqueued_at else now,
                    "not_before": None,
                    "visible_at": now,
                    "last_error": m.last_error,
                    "original_queue": m.original_queue,
                    "dead_lettered_at": now,
                }
            )
        if rows:
            async with self._write() as conn:
                await conn.execute(
                    self._insert(_T).on_conflict_do_nothing(index_elements=[_T.c.message_id]),
                    rows,
                )

    async def take_dead_letters(self, scope: Scope, ids: Sequence[str]) -> list[Message]:
        """Dead letters by id (for a backend that replays them itself)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(_T).where(self._dead_where(scope, ids)))).all()
            await conn.rollback()
        return [_message(r) for r in rows]

    async def seen_ids(self, ids: Sequence[str]) -> set[str]:
        """Of ``ids``, those sent within the dedup window (for a backend without one)."""
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(_D.c.message_id).where(
                        _D.c.message_id.in_(list(ids)), _D.c.expires_at > time.time()
                    )
                )
            ).scalars()
            result = set(found)
            await conn.rollback()
        return result

    async def remember_ids(self, ids: Sequence[str]) -> None:
        """Record ``ids`` as sent, for the dedup window."""
        now = time.time()
        ins = self._insert(_D)
        async with self._write() as conn:
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[_D.c.message_id], set_={"expires_at": ins.excluded.expires_at}
                ),
                [{"message_id": m, "expires_at": now + self.dedup_window} for m in set(ids)],
            )
            if now >= self._next_dedup_sweep:
                self._next_dedup_sweep = now + 60
                await conn.execute(delete(_D).where(_D.c.expires_at < now))

    # -- metrics ------------------------------------------------------------------------

    async def depth(self, queue: str) -> int:
        check_queue(queue)
        async with self._engine.connect() as conn:
            n = (
                await conn.execute(select(func.count()).select_from(_T).where(_T.c.queue == queue))
            ).scalar_one()
            await conn.rollback()
        return int(n)

    async def oldest_age(self, queue: str) -> float:
        check_queue(queue)
        async with self._engine.connect() as conn:
            oldest = (
                await conn.execute(select(func.min(_T.c.enqueued_at)).where(_T.c.queue == queue))
            ).scalar_one()
            await conn.rollback()
        return 0.0 if oldest is None else max(0.0, time.time() - float(oldest))
