"""CloudEvents 1.0 envelopes for the integration events, and their routes (DESIGN.md §3).

An event is JSON in the CloudEvents structured format::

    {"specversion": "1.0", "id": "...", "source": "/castiel-sync/tenants/t1/integrations/i1",
     "type": "Castiel.Integration.SyncRequested", "subject": "Account",
     "time": "2024-01-02T03:04:05Z", "datacontenttype": "application/json",
     "data": {"tenantId": "t1", "integrationId": "i1", ...}}

``data`` always carries ``tenantId`` and ``integrationId`` (camelCase keys, like the rest of
the wire). For ``Castiel.Integration.*`` events both are non-empty; a shard event caused by
a user rather than an integration has ``"integrationId": null``.

Event ids: the constructors derive a stable id where the same fact may be emitted twice
(a scheduled run, a write-back of one shard version, a shard version's change), so a
re-emitted event is the same message to an idempotent consumer; elsewhere a random UUID.
Extension attributes (lowercase alphanumerics, CloudEvents §3.1.1) are kept.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    model_validator,
)

from castiel_sync.domain.hashing import canonical_datetime

__all__ = [
    "DEAD_LETTER_QUEUE",
    "EVENT_TYPES",
    "QUEUE_INBOUND_SCHEDULED",
    "QUEUE_INBOUND_WEBHOOK",
    "QUEUE_OUTBOUND",
    "ROUTES",
    "SHARD_CREATED",
    "SHARD_DELETED",
    "SHARD_UPDATED",
    "SYNC_REQUESTED",
    "SYNC_SCHEDULED",
    "TOKEN_REFRESH_FAILED",
    "WEBHOOK_RECEIVED",
    "WRITE_BACK_REQUESTED",
    "CloudEvent",
    "EventValidationError",
    "shard_created",
    "shard_deleted",
    "shard_updated",
    "sync_requested",
    "sync_scheduled",
    "token_refresh_failed",
    "webhook_received",
    "write_back_requested",
]

WEBHOOK_RECEIVED = "Castiel.Integration.WebhookReceived"
SYNC_SCHEDULED = "Castiel.Integration.SyncScheduled"
SYNC_REQUESTED = "Castiel.Integration.SyncRequested"
WRITE_BACK_REQUESTED = "Castiel.Integration.WriteBackRequested"
TOKEN_REFRESH_FAILED = "Castiel.Integration.TokenRefreshFailed"  # noqa: S105 - an event name
SHARD_CREATED = "Castiel.Shard.Created"
SHARD_UPDATED = "Castiel.Shard.Updated"
SHARD_DELETED = "Castiel.Shard.Deleted"

EVENT_TYPES = frozenset(
    {
        WEBHOOK_RECEIVED,
        SYNC_SCHEDULED,
        SYNC_REQUESTED,
        WRITE_BACK_REQUESTED,
        TOKEN_REFRESH_FAILED,
        SHARD_CREATED,
        SHARD_UPDATED,
        SHARD_DELETED,
    }
)

QUEUE_INBOUND_WEBHOOK = "sync-inbound-webhook"
QUEUE_INBOUND_SCHEDULED = "sync-inbound-scheduled"
QUEUE_OUTBOUND = "sync-outbound"
#: where a message goes past its delivery limit (not a route of any event type)
DEAD_LETTER_QUEUE = "sync-deadletter"

#: event type -> queue, exactly DESIGN.md §3. Other types (token refresh failures, shard
#: events) are for their own subscribers, not the sync queues.
ROUTES: Mapping[str, str] = MappingProxyType(
    {
        WEBHOOK_RECEIVED: QUEUE_INBOUND_WEBHOOK,
        SYNC_SCHEDULED: QUEUE_INBOUND_SCHEDULED,
        SYNC_REQUESTED: QUEUE_INBOUND_SCHEDULED,
        WRITE_BACK_REQUESTED: QUEUE_OUTBOUND,
    }
)

SOURCE_PREFIX = "/castiel-sync"
_EXTENSION = re.compile(r"[a-z0-9]{1,20}")

SyncType = Literal["full", "incremental"]
WriteOperation = Literal["create", "update", "delete"]


class EventValidationError(ValueError):
    """A malformed event: not JSON, not a CloudEvents 1.0 envelope, or data without
    ``tenantId`` / ``integrationId``."""


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope with JSON data."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    subject: str | None = Field(None, min_length=1)
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    @model_validator(mode="after")
    def _check(self) -> CloudEvent:
        if self.time.tzinfo is None:
            raise ValueError("time must carry a UTC offset (RFC 3339)")
        for name, value in (self.model_extra or {}).items():
            if not _EXTENSION.fullmatch(name):
                raise ValueError(f"extension attribute names are [a-z0-9]{{1,20}}: {name!r}")
            if value is not None and not isinstance(value, str | int | bool):
                raise ValueError(f"extension attribute {name!r} must be a scalar")
        tenant = self.data.get("tenantId")
        if not isinstance(tenant, str) or not tenant:
            raise ValueError("data.tenantId must be a non-empty string")
        if "integrationId" not in self.data:
            raise ValueError("data.integrationId is required (null only for shard events)")
        integration = self.data["integrationId"]
        nullable = not self.type.startswith("Castiel.Integration.")
        if not (isinstance(integration, str) and integration) and not (
            nullable and integration is None
        ):
            raise ValueError("data.integrationId must be a non-empty string")
        return self

    @field_serializer("time", when_used="json")
    def _time(self, value: datetime) -> str:
        return canonical_datetime(value)

    @property
    def tenant_id(self) -> str:
        return str(self.data["tenantId"])

    @property
    def integration_id(self) -> str | None:
        value = self.data["integrationId"]
        return None if value is None else str(value)

    @property
    def queue(self) -> str | None:
        """The sync queue this event type routes to, if any."""
        return ROUTES.get(self.type)

    @property
    def session_key(self) -> str | None:
        """Outbound write-back is ordered per integration; other queues are unordered."""
        return self.integration_id if self.queue == QUEUE_OUTBOUND else None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventValidationError(f"not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise EventValidationError("a CloudEvent is a JSON object")
        return cls.from_dict(document)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CloudEvent:
        try:
            return cls.model_validate(dict(document))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
            )
            raise EventValidationError(f"not a valid CloudEvent: {problems}") from exc


# --- constructors ------------------------------------------------------------------------


def _integration_source(tenant_id: str, integration_id: str) -> str:
    return f"{SOURCE_PREFIX}/tenants/{tenant_id}/integrations/{integration_id}"


def _integration_event(
    event_type: str,
    tenant_id: str,
    integration_id: str,
    data: dict[str, Any],
    *,
    subject: str | None,
    id: str | None,
    time: datetime | None,
) -> CloudEvent:
    fields: dict[str, Any] = {
        "source": _integration_source(tenant_id, integration_id),
        "type": event_type,
        "subject": subject,
        "data": {"tenantId": tenant_id, "integrationId": integration_id, **_compact(data)},
    }
    if id is not None:
        fields["id"] = id
    if time is not None:
        fields["time"] = time
    return CloudEvent.from_dict(fields)


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def webhook_received(
    *,
    tenant_id: str,
    integration_id: str,
    provider: str,
    delivery_id: str,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A verified webhook delivery, persisted raw under ``delivery_id``."""
    return _integration_event(
        WEBHOOK_RECEIVED,
        tenant_id,
        integration_id,
        {"provider": provider, "deliveryId": delivery_id},
        subject=delivery_id,
        id=id,
        time=time,
    )


def sync_scheduled(
    *,
    tenant_id: str,
    integration_id: str,
    due_at: datetime,
    entity: str | None = None,
    sync_type: SyncType = "incremental",
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A scheduled sync is due. The id is derived from the integration, entity and due
    time, so two schedulers noticing the same due run emit the same event."""
    due = canonical_datetime(due_at)
    return _integration_event(
        SYNC_SCHEDULED,
        tenant_id,
        integration_id,
        {"entity": entity, "syncType": sync_type, "dueAt": due},
        subject=entity,
        id=id or f"sync-scheduled:{integration_id}:{entity or '*'}:{due}",
        time=time,
    )


def sync_requested(
    *,
    tenant_id: str,
    integration_id: str,
    entity: str | None = None,
    sync_type: SyncType = "incremental",
    requested_by: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A user asked for Sync Now."""
    return _integration_event(
        SYNC_REQUESTED,
        tenant_id,
        integration_id,
        {"entity": entity, "syncType": sync_type, "requestedBy": requested_by},
        subject=entity,
        id=id,
        time=time,
    )


def write_back_requested(
    *,
    tenant_id: str,
    integration_id: str,
    shard_id: str,
    shard_type: str,
    shard_version: int,
    entity: str,
    operation: WriteOperation,
    external_id: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A shard changed in Castiel and must be pushed to the external record. The id names
    the shard version, so the outbox re-sending it is the same message."""
    return _integration_event(
        WRITE_BACK_REQUESTED,
        tenant_id,
        integration_id,
        {
            "shardId": shard_id,
            "shardType": shard_type,
            "shardVersion": shard_version,
            "entity": entity,
            "operation": operation,
            "externalId": external_id,
        },
        subject=shard_id,
        id=id or f"write-back:{integration_id}:{shard_id}:{shard_version}:{operation}",
        time=time,
    )


def token_refresh_failed(
    *,
    tenant_id: str,
    integration_id: str,
    connection_id: str,
    reason: str,
    integration_disabled: bool = True,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    """A token refresh failed: an alert, and (by default) the integration was disabled."""
    return _integration_event(
        TOKEN_REFRESH_FAILED,
        tenant_id,
        integration_id,
        {
            "connectionId": connection_id,
            "reason": reason,
            "integrationDisabled": integration_disabled,
        },
        subject=connection_id,
        id=id,
        time=time,
    )


def _shard_event(
    event_type: str,
    action: str,
    *,
    tenant_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    integration_id: str | None,
    extra: dict[str, Any],
    id: str | None,
    time: datetime | None,
) -> CloudEvent:
    fields: dict[str, Any] = {
        "id": id or f"shard:{shard_id}:{version}:{action}",
        "source": f"{SOURCE_PREFIX}/tenants/{tenant_id}/shards",
        "type": event_type,
        "subject": shard_id,
        "data": {
            "tenantId": tenant_id,
            "integrationId": integration_id,
            "shardId": shard_id,
            "shardType": shard_type,
            "version": version,
            **_compact(extra),
        },
    }
    if time is not None:
        fields["time"] = time
    return CloudEvent.from_dict(fields)


def shard_created(
    *,
    tenant_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    integration_id: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    return _shard_event(
        SHARD_CREATED, "created", tenant_id=tenant_id, shard_id=shard_id,
        shard_type=shard_type, version=version, integration_id=integration_id, extra={},
        id=id, time=time,
    )  # fmt: skip


def shard_updated(
    *,
    tenant_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    changed_fields: list[str] | None = None,
    integration_id: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    return _shard_event(
        SHARD_UPDATED, "updated", tenant_id=tenant_id, shard_id=shard_id,
        shard_type=shard_type, version=version, integration_id=integration_id,
        extra={"changedFields": changed_fields}, id=id, time=time,
    )  # fmt: skip


def shard_deleted(
    *,
    tenant_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    integration_id: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    return _shard_event(
        SHARD_DELETED, "deleted", tenant_id=tenant_id, shard_id=shard_id,
        shard_type=shard_type, version=version, integration_id=integration_id, extra={},
        id=id, time=time,
    )  # fmt: skip
