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
  RETURNING``. On a file database every write of this process runs on one thread with
  its own connection (:class:`_SqliteWriter`): one thread hand-off per operation instead
  of several per statement, and operations that queue up meanwhile commit together
  (group commit), so in-process writers never meet in SQLite's busy handler.
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
import queue as stdlib_queue
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.pool import NullPool

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
from castiel_sync.store.base import JSON_ENGINE_OPTIONS, Base
from castiel_sync.store.write_gate import GatedConnection, is_file_database


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


_T = cast(Table, BusMessageRow.__table__)
_D = cast(Table, BusDedupRow.__table__)

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


SQLITE_PRAGMAS = (
    # The store's own settings (castiel_sync.store.base.create_engine), kept identical.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)


def _file_sqlite_url(engine: AsyncEngine) -> Any:
    """The synchronous (pysqlite) URL of a file SQLite engine; None for anything else."""
    url = engine.url
    if engine.dialect.name != "sqlite":
        return None
    if not is_file_database(url.database, str(url)):
        return None  # an in-memory database is private to the engine's own connection
    return url.set(drivername="sqlite")


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
        self._found_work = False
        self._pending_acks: list[tuple[Lease, asyncio.Future[bool]]] = []
        self._ack_flusher: asyncio.Task[None] | None = None
        self._insert = sqlite_insert if self._sqlite else pg_insert
        sync_url = _file_sqlite_url(engine)
        self._writer = _SqliteWriter(sync_url) if sync_url is not None else None

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
            self._writer = _SqliteWriter(self._writer.url)  # usable again after close

    # -- transactions -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self, *, settle: bool = False) -> AsyncIterator[AsyncConnection]:
        """A short write transaction; on SQLite it holds the write lock from the start.

        ``settle`` (claims, acks, renewals) on PostgreSQL commits without waiting for the
        WAL flush: one lost in a server crash means the message is delivered again, which
        at-least-once delivery allows anyway. Sends, nacks and dead-letter moves wait."""
        if not self._sqlite:
            async with self._engine.begin() as conn:
                if settle:
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
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

    async def _tx(
        self,
        fn: Callable[..., Any],
        *args: Any,
        pre: Callable[..., bool] | None = None,
        empty: Any = None,
        settle: bool = False,
    ) -> Any:
        """Run ``fn(conn, *args)`` in a write transaction (if ``pre(conn, *args)`` holds)."""
        if self._writer is not None:
            return await self._writer.write(fn, *args, pre=pre, empty=empty)
        if pre is not None and not await self._read(pre, *args):
            return empty
        async with self._write(settle=settle) as conn:
            return await conn.run_sync(fn, *args)

    def shares_sqlite_file(self, engine: AsyncEngine) -> bool:
        """True when this bus's queues live in ``engine``'s SQLite file (the store)."""
        return self._writer is not None and _file_sqlite_url(engine) == self._writer.url

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._writer is not None:
            return await self._writer.read(fn, *args)
        async with self._engine.connect() as conn:
            try:
                return await conn.run_sync(fn, *args)
            finally:
                await conn.rollback()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def _sweep_due(self, now: float) -> bool:
        if now < self._next_dedup_sweep:
            return False
        self._next_dedup_sweep = now + 60
        return True

    # -- send ---------------------------------------------------------------------------

    async def send_many(
        self, messages: Sequence[OutgoingMessage], *, dedup: bool = True
    ) -> list[str]:
        return await self.send_many_with(messages, dedup=dedup)

    async def send_many_with(
        self,
        messages: Sequence[OutgoingMessage],
        also: Callable[[Connection], Any] | None = None,
        *,
        dedup: bool = True,
    ) -> list[str]:
        """``send_many``, and ``also(conn)`` in the same transaction (the outbox relay marks
        its rows relayed there: on the embedded bus an event is relayed exactly once, so
        it passes ``dedup=False`` and its ids skip the de-duplication window; a repeat of
        an id still waiting in the queue is dropped either way)."""
        now = time.time()
        ids: list[str] = []
        rows: list[dict[str, Any]] = []
        explicit: list[str] = []
        for m in messages:
            check_queue(m.queue)
            mid = m.message_id or str(uuid.uuid4())
            ids.append(mid)
            if m.message_id and dedup:
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
        if rows or also is not None:
            await self._tx(self._send_rows, rows, explicit, now, self._sweep_due(now), also)
            self._notify()
        return ids

    def _send_rows(
        self,
        conn: Connection,
        rows: list[dict[str, Any]],
        explicit: list[str],
        now: float,
        sweep: bool,
        also: Callable[[Connection], Any] | None = None,
    ) -> None:
        if also is not None:
            also(conn)
        if explicit:
            seen = set(
                conn.execute(
                    select(_D.c.message_id).where(
                        _D.c.message_id.in_(explicit), _D.c.expires_at > now
                    )
                ).scalars()
            )
            if seen:
                rows = [r for r in rows if r["message_id"] not in seen]
            fresh = [m for m in dict.fromkeys(explicit) if m not in seen]
            if fresh:
                self._remember(conn, fresh, now, sweep=False)
        if sweep:
            conn.execute(delete(_D).where(_D.c.expires_at < now))
        if rows:
            conn.execute(
                self._insert(_T).on_conflict_do_nothing(index_elements=[_T.c.message_id]),
                rows,
            )

    def _remember(self, conn: Connection, ids: Sequence[str], now: float, sweep: bool) -> None:
        ins = self._insert(_D)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=[_D.c.message_id], set_={"expires_at": ins.excluded.expires_at}
            ),
            [{"message_id": m, "expires_at": now + self.dedup_window} for m in ids],
        )
        if sweep:
            conn.execute(delete(_D).where(_D.c.expires_at < now))

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

    @staticmethod
    def _any_ready(conn: Connection, queues: list[str], now: float, *_: Any) -> bool:
        row = conn.execute(
            select(_T.c.seq).where(_T.c.queue.in_(queues), _T.c.visible_at <= now).limit(1)
        ).first()
        return row is not None

    def _claim_rows(
        self,
        conn: Connection,
        queues: list[str],
        now: float,
        token: str,
        until: float,
        limit: int,
    ) -> list[Any]:
        claim = _CLAIM_SQLITE if self._sqlite else _CLAIM_PG
        claimed: list[Any] = []
        for queue in queues:
            want = limit - len(claimed)
            if want <= 0:
                break
            rows = sorted(
                conn.execute(
                    claim,
                    {"token": token, "until": until, "now": now, "queue": queue, "limit": want},
                ).all(),
                key=lambda r: (-r.priority, r.seq),
            )
            expired = [r for r in rows if r.delivery_count > self.max_deliveries]
            if expired:
                # Delivered max times and the last holder never settled it.
                self._dead_letter(conn, [r.seq for r in expired], "lease expired without ack", now)
                expired_seqs = {r.seq for r in expired}
                rows = [r for r in rows if r.seq not in expired_seqs]
            claimed.extend(rows)
        return claimed

    async def _claim(self, queues: list[str], lease_seconds: float, limit: int) -> list[Lease]:
        now = time.time()
        token = str(uuid.uuid4())
        until = now + lease_seconds
        # The cheap read first, unless the last claim found work: idle pollers never
        # take SQLite's write lock, busy ones skip a read that would find what they know.
        rows = await self._tx(
            self._claim_rows,
            queues,
            now,
            token,
            until,
            limit,
            pre=None if self._found_work else self._any_ready,
            empty=[],
            settle=True,
        )
        self._found_work = bool(rows)
        if not rows:
            return []
        expires = _dt(until)
        assert expires is not None
        return [Lease(_message(r), token, expires, handle=r.seq) for r in rows]

    # -- settle -------------------------------------------------------------------------

    async def ack(self, lease: Lease) -> bool:
        # Group commit: acks that arrive while one is being written go out together, in
        # one DELETE (workers ack each message from its own task).
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending_acks.append((lease, future))
        if self._ack_flusher is None:
            self._ack_flusher = asyncio.create_task(self._flush_acks())
        return await asyncio.shield(future)

    async def _flush_acks(self) -> None:
        try:
            while self._pending_acks:
                batch, self._pending_acks = self._pending_acks, []
                by_token: dict[str, list[int]] = defaultdict(list)
                for lease, _ in batch:
                    by_token[lease.token].append(lease.handle)
                try:
                    deleted: set[tuple[str, int]] = await self._tx(
                        self._ack_returning, dict(by_token), settle=True
                    )
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self._notify()  # a session's next message may be ready now
                for lease, future in batch:
                    if not future.done():
                        future.set_result((lease.token, lease.handle) in deleted)
        finally:
            self._ack_flusher = None

    @staticmethod
    def _ack_returning(conn: Connection, by_token: dict[str, list[int]]) -> set[tuple[str, int]]:
        deleted: set[tuple[str, int]] = set()
        for token, seqs in by_token.items():
            result = conn.execute(
                delete(_T).where(_T.c.seq.in_(seqs), _T.c.lease_token == token).returning(_T.c.seq)
            )
            deleted.update((token, seq) for seq in result.scalars())
        return deleted

    async def ack_many(self, leases: Sequence[Lease]) -> int:
        if not leases:
            return 0
        by_token: dict[str, list[int]] = defaultdict(list)
        for lease in leases:
            by_token[lease.token].append(lease.handle)
        done: int = await self._tx(self._ack_rows, dict(by_token), settle=True)
        self._notify()  # a session's next message may be ready now
        return done

    @staticmethod
    def _ack_rows(conn: Connection, by_token: dict[str, list[int]]) -> int:
        done = 0
        for token, seqs in by_token.items():
            result = conn.execute(delete(_T).where(_T.c.seq.in_(seqs), _T.c.lease_token == token))
            done += result.rowcount
        return done

    async def nack(self, lease: Lease, *, delay_seconds: float = 0.0, error: str = "") -> bool:
        now = time.time()
        dead = lease.message.delivery_count >= self.max_deliveries
        count = await self._tx(
            self._nack_row, lease.handle, lease.token, dead, now, delay_seconds, error
        )
        self._notify()
        return bool(count == 1)

    def _nack_row(
        self,
        conn: Connection,
        seq: int,
        token: str,
        dead: bool,
        now: float,
        delay_seconds: float,
        error: str,
    ) -> int:
        held = (_T.c.seq == seq) & (_T.c.lease_token == token)
        if dead:
            return self._dead_letter(conn, [seq], error, now, held)
        result = conn.execute(
            update(_T)
            .where(held)
            .values(
                visible_at=now + max(0.0, delay_seconds),
                lease_token=None,
                last_error=error or None,
            )
        )
        return int(result.rowcount)

    async def renew(self, lease: Lease, *, lease_seconds: float) -> bool:
        """Extend a lease still held (long work); False if it was lost."""
        until = time.time() + lease_seconds
        count = await self._tx(self._renew_row, lease.handle, lease.token, until, settle=True)
        if count == 1:
            expires = _dt(until)
            assert expires is not None
            lease.expires_at = expires
            return True
        return False

    @staticmethod
    def _renew_row(conn: Connection, seq: int, token: str, until: float) -> int:
        result = conn.execute(
            update(_T).where(_T.c.seq == seq, _T.c.lease_token == token).values(visible_at=until)
        )
        return int(result.rowcount)

    @staticmethod
    def _dead_letter(
        conn: Connection,
        seqs: list[int],
        error: str,
        now: float,
        extra: Any = None,
    ) -> int:
        where = _T.c.seq.in_(seqs)
        if extra is not None:
            where = where & extra
        result = conn.execute(
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

    @staticmethod
    def _select_rows(conn: Connection, statement: Any) -> list[Any]:
        return list(conn.execute(statement).all())

    @staticmethod
    def _rowcount(conn: Connection, statement: Any) -> int:
        return int(conn.execute(statement).rowcount)

    async def list_dead_letters(self, scope: Scope, *, limit: int = 100) -> list[Message]:
        statement = select(_T).where(self._dead_where(scope)).order_by(_T.c.seq).limit(limit)
        return [_message(r) for r in await self._read(self._select_rows, statement)]

    async def replay(self, scope: Scope, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        statement = (
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
        count: int = await self._tx(self._rowcount, statement)
        self._notify()
        return count

    async def purge(self, scope: Scope, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        count: int = await self._tx(self._rowcount, delete(_T).where(self._dead_where(scope, ids)))
        return count

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
            await self._tx(self._insert_rows, rows)

    def _insert_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.execute(
            self._insert(_T).on_conflict_do_nothing(index_elements=[_T.c.message_id]), rows
        )

    async def take_dead_letters(self, scope: Scope, ids: Sequence[str]) -> list[Message]:
        """Dead letters by id (for a backend that replays them itself)."""
        statement = select(_T).where(self._dead_where(scope, ids))
        return [_message(r) for r in await self._read(self._select_rows, statement)]

    async def seen_ids(self, ids: Sequence[str]) -> set[str]:
        """Of ``ids``, those sent within the dedup window (for a backend without one)."""
        statement = select(_D.c.message_id).where(
            _D.c.message_id.in_(list(ids)), _D.c.expires_at > time.time()
        )
        return {r.message_id for r in await self._read(self._select_rows, statement)}

    async def remember_ids(self, ids: Sequence[str]) -> None:
        """Record ``ids`` as sent, for the dedup window."""
        now = time.time()
        await self._tx(self._remember, sorted(set(ids)), now, self._sweep_due(now))

    # -- metrics ------------------------------------------------------------------------

    @staticmethod
    def _scalar(conn: Connection, statement: Any) -> Any:
        return conn.execute(statement).scalar_one()

    async def depth(self, queue: str) -> int:
        check_queue(queue)
        statement = select(func.count()).select_from(_T).where(_T.c.queue == queue)
        return int(await self._read(self._scalar, statement))

    async def oldest_age(self, queue: str) -> float:
        check_queue(queue)
        oldest = await self._read(
            self._scalar, select(func.min(_T.c.enqueued_at)).where(_T.c.queue == queue)
        )
        return 0.0 if oldest is None else max(0.0, time.time() - float(oldest))


class _SqliteWriter:
    """One thread, one sqlite3 connection: the embedded bus's writes on SQLite.

    Through aiosqlite every statement costs several hand-offs between the event loop and
    the driver's thread (cursor, execute, fetch, close, then BEGIN and COMMIT), and on a
    busy machine each hand-off waits for the OS to schedule the other thread: a one-row
    send took ~5 ms. Here a whole operation (send, claim, ack, nack...) is one function
    run on this thread, so it costs one hand-off each way. Operations queued while one
    runs commit together in one ``BEGIN IMMEDIATE`` transaction (group commit); if one of
    them fails, that transaction rolls back and each runs again in its own, so one
    failing operation never takes the others with it. Durability is unchanged:
    the same WAL, ``synchronous=NORMAL`` and busy timeout as the store's engine, and every
    caller's future resolves only after its transaction committed.

    A claim's readiness probe (``pre``) runs before the transaction, on a second
    connection in autocommit: idle pollers never take SQLite's write lock. The thread
    exits after ``idle_seconds`` without work and starts again on demand.
    """

    def __init__(self, url: Any, *, idle_seconds: float = 5.0, max_batch: int = 64) -> None:
        self.url = url
        self._idle = idle_seconds
        self._max_batch = max_batch
        self._jobs: stdlib_queue.SimpleQueue[_Job | None] = stdlib_queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def write(
        self,
        fn: Callable[..., Any],
        *args: Any,
        pre: Callable[..., bool] | None = None,
        empty: Any = None,
    ) -> Any:
        return await self._submit(_Job(fn, args, pre, write=True, empty=empty))

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._submit(_Job(fn, args, None, write=False))

    async def _submit(self, job: _Job) -> Any:
        loop = asyncio.get_running_loop()
        job.loop, job.future = loop, loop.create_future()
        with self._lock:
            if self._closed:
                raise RuntimeError("bus closed")
            self._jobs.put(job)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="castiel-bus-sqlite", daemon=True
                )
                self._thread.start()
        return await job.future

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._jobs.put(None)
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _engines(self) -> tuple[Engine, Engine]:
        def pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we say when transactions begin
            cursor = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        # GatedConnection: in-process writers of this file (the application's engine
        # too) take turns through its write gate, not SQLite's sleeping busy handler.
        options: dict[str, Any] = {
            "poolclass": NullPool,
            "connect_args": {"factory": GatedConnection},
            **JSON_ENGINE_OPTIONS,
        }
        writer = create_sync_engine(self.url, **options)
        reader = create_sync_engine(self.url, **options)
        for engine in (writer, reader):
            event.listen(engine, "connect", pragmas)
        event.listen(writer, "begin", _begin_immediate)
        return writer, reader

    def _main(self) -> None:
        writer, reader = self._engines()
        wconn, rconn = writer.connect(), reader.connect()
        try:
            while True:
                try:
                    job = self._jobs.get(timeout=self._idle)
                except stdlib_queue.Empty:
                    with self._lock:
                        if self._jobs.empty():
                            self._thread = None
                            return
                    continue
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < self._max_batch:
                    try:
                        more = self._jobs.get_nowait()
                    except stdlib_queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._run(batch, wconn, rconn)
                if stop:
                    return
        finally:
            for conn in (wconn, rconn):
                with contextlib.suppress(Exception):
                    conn.close()
            writer.dispose()
            reader.dispose()

    def _run(self, batch: list[_Job], wconn: Connection, rconn: Connection) -> None:
        writes: list[_Job] = []
        for job in batch:
            if job.write and job.pre is None:
                writes.append(job)
                continue
            try:
                if job.write:
                    if job.pre is not None and job.pre(rconn, *job.args):
                        writes.append(job)
                    else:
                        job.result = job.empty
                else:
                    job.result = job.fn(rconn, *job.args)
            except Exception as exc:
                job.result = _Failed(exc)
            finally:
                with contextlib.suppress(Exception):
                    rconn.rollback()
        if len(writes) > 1:
            # Optimistically all in one transaction; if any of them fails, none of it
            # happened, and each runs again in a transaction of its own.
            committed: list[Any] | None = None
            with contextlib.suppress(Exception):
                with wconn.begin():
                    results = [job.fn(wconn, *job.args) for job in writes]
                committed = results
            if committed is not None:
                for job, result in zip(writes, committed, strict=True):
                    job.result = result
                writes = []
        for job in writes:
            try:
                with wconn.begin():
                    job.result = job.fn(wconn, *job.args)
            except Exception as exc:
                job.result = _Failed(exc)
        by_loop: dict[Any, list[_Job]] = defaultdict(list)
        for job in batch:
            by_loop[job.loop].append(job)
        for loop, jobs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that event loop is gone
                loop.call_soon_threadsafe(_settle, jobs)


_BUSY_TIMEOUT = 30.0


def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE``, retried every 0.1-2 ms while another connection writes.

    SQLite's own busy handler backs off 1, 2, 5, 10... ms between tries, so the writer
    thread slept through most of the short gaps between the application's commits (a
    third of its time under load). Statements inside the transaction keep the busy
    timeout; only the wait for the write lock is ours."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        delay, deadline = 0.0001, time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.002)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={int(_BUSY_TIMEOUT * 1000)}")
        cursor.close()


class _Failed:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    pre: Callable[..., bool] | None
    write: bool
    empty: Any = None
    loop: Any = None
    future: Any = None
    result: Any = None


def _settle(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done():
            continue
        if isinstance(job.result, _Failed):
            job.future.set_exception(job.result.exc)
        else:
            job.future.set_result(job.result)
