"""Data types of the adapter contract. Public through :mod:`castiel_sync.sdk`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from castiel_sync.domain.filters import FilterCondition

MAX_FETCH_LIMIT = 1000


class Credentials(BaseModel):
    """What an adapter needs to reach its API. Secret fields never show in repr or logs."""

    model_config = ConfigDict(extra="allow")

    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    expires_at: datetime | None = None
    scope: str | None = None
    api_key: SecretStr | None = None
    # Where the API is: Salesforce's token response ``instance_url``, a Dataverse org URL,
    # or a local emulator in tests and demos.
    instance_url: str | None = None

    def __repr_args__(self) -> Any:
        """Declared fields only (secret ones are ``SecretStr``, shown masked): an extra
        field a token response brought along (``id_token``, ``signature``...) may be a
        secret, so repr and str never show it. It stays readable as an attribute."""
        for name in type(self).model_fields:
            yield name, getattr(self, name)


class FetchOptions(BaseModel):
    filters: list[FilterCondition] = Field(default_factory=list)
    # Incremental high-water mark: only records modified at or after this instant.
    since: datetime | None = None
    # A provider's own change token (Dataverse deltaLink, Graph delta), when it has one.
    delta_token: str | None = None
    # Page continuation from the previous FetchResult.next_cursor.
    cursor: str | None = None
    limit: int = Field(MAX_FETCH_LIMIT, ge=1, le=MAX_FETCH_LIMIT)
    fields: list[str] | None = None
    # True to include records deleted upstream (tombstones) where the provider can.
    include_deleted: bool = False


class ExternalRecord(BaseModel):
    external_id: str
    data: dict[str, Any] = Field(default_factory=dict)
    modified_at: datetime | None = None
    deleted: bool = False


class FetchResult(BaseModel):
    records: list[ExternalRecord] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool = False
    # The newest modification instant seen; the next incremental run starts here.
    high_water_mark: datetime | None = None
    # The provider's next change token, when it uses one.
    delta_token: str | None = None


class ConnectionTestResult(BaseModel):
    ok: bool
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class WebhookRegistration(BaseModel):
    subscription_id: str | None = None
    events: list[str] = Field(default_factory=list)
    callback_url: str
    expires_at: datetime | None = None
    # A secret the provider generated or we chose, to verify deliveries; kept in the vault.
    secret: SecretStr | None = None


class WebhookRequest(BaseModel):
    """A webhook exactly as received. Signatures are checked over ``body``, unchanged."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    method: str
    url: str
    headers: httpx.Headers
    body: bytes

    @field_validator("headers", mode="before")
    @classmethod
    def _case_insensitive(cls, value: Mapping[str, str] | httpx.Headers) -> httpx.Headers:
        return value if isinstance(value, httpx.Headers) else httpx.Headers(dict(value))

    @property
    def query(self) -> httpx.QueryParams:
        return httpx.URL(self.url).params


class WebhookResponse(BaseModel):
    """What to answer a provider's handshake with."""

    status_code: int = 200
    body: bytes = b""
    media_type: str = "text/plain"
    headers: dict[str, str] = Field(default_factory=dict)


class WebhookEvent(BaseModel):
    """One change a webhook names. ``data`` is the full record when the payload carries it;
    otherwise the engine fetches the record by id."""

    entity: str
    external_id: str
    action: Literal["created", "updated", "deleted", "changed"] = "changed"
    data: dict[str, Any] | None = None
    modified_at: datetime | None = None
    # The provider's delivery or event id, for de-duplicating replays.
    event_id: str | None = None
