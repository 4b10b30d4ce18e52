"""Per-tenant sync slots: how "running syncs" are counted, crash-safely.

A sync job (``SyncScheduled`` / ``SyncRequested``) runs only while it holds one of its
tenant's ``max_concurrent_syncs`` slots (default 3, at most 10). The holder is the job's
event id, so the scheduler can take the slot in the transaction that enqueues the job and
the worker that later runs it adopts the same slot. A slot is a lease: the worker renews it
while the job runs and frees it when the message is settled; a worker that dies simply
stops renewing, and the slot frees itself when ``lease_until`` passes.

Every change is a single-row compare-and-swap (``UPDATE ... WHERE holder IS NULL OR
lease_until <= now``, or an ``INSERT`` that loses on the primary key), so two schedulers
or workers can never hold one slot.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from castiel_sync.runtime.schema import sync_slots as _S


def _free(now: float) -> ColumnElement[bool]:
    return or_(_S.c.holder.is_(None), _S.c.lease_until <= now)


async def acquire(
    conn: AsyncConnection,
    *,
    tenant_id: str,
    holder: str,
    integration_id: str | None,
    limit: int,
    now: float,
    lease_seconds: float,
) -> int | None:
    """The slot ``holder`` holds (renewed), else a free one taken for it; None when all
    ``limit`` slots of the tenant are in use."""
    until = now + lease_seconds
    mine = await conn.execute(
        update(_S)
        .where(_S.c.tenant_id == tenant_id, _S.c.holder == holder)
        .values(lease_until=until)
        .returning(_S.c.slot)
    )
    slot = mine.scalar()
    if slot is not None:
        return int(slot)
    rows = (
        await conn.execute(
            select(_S.c.slot, _S.c.holder, _S.c.lease_until).where(_S.c.tenant_id == tenant_id)
        )
    ).all()
    existing = {r.slot: r for r in rows}
    insert = sqlite_insert if conn.dialect.name == "sqlite" else pg_insert
    for n in range(limit):
        row = existing.get(n)
        values = {"holder": holder, "integration_id": integration_id, "lease_until": until}
        if row is None:
            result = await conn.execute(
                insert(_S)
                .values(tenant_id=tenant_id, slot=n, **values)
                .on_conflict_do_nothing(index_elements=[_S.c.tenant_id, _S.c.slot])
            )
        elif row.holder is None or (row.lease_until or 0) <= now:
            result = await conn.execute(
                update(_S)
                .where(_S.c.tenant_id == tenant_id, _S.c.slot == n, _free(now))
                .values(**values)
            )
        else:
            continue
        if result.rowcount == 1:
            return n
    return None


async def renew(conn: AsyncConnection, *, holder: str, now: float, lease_seconds: float) -> bool:
    result = await conn.execute(
        update(_S).where(_S.c.holder == holder).values(lease_until=now + lease_seconds)
    )
    return bool(result.rowcount)


async def release(conn: AsyncConnection, *, holder: str) -> bool:
    result = await conn.execute(
        update(_S)
        .where(_S.c.holder == holder)
        .values(holder=None, integration_id=None, lease_until=None)
    )
    return bool(result.rowcount)


async def in_use(conn: AsyncConnection, *, tenant_id: str, now: float) -> int:
    """Slots of the tenant held by a live lease (its running syncs)."""
    n = (
        await conn.execute(
            select(func.count())
            .select_from(_S)
            .where(
                and_(
                    _S.c.tenant_id == tenant_id,
                    _S.c.holder.is_not(None),
                    _S.c.lease_until > now,
                )
            )
        )
    ).scalar_one()
    return int(n)
