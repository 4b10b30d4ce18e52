"""Transactional outbox (the spec's change feed).

``publish(session, event)`` adds an ``outbox`` row in the caller's transaction: the event
exists exactly when the change that caused it commits. :class:`OutboxRelay` moves
committed rows onto the bus through the router, then marks them relayed. A crash after
the send and before the mark re-sends the rows with the same message id (the event id):
the bus drops the repeat where it can, and consumers are idempotent anyway, so delivery
is at least once and nothing is lost. On the embedded bus over the same SQLite file the
send and the mark commit in one transaction (through the bus's writer thread).

Latency: a relay polls every ``poll_interval``, and a commit of an ``AsyncSession`` that
``publish`` wrote to wakes the relays of this process at once (other processes' relays
still find the rows at their next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from castiel_sync.bus.router import Router, envelope_dict, event_tenant, routing_table
from castiel_sync.store.base import utcnow
from castiel_sync.store.repositories._base import prepared_sqlite_insert
from castiel_sync.store.tables import OutboxRow
from castiel_sync.store.write_gate import GatedConnection

if TYPE_CHECKING:
    from castiel_sync.bus.sql import SqlBus

log = structlog.get_logger(__name__)
_O = cast(Table, OutboxRow.__table__)
_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()
#: What the relay reads of a row (not its timestamps: converting them is wasted work).
_RELAYED = (_O.c.id, _O.c.event_type, _O.c.session_key, _O.c.event)


def _wake_relays() -> None:
    for relay in list(_RELAYS):
        relay.wake()


# Events wait in the session until its transaction commits, then go in as one
# executemany: the ORM inserts rows with a database-generated key one statement at a
# time (it must read each key back), which made a ten-event commit ten round trips.
_PENDING = "castiel.outbox.pending"
_WROTE = "castiel.outbox.wrote"


def publish(
    session: AsyncSession | Session,
    event: Mapping[str, Any] | Any,
    *,
    session_key: str | None = None,
) -> None:
    """Record ``event`` (a CloudEvent dict or model) in the caller's transaction.

    The row is written when the session commits (before its final flush), so it exists
    exactly when the change does; a rollback drops it with the rest. A session bound to
    a connection whose transaction it joined must still be committed (that commit only
    flushes), as :func:`castiel_sync.runtime._db.write_session` does."""
    envelope = envelope_dict(event)
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    sync_session.info.setdefault(_PENDING, []).append(
        {
            "tenant_id": event_tenant(envelope),
            "event_type": str(envelope["type"]),
            "session_key": session_key,
            "event": envelope,
            "created_at": utcnow(),
            "relayed_at": None,
        }
    )


@sa_event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    rows = session.info.pop(_PENDING, None)
    if not rows:
        return
    connection = session.connection()
    sqlite = _gated_sqlite(connection)
    prepared = prepared_sqlite_insert(_O, rows, connection.dialect) if sqlite is not None else None
    if sqlite is not None and prepared is not None:
        sqlite.execute_at_commit(*prepared)
    else:
        connection.execute(insert(_O), rows)
    session.info[_WROTE] = True


def _gated_sqlite(connection: Connection) -> GatedConnection | None:
    """The store's sqlite3 connection under an aiosqlite one (aiosqlite keeps it in
    ``_conn``: no public accessor), or None on any other driver."""
    driver = connection.connection.driver_connection
    raw = getattr(driver, "_conn", None)
    return raw if isinstance(raw, GatedConnection) else None


@sa_event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop(_WROTE, False):
        _wake_relays()


@sa_event.listens_for(Session, "after_transaction_end")
def _drop_unwritten(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction: commit or rollback
        session.info.pop(_PENDING, None)
        session.info.pop(_WROTE, None)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        router: Router,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.1,
    ) -> None:
        self.engine = engine
        self.router = router
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._pg = engine.dialect.name == "postgresql"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None

    def wake(self) -> None:
        """Look at the outbox now (thread-safe; a no-op unless ``run_forever`` runs)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is not None and wakeup is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(wakeup.set)

    def _store_writer(self) -> SqlBus | None:
        """The SqlBus writing to this relay's SQLite file: the bus itself (embedded) or
        the store a RabbitMQ bus keeps its dedup window in; None otherwise."""
        from castiel_sync.bus.sql import SqlBus

        bus = self.router.bus
        for candidate in (bus, getattr(bus, "_store", None)):
            if isinstance(candidate, SqlBus) and candidate.shares_sqlite_file(self.engine):
                return candidate
        return None

    async def run_once(self) -> int:
        """Relay one batch of committed rows; returns how many were sent."""
        store = self._store_writer()
        if store is not None:
            # SQLite through the bus's writer thread: one hop to read; on the embedded
            # bus one transaction enqueues and marks, else the send, then the mark.
            rows = await store._read(self._pending_rows)
            if not rows:
                return 0
            ids = [r.id for r in rows]
            if store is self.router.bus:
                await store.send_many_with(
                    self._outgoing(rows), also=lambda conn: self._mark_sync(conn, ids), dedup=False
                )
            else:
                # The window would only catch a re-send after a crash between its record
                # and the mark (not one between the confirm and its record): the rows go
                # out without it, and consumers are idempotent as for any redelivery.
                out = self._outgoing(rows)
                if out:
                    await self.router.bus.send_many(out, dedup=False)
                await store._tx(self._mark_sync, ids)
            return len(rows)
        if self._pg:
            # Row locks keep two relays off the same rows; held only for the send.
            async with self.engine.begin() as conn:
                rows = (
                    await conn.execute(
                        select(*_RELAYED)
                        .where(_O.c.relayed_at.is_(None))
                        .order_by(_O.c.id)
                        .limit(self.batch_size)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if rows:
                    await self._send(rows)
                    await self._mark(conn, [r.id for r in rows])
            return len(rows)
        # SQLite: a short read, the send, then a short write (never hold a read
        # snapshot across the bus's own writes).
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(*_RELAYED)
                    .where(_O.c.relayed_at.is_(None))
                    .order_by(_O.c.id)
                    .limit(self.batch_size)
                )
            ).all()
            await conn.rollback()
        if not rows:
            return 0
        await self._send(rows)
        async with self.engine.begin() as conn:
            await self._mark(conn, [r.id for r in rows])
        return len(rows)

    def _pending_rows(self, conn: Connection) -> list[Any]:
        query = select(*_RELAYED).where(_O.c.relayed_at.is_(None)).order_by(_O.c.id)
        return list(conn.execute(query.limit(self.batch_size)).all())

    @staticmethod
    def _mark_sync(conn: Connection, ids: list[int]) -> None:
        conn.execute(update(_O).where(_O.c.id.in_(ids)).values(relayed_at=utcnow()))

    async def _send(self, rows: Sequence[Any]) -> None:
        out = self._outgoing(rows)
        if out:
            await self.router.bus.send_many(out)

    def _outgoing(self, rows: Sequence[Any]) -> list[Any]:
        # Events with no sync queue (shard events, TokenRefreshFailed alerts) are for
        # downstream subscribers: they stay readable in the outbox until pruned, and a
        # relay must not stall on them.
        routes = routing_table()
        return [
            self.router.outgoing(
                r.event_type,
                r.event,
                r.session_key,
                message_id=str(r.event.get("id") or f"outbox-{r.id}"),
            )
            for r in rows
            if r.event_type in routes
        ]

    async def _mark(self, conn: Any, ids: list[int]) -> None:
        await conn.execute(update(_O).where(_O.c.id.in_(ids)).values(relayed_at=utcnow()))

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._loop, self._wakeup = asyncio.get_running_loop(), asyncio.Event()
        wakeup = self._wakeup

        async def stopper() -> None:
            await stop.wait()
            wakeup.set()

        stopping = asyncio.create_task(stopper())
        _RELAYS.add(self)
        try:
            while not stop.is_set():
                wakeup.clear()
                try:
                    sent = await self.run_once()
                except Exception:
                    log.exception("outbox relay failed; retrying")
                    sent = 0
                if sent < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wakeup.wait(), self.poll_interval)
        finally:
            _RELAYS.discard(self)
            self._loop = self._wakeup = None
            stopping.cancel()

    async def prune(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Delete rows relayed before ``older_than`` ago."""
        cutoff: datetime = utcnow() - older_than
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(_O).where(_O.c.relayed_at < cutoff))
        return int(result.rowcount)
