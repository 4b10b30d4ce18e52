"""Request and response bodies (camelCase on the wire, as the specification names them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, SecretStr

from castiel_sync.domain.config import (
    MAX_CONCURRENT_SYNCS,
    MAX_RECORDS_PER_SYNC,
    SHARD_TYPE_PATTERN,  # noqa: F401 - re-exported: the routes import it from here
    CamelModel,
    ConflictMode,
    EntityMapping,
    MatchRule,
    SyncDirection,
    SyncFrequency,
    WriteBackConfig,
)
from castiel_sync.domain.filters import FilterCondition

INSTANCE_ID_PATTERN = r"^[0-9a-z]+(?:-[0-9a-z]+)*$"
PROVIDER_ID_PATTERN = r"^[a-z][a-z0-9_]{1,63}$"

# Versions are stored as 32-bit integers; larger input is refused, not a store error.
MAX_VERSION = 2**31 - 1


class Out(CamelModel):
    """Response bodies: camelCase, and unknown keys are never accepted as input anyway."""


# -- providers --------------------------------------------------------------------------


class EntityOut(Out):
    name: str
    shard_type: str
    direction: SyncDirection
    supports_incremental: bool
    supports_deletes: bool
    supports_webhooks: bool
    fields: list[str] = Field(description="External fields of the default mapping.")


class ProviderOut(Out):
    id: str
    name: str
    category: str
    status: str
    audience: str
    auth_type: str
    docs_url: str | None = None
    scopes: list[str] = Field(default_factory=list)
    webhooks: bool = False
    entities: list[EntityOut] = Field(default_factory=list)


class ProviderPatch(CamelModel):
    status: Literal["active", "beta", "deprecated", "disabled"] | None = None
    audience: Literal["system", "tenant"] | None = None


class OAuthClientIn(CamelModel):
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: SecretStr = Field(min_length=1, max_length=2000)


# -- integrations ---------------------------------------------------------------------------


class SettingsPatch(CamelModel):
    """Any subset of the specification's "Configurable Settings"; what is left out stays."""

    sync_enabled: bool | None = None
    sync_direction: SyncDirection | None = None
    sync_frequency: SyncFrequency | None = None
    pull_filters: dict[str, list[FilterCondition]] | None = None
    entity_mappings: list[EntityMapping] | None = None
    conflict_resolution: ConflictMode | None = None
    allowed_shard_types: list[str] | None = Field(
        None, description="Shard types this integration may write (data access control)."
    )
    write_back: WriteBackConfig | None = None
    match_rules: list[MatchRule] | None = None
    delete_grace_seconds: int | None = Field(None, ge=0, le=30 * 24 * 3600)


class IntegrationCreate(SettingsPatch):
    provider_id: str = Field(pattern=PROVIDER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    instance_id: str = Field(
        min_length=1,
        max_length=40,
        pattern=INSTANCE_ID_PATTERN,
        description="A slug, unique per tenant and provider (`sales-team`); part of the "
        "credential's secret name.",
    )


class IntegrationPatch(SettingsPatch):
    name: str | None = Field(None, min_length=1, max_length=200)
    row_version: int | None = Field(
        None,
        ge=1,
        le=MAX_VERSION,
        description="The version you read; the change is refused if it moved on.",
    )
    max_records_per_sync: int | None = Field(
        None,
        description="Not settable here: a super admin sets it per tenant or globally "
        "(`/admin/limits`).",
    )


class IntegrationOut(Out):
    id: str
    provider_id: str
    instance_id: str
    name: str
    status: str
    status_reason: str | None
    sync_enabled: bool
    sync_direction: SyncDirection
    sync_frequency: SyncFrequency
    pull_filters: dict[str, list[FilterCondition]]
    entity_mappings: list[EntityMapping]
    conflict_resolution: ConflictMode
    allowed_shard_types: list[str]
    write_back: WriteBackConfig
    match_rules: list[MatchRule]
    delete_grace_seconds: int
    credential_secret_name: str | None = Field(
        description="The vault name of the credential (a reference, never the secret)."
    )
    last_sync_at: datetime | None
    next_sync_at: datetime | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    row_version: int


class ConnectionOut(Out):
    id: str
    integration_id: str
    scope: str
    user_id: str | None
    credential_secret_name: str
    status: str
    token_expires_at: datetime | None
    last_refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# -- credentials --------------------------------------------------------------------------


ConnectionScope = Literal["tenant", "user"]


class AuthorizeIn(CamelModel):
    scope: ConnectionScope = Field(
        "tenant",
        description="`tenant`: the integration's own connection (tenant admins); `user`: "
        "the caller's personal connection.",
    )
    template_values: dict[str, str] = Field(
        default_factory=dict,
        description="Values for the provider's URL templates (e.g. a Dynamics `org`).",
    )


class AuthorizeOut(Out):
    authorization_url: str
    state: str
    expires_at: datetime


class CallbackOut(Out):
    integration_id: str
    scope: ConnectionScope
    status: Literal["connected"]
    credential_secret_name: str
    token_expires_at: datetime | None


class ApiKeyIn(CamelModel):
    api_key: SecretStr = Field(min_length=1, max_length=4000)
    scope: ConnectionScope = "tenant"
    instance_url: str | None = Field(
        None, max_length=500, description="Where the provider's API is, if not the default."
    )


class WebhookSecretIn(CamelModel):
    secret: SecretStr = Field(
        min_length=1,
        max_length=4000,
        description="What the provider signs or authenticates deliveries with (HubSpot: the "
        "app's client secret; Dataverse: the step's key; Salesforce: the relay secret).",
    )


class ConnectionTestOut(Out):
    ok: bool
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


# -- limits -------------------------------------------------------------------------------


class LimitsOut(Out):
    max_records_per_sync: int
    max_concurrent_syncs: int


class LimitOverridesOut(Out):
    max_records_per_sync: int | None
    max_concurrent_syncs: int | None


class LimitsIn(CamelModel):
    """Set an override; ``null`` clears it (inherit), a missing key leaves it."""

    max_records_per_sync: int | None = Field(None, ge=1, le=MAX_RECORDS_PER_SYNC)
    max_concurrent_syncs: int | None = Field(None, ge=1, le=MAX_CONCURRENT_SYNCS)


# -- audit -------------------------------------------------------------------------------


class AuditEntryOut(Out):
    id: int
    tenant_id: str
    actor_user_id: str | None
    actor_role: str | None
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    at: datetime
