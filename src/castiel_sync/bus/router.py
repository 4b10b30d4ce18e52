"""The in-process router (the spec's Event Grid): event type -> queue.

The routing table is ``castiel_sync.domain.events.ROUTES`` (DESIGN.md §3). The router
turns a CloudEvent envelope into an :class:`OutgoingMessage`: the queue from the table,
the tenant from ``data.tenantId``, the message id from the event id (so a re-sent event
is the same message), and for ``sync-outbound`` the session key from
``data.integrationId`` (write-back is ordered per integration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from castiel_sync.bus.base import (
    QUEUE_OUTBOUND,
    SYSTEM_TENANT,
    Bus,
    BusError,
    OutgoingMessage,
)
from castiel_sync.domain.events import ROUTES


class UnroutableEventError(BusError):
    """An event type with no subscription in the routing table."""


def routing_table() -> Mapping[str, str]:
    """The project's routing table (event type -> queue name)."""
    return ROUTES


def envelope_dict(event: Any) -> dict[str, Any]:
    """A CloudEvent as a JSON-ready dict (accepts a dict or a pydantic model)."""
    if isinstance(event, Mapping):
        return dict(event)
    dump = getattr(event, "model_dump", None)
    if dump is None:
        raise TypeError(f"not a CloudEvent envelope: {type(event).__name__}")
    result: dict[str, Any] = dump(mode="json", by_alias=True, exclude_none=True)
    return result


def event_tenant(envelope: Mapping[str, Any]) -> str:
    data = envelope.get("data")
    tenant = data.get("tenantId") if isinstance(data, Mapping) else None
    return str(tenant) if tenant else SYSTEM_TENANT


class Router:
    def __init__(self, bus: Bus, routes: Mapping[str, str] | None = None) -> None:
        self.bus = bus
        self.routes = dict(routes if routes is not None else routing_table())

    def queue_for(self, event_type: str) -> str:
        try:
            return self.routes[event_type]
        except KeyError:
            raise UnroutableEventError(f"no route for event type {event_type!r}") from None

    def session_key_for(self, queue: str, envelope: Mapping[str, Any]) -> str | None:
        if queue != QUEUE_OUTBOUND:
            return None
        data = envelope.get("data")
        integration = data.get("integrationId") if isinstance(data, Mapping) else None
        return str(integration) if integration else None

    def outgoing(
        self,
        event_type: str,
        envelope: Mapping[str, Any],
        session_key: str | None = None,
        *,
        message_id: str | None = None,
        priority: int = 0,
    ) -> OutgoingMessage:
        queue = self.queue_for(event_type)
        return OutgoingMessage(
            queue=queue,
            body=dict(envelope),
            tenant_id=event_tenant(envelope),
            priority=priority,
            session_key=session_key or self.session_key_for(queue, envelope),
            message_id=message_id or (str(envelope["id"]) if envelope.get("id") else None),
            event_type=event_type,
        )

    async def dispatch(
        self,
        event_type: str,
        envelope: Mapping[str, Any],
        session_key: str | None = None,
        *,
        message_id: str | None = None,
    ) -> str:
        """Route one event straight onto the bus (no outbox: for callers with no change)."""
        (mid,) = await self.bus.send_many(
            [self.outgoing(event_type, envelope, session_key, message_id=message_id)]
        )
        return mid
