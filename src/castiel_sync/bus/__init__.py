"""The bus port: durable queues (SQL tables or RabbitMQ), the router and the outbox."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus.base import (
    ALL_QUEUES,
    QUEUE_DEADLETTER,
    QUEUE_OUTBOUND,
    QUEUE_SCHEDULED,
    QUEUE_WEBHOOK,
    WORK_QUEUES,
    Bus,
    BusError,
    Lease,
    Message,
    OutgoingMessage,
    UnknownQueueError,
)
from castiel_sync.bus.outbox import OutboxRelay, publish
from castiel_sync.bus.router import Router, UnroutableEventError
from castiel_sync.settings import Settings

__all__ = [
    "ALL_QUEUES",
    "QUEUE_DEADLETTER",
    "QUEUE_OUTBOUND",
    "QUEUE_SCHEDULED",
    "QUEUE_WEBHOOK",
    "WORK_QUEUES",
    "Bus",
    "BusError",
    "Lease",
    "Message",
    "OutboxRelay",
    "OutgoingMessage",
    "Router",
    "UnknownQueueError",
    "UnroutableEventError",
    "open_bus",
    "publish",
]


def open_bus(settings: Settings, engine: AsyncEngine) -> Bus:
    """The bus ``settings.bus_url`` names: ``embedded`` or ``amqp://...``.

    Call ``await bus.start()`` before use (RabbitMQ connects and declares its topology).
    """
    url = settings.bus_url
    if url.startswith(("amqp://", "amqps://")):
        from castiel_sync.bus.rabbitmq import RabbitBus

        return RabbitBus(url, engine, namespace=settings.bus_namespace)
    if url == "embedded":
        from castiel_sync.bus.sql import SqlBus

        return SqlBus(engine)
    raise ValueError(
        f"CASTIEL_BUS_URL must be 'embedded' or amqp://...; got {_without_userinfo(url)!r}"
    )


def _without_userinfo(url: str) -> str:
    """``url`` with any user and password replaced: an error message is no place for them."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rpartition("@")[2]
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"
