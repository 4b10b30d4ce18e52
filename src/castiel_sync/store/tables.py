"""Tables for the specification's containers (DESIGN.md §2).

Every row that belongs to a tenant carries ``tenant_id``; repositories add the filter,
callers never do. Secrets never live here: only their vault names.

Backend-private tables live beside their backend (the local vault's secrets in
``castiel_sync.vault.local``, the embedded bus's queues in ``castiel_sync.bus.sql``)
on the same metadata, so one Alembic history covers them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from castiel_sync.store.base import Base, JSONType, UTCDateTime, new_id, utcnow

ID = String(36)


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class IntegrationProviderRow(Timestamps, Base):
    """The catalog (partition key in the spec: category). System-wide: no tenant."""

    __tablename__ = "integration_providers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))  # active|beta|deprecated|disabled
    audience: Mapped[str] = mapped_column(String(16))  # system|tenant
    auth_type: Mapped[str] = mapped_column(String(32))
    # The whole validated catalog entry (endpoints, scopes, entities, default mappings).
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # Super admins' edits to status/audience survive catalog reloads.
    status_overridden: Mapped[bool] = mapped_column(Boolean, default=False)
    audience_overridden: Mapped[bool] = mapped_column(Boolean, default=False)


class IntegrationRow(Timestamps, Base):
    """A tenant's instance of a provider (partition key: tenant_id)."""

    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("tenant_id", "provider_id", "instance_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("integration_providers.id"))
    instance_id: Mapped[str] = mapped_column(String(64))  # slug used in secret names
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # pending|active|paused|error|disabled
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    sync_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_direction: Mapped[str] = mapped_column(String(16), default="inbound")
    sync_frequency: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    pull_filters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    entity_mappings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    conflict_resolution: Mapped[str] = mapped_column(String(32), default="last_write_wins")
    allowed_shard_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    write_back: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    match_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    delete_grace_seconds: Mapped[int] = mapped_column(Integer, default=0)
    credential_secret_name: Mapped[str | None] = mapped_column(String(300), default=None)
    webhook_secret_name: Mapped[str | None] = mapped_column(String(300), default=None)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None, index=True)
    # Per-entity incremental checkpoints: {entity: {"since": ..., "cursor": ..., ...}}.
    cursors: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    row_version: Mapped[int] = mapped_column(Integer, default=1)


class TenantSettingsRow(Timestamps, Base):
    """Per-tenant limits set by super admins; ``tenant_id='*'`` holds the global default."""

    __tablename__ = "tenant_settings"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_records_per_sync: Mapped[int | None] = mapped_column(Integer, default=None)
    max_concurrent_syncs: Mapped[int | None] = mapped_column(Integer, default=None)


class IntegrationConnectionRow(Timestamps, Base):
    """Connection credentials' metadata (partition key: integration_id). Never the secret."""

    __tablename__ = "integration_connections"
    __table_args__ = (UniqueConstraint("integration_id", "scope", "user_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(16), default="tenant")  # system|tenant|user
    user_id: Mapped[str] = mapped_column(String(64), default="")  # "" unless scope=user
    credential_secret_name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default="active")
    # active|expired|refresh_failed|revoked
    token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    refresh_history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Compare-and-swap guard for rotating refresh tokens: bumped on every token write.
    credential_version: Mapped[int] = mapped_column(Integer, default=1)
    refresh_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class OAuthStateRow(Base):
    """A pending OAuth authorization; the PKCE verifier is in the vault, not here."""

    __tablename__ = "oauth_states"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(16), default="tenant")
    user_id: Mapped[str] = mapped_column(String(64), default="")
    redirect_uri: Mapped[str] = mapped_column(Text)
    verifier_secret_name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ShardRow(Timestamps, Base):
    """A knowledge-graph record."""

    __tablename__ = "shards"
    __table_args__ = (Index("ix_shards_tenant_type", "tenant_id", "shard_type"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    shard_type: Mapped[str] = mapped_column(String(64))
    structured_data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # Per-field provenance of the last merge decisions: {field: {...}}.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    updated_by: Mapped[str | None] = mapped_column(String(128), default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class ExternalRelationshipRow(Base):
    """One element of a shard's ``external_relationships``; the dedup key is
    (integration_id, entity, external_id)."""

    __tablename__ = "shard_external_relationships"
    __table_args__ = (UniqueConstraint("integration_id", "entity", "external_id"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    shard_id: Mapped[str] = mapped_column(ForeignKey("shards.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    entity: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(255))
    sync_direction: Mapped[str] = mapped_column(String(16))
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_synced_version: Mapped[int | None] = mapped_column(Integer, default=None)
    last_synced_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    # The mapped fields as last agreed by both sides: the base of the three-way merge.
    last_synced_snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    external_modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    sync_status: Mapped[str] = mapped_column(String(16), default="synced")
    # synced|pending|failed|deleted
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    deleted_upstream_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The full-sync run that last saw this record upstream (mark-and-sweep delete detection).
    seen_run_id: Mapped[str | None] = mapped_column(String(36), default=None)


class SyncExecutionRow(Base):
    """One row per sync job."""

    __tablename__ = "sync_executions"
    __table_args__ = (Index("ix_sync_executions_tenant_started", "tenant_id", "started_at"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    entity: Mapped[str | None] = mapped_column(String(100), default=None)
    trigger: Mapped[str] = mapped_column(String(16))  # scheduled|manual|webhook|followup
    sync_type: Mapped[str] = mapped_column(String(16))  # full|incremental|webhook
    status: Mapped[str] = mapped_column(String(16), default="running")
    # running|succeeded|partial|failed
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    deleted: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    cursor_before: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    cursor_after: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    record_errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    parent_execution_id: Mapped[str | None] = mapped_column(ID, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)


class ConflictRow(Base):
    """A field-level conflict waiting for manual resolution."""

    __tablename__ = "conflicts"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id", ondelete="CASCADE"))
    shard_id: Mapped[str] = mapped_column(ForeignKey("shards.id", ondelete="CASCADE"), index=True)
    relationship_id: Mapped[str] = mapped_column(
        ForeignKey("shard_external_relationships.id", ondelete="CASCADE")
    )
    field: Mapped[str] = mapped_column(String(200))
    base_value: Mapped[Any] = mapped_column(JSONType, default=None)
    castiel_value: Mapped[Any] = mapped_column(JSONType, default=None)
    external_value: Mapped[Any] = mapped_column(JSONType, default=None)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|resolved
    resolution: Mapped[str | None] = mapped_column(String(16), default=None)
    # castiel|external|value
    resolved_value: Mapped[Any] = mapped_column(JSONType, default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(64), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditLogRow(Base):
    """Who changed which configuration, when, before and after (secrets redacted)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))  # "*" for system-wide changes
    actor_user_id: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_role: Mapped[str | None] = mapped_column(String(32), default=None)
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookRegistrationRow(Timestamps, Base):
    """A subscription registered with a provider."""

    __tablename__ = "webhook_registrations"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    provider_subscription_id: Mapped[str | None] = mapped_column(String(255), default=None)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    callback_url: Mapped[str] = mapped_column(Text)
    secret_name: Mapped[str | None] = mapped_column(String(300), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    status: Mapped[str] = mapped_column(String(16), default="active")


class WebhookDeliveryRow(Base):
    """A verified webhook, persisted raw before it is enqueued."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    headers: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|processed


class OutboxRow(Base):
    """Transactional outbox: an event commits with the change that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(128))
    session_key: Mapped[str | None] = mapped_column(String(128), default=None)
    event: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the CloudEvent, as JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    relayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None, index=True)
