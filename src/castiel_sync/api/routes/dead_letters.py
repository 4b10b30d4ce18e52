"""Dead letters, per tenant: list, show, replay, purge (``sync-deadletter``).

A tenant admin sees only their tenant's dead letters (a super admin names the tenant with
``?tenantId=``); another tenant's id is the same 404 as a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from castiel_sync.api.deps import TenantAdminDep
from castiel_sync.api.problems import NotFound
from castiel_sync.bus import Bus, Message, open_bus
from castiel_sync.domain.tenancy import Scope

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

DeadLetterId = Annotated[str, Path(pattern=r"^[!-~]{1,128}$")]  # printable ASCII, no space


async def app_bus(request: Request) -> Bus:
    """The process's bus: ``app.state.bus`` when the runtime set one, else opened once
    from the app's settings and engine."""
    bus: Bus | None = getattr(request.app.state, "bus", None)
    if bus is None:
        ctx = request.app.state.ctx
        bus = ctx.extra.get("bus")
        if bus is None:
            bus = open_bus(ctx.settings, ctx.engine)
            await bus.start()
            ctx.extra["bus"] = bus
    return bus


class DeadLetterOut(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    tenant_id: str
    queue: str | None
    event_type: str | None
    delivery_count: int
    last_error: str | None
    enqueued_at: datetime | None
    event: Any = None


def _out(message: Message, *, full: bool = False) -> DeadLetterOut:
    body = message.body if isinstance(message.body, dict) else None
    return DeadLetterOut(
        id=message.id,
        tenant_id=message.tenant_id,
        queue=message.original_queue,
        event_type=str(body.get("type")) if body else None,
        delivery_count=message.delivery_count,
        last_error=message.last_error,
        enqueued_at=message.enqueued_at,
        event=body if full else None,
    )


async def _find(bus: Bus, scope: Scope, dead_letter_id: str) -> Message:
    take = getattr(bus, "take_dead_letters", None)
    if callable(take):
        found = await take(scope, [dead_letter_id])
    else:
        found = [
            m for m in await bus.list_dead_letters(scope, limit=10_000) if m.id == dead_letter_id
        ]
    if not found:
        raise NotFound(f"dead letter {dead_letter_id!r} was not found")
    return found[0]


@router.get("", summary="The tenant's dead letters, oldest first", response_model_by_alias=True)
async def list_dead_letters(
    access: TenantAdminDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    bus = await app_bus(request)
    return [_out(m) for m in await bus.list_dead_letters(access.scope, limit=limit)]


@router.get("/{dead_letter_id}", summary="One dead letter with its event")
async def show_dead_letter(
    access: TenantAdminDep, request: Request, dead_letter_id: DeadLetterId
) -> DeadLetterOut:
    bus = await app_bus(request)
    return _out(await _find(bus, access.scope, dead_letter_id), full=True)


@router.post(
    "/{dead_letter_id}/replay",
    status_code=202,
    summary="Send it back to its queue with a fresh delivery count",
)
async def replay_dead_letter(
    access: TenantAdminDep, request: Request, dead_letter_id: DeadLetterId
) -> dict[str, Any]:
    bus = await app_bus(request)
    if not await bus.replay(access.scope, [dead_letter_id]):
        raise NotFound(f"dead letter {dead_letter_id!r} was not found")
    async with access.transaction() as repos:
        await repos.audit.record(
            **access.audit_actor(),
            action="dead_letter.replay",
            object_type="dead_letter",
            object_id=dead_letter_id,
        )
    return {"id": dead_letter_id, "replayed": True}


@router.delete("/{dead_letter_id}", status_code=204, summary="Delete it for good")
async def purge_dead_letter(
    access: TenantAdminDep, request: Request, dead_letter_id: DeadLetterId
) -> Response:
    bus = await app_bus(request)
    if not await bus.purge(access.scope, [dead_letter_id]):
        raise NotFound(f"dead letter {dead_letter_id!r} was not found")
    async with access.transaction() as repos:
        await repos.audit.record(
            **access.audit_actor(),
            action="dead_letter.purge",
            object_type="dead_letter",
            object_id=dead_letter_id,
        )
    return Response(status_code=204)
