"""Pydantic models of one provider catalog entry (DESIGN.md §2, ``integration_providers``).

The shipped entries live in ``providers.yaml`` beside this module. Every model is strict
(``extra="forbid"``) so a misspelt key is an error, not a silently ignored setting.
Default entity mappings reuse :class:`castiel_sync.domain.config.EntityMapping` and
:class:`~castiel_sync.domain.config.FieldMapping`, the same models a tenant admin edits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from castiel_sync.catalog.templating import (
    TemplateError,
    TemplateVariable,
    check_https_url,
    placeholders,
    render,
)
from castiel_sync.domain.config import (
    SHARD_TYPE_PATTERN,
    EntityMapping,
    FieldMapping,
    SyncDirection,
)

# The stable provider ids of DESIGN.md §4. Adapters and secret names use them; they never change.
STABLE_PROVIDER_IDS: tuple[str, ...] = (
    "salesforce",
    "dynamics365",
    "hubspot",
    "microsoft_teams",
    "zoom",
    "gong",
    "google_drive",
    "onedrive",
    "dropbox",
    "google_calendar",
    "outlook_calendar",
    "gmail",
    "outlook_mail",
    "jira",
    "asana",
    "notion",
    "google_news",
)

# Shard types a catalog default may map to. The first five are the specification's;
# ``c_task`` is added for project-management items (see providers.yaml for why).
KNOWN_SHARD_TYPES: frozenset[str] = frozenset(
    {"c_company", "c_contact", "c_opportunity", "c_note", "c_document", "c_task"}
)

Category = Literal[
    "crm",
    "communication",
    "storage",
    "calendar",
    "email",
    "project_management",
    "knowledge",
    "news",
]
Phase = Literal["phase1", "phase2", "phase3", "future"]
ProviderStatus = Literal["active", "beta", "deprecated", "disabled"]
Audience = Literal["system", "tenant"]
AuthType = Literal["oauth2", "api_key", "basic", "none"]
ClientAuthMethod = Literal["client_secret_post", "client_secret_basic"]
HandshakeKind = Literal[
    "none",
    "graph_validation_token",  # Microsoft Graph echoes ?validationToken=...
    "zoom_url_validation",  # Zoom endpoint.url_validation event
    "dropbox_challenge",  # Dropbox GET ?challenge=...
    "asana_hook_secret",  # Asana X-Hook-Secret echo
    "google_channel_sync",  # Google push channels' first "sync" message
]
SignatureScheme = Literal[
    "none",
    "hubspot_v3",  # X-HubSpot-Signature-v3, HMAC-SHA256 over method+uri+body+timestamp
    "graph_client_state",  # clientState shared secret echoed in each notification
    "zoom_hmac_sha256",  # x-zm-signature v0=HMAC-SHA256("v0:{ts}:{body}")
    "dropbox_hmac_sha256",  # X-Dropbox-Signature, HMAC-SHA256 of the body with the app secret
    "asana_hmac_sha256",  # X-Hook-Signature, HMAC-SHA256 with the handshake secret
    "google_channel_token",  # X-Goog-Channel-Token chosen at watch time
    "google_pubsub_oidc",  # Pub/Sub push with an OIDC bearer token (Gmail watch)
    # Outbound Message checked against the org's OrganizationId; relayed Change Data
    # Capture events signed with Standard Webhooks (webhook-signature)
    "salesforce_outbound_message",
    "dataverse_webhook_key",  # registered shared key: ?code= (WebhookKey), headers, query
]
# Authorize parameters the OAuth flow itself sets; a catalog entry must not override them.
RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)
SNAKE_ID = r"^[a-z][a-z0-9_]{1,63}$"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OAuthConfig(StrictModel):
    """How to run the authorization code flow against this provider."""

    authorization_url: str
    token_url: str
    revoke_url: str | None = None
    scopes: list[str] = Field(default_factory=list)
    scope_separator: str = Field(" ", min_length=1, max_length=1)
    pkce: bool = False
    client_auth: ClientAuthMethod = "client_secret_post"
    authorize_params: dict[str, str] = Field(default_factory=dict)
    # True: every refresh returns a new refresh token that must replace the stored one.
    # False: the docs say the refresh token stays valid. None: the docs do not say.
    refresh_token_rotates: bool | None = None
    access_token_lifetime_seconds: int | None = Field(None, gt=0)

    @field_validator("authorization_url", "token_url", "revoke_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else check_https_url(value)

    @field_validator("authorize_params")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        clash = RESERVED_AUTHORIZE_PARAMS & set(value)
        if clash:
            raise ValueError(f"the OAuth flow sets {', '.join(sorted(clash))} itself")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("scopes must not repeat")
        if any(not scope or any(ch.isspace() for ch in scope) for scope in value):
            raise ValueError("a scope must be non-empty and contain no whitespace")
        return value


class WebhookSupport(StrictModel):
    supported: bool = False
    handshake: HandshakeKind = "none"
    signature: SignatureScheme = "none"

    @model_validator(mode="after")
    def _consistent(self) -> WebhookSupport:
        if not self.supported and (self.handshake != "none" or self.signature != "none"):
            raise ValueError("handshake and signature must be 'none' when webhooks are unsupported")
        return self


class RateLimit(StrictModel):
    """Documented default limits. ``requests``/``window_seconds`` are None where the
    limit depends on the tenant's plan and is read from the response headers instead."""

    requests: int | None = Field(None, ge=1)
    window_seconds: int | None = Field(None, ge=1)
    headers: list[str] = Field(default_factory=list)
    notes: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> RateLimit:
        if (self.requests is None) != (self.window_seconds is None):
            raise ValueError("requests and window_seconds go together (both or neither)")
        return self


class EntitySpec(StrictModel):
    """One external entity the provider's API exposes, and its default mapping."""

    name: str = Field(min_length=1, max_length=100)
    shard_type: str = Field(pattern=SHARD_TYPE_PATTERN)
    direction: SyncDirection
    id_field: str = Field(min_length=1)
    # The field that orders changes for incremental sync; None when the API has none.
    modified_field: str | None = None
    supports_deletes: bool = False
    supports_incremental: bool = False
    supports_webhooks: bool = False
    field_mappings: list[FieldMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> EntitySpec:
        targets = [mapping.castiel for mapping in self.field_mappings]
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            raise ValueError(f"castiel field(s) mapped twice: {', '.join(duplicates)}")
        if self.supports_incremental and self.modified_field is None:
            raise ValueError("an incremental entity needs a modified_field")
        self.default_mapping()  # the same rules a tenant's own mapping must pass
        return self

    def default_mapping(self) -> EntityMapping:
        """The mapping a new integration starts with."""
        return EntityMapping(
            entity=self.name,
            shard_type=self.shard_type,
            direction=self.direction,
            field_mappings=list(self.field_mappings),
        )


class ResolvedOAuth(StrictModel):
    """An entry's OAuth endpoints and scopes with one connection's values filled in."""

    authorization_url: str
    token_url: str
    revoke_url: str | None
    scopes: list[str]


class ProviderSpec(StrictModel):
    """One entry of the provider catalog."""

    id: str = Field(pattern=SNAKE_ID)
    name: str = Field(min_length=1, max_length=200)
    category: Category
    phase: Phase
    status: ProviderStatus
    audience: Audience
    auth_type: AuthType
    oauth: OAuthConfig | None = None
    template_variables: dict[str, TemplateVariable] = Field(default_factory=dict)
    api_base_url: str
    docs_url: str
    entities: list[EntitySpec] = Field(min_length=1)
    webhooks: WebhookSupport = Field(default_factory=WebhookSupport)
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @field_validator("api_base_url", "docs_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return check_https_url(value)

    @model_validator(mode="after")
    def _check(self) -> ProviderSpec:
        if self.auth_type == "oauth2" and self.oauth is None:
            raise ValueError("auth_type oauth2 needs an 'oauth' section")
        if self.auth_type != "oauth2" and self.oauth is not None:
            raise ValueError(f"auth_type {self.auth_type} takes no 'oauth' section")
        if "{" in self.docs_url:
            raise ValueError("docs_url cannot be a template")

        names = [entity.name for entity in self.entities]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"entity name(s) declared twice: {', '.join(repeated)}")
        for entity in self.entities:
            if entity.shard_type not in KNOWN_SHARD_TYPES:
                raise ValueError(
                    f"entity {entity.name!r}: unknown shard type {entity.shard_type!r} "
                    f"(known: {', '.join(sorted(KNOWN_SHARD_TYPES))})"
                )
            if entity.supports_webhooks and not self.webhooks.supported:
                raise ValueError(
                    f"entity {entity.name!r} claims webhook support but the provider has none"
                )

        used: set[str] = set()
        for template in self._templates():
            try:
                used |= placeholders(template)
            except TemplateError as exc:
                raise ValueError(str(exc)) from exc
        undeclared = used - set(self.template_variables)
        if undeclared:
            raise ValueError(
                f"template variable(s) used but not declared: {', '.join(sorted(undeclared))}"
            )
        unused = set(self.template_variables) - used
        if unused:
            raise ValueError(
                f"template variable(s) declared but never used: {', '.join(sorted(unused))}"
            )
        return self

    def _templates(self) -> list[str]:
        templates = [self.api_base_url]
        if self.oauth is not None:
            templates += [self.oauth.authorization_url, self.oauth.token_url, *self.oauth.scopes]
            if self.oauth.revoke_url:
                templates.append(self.oauth.revoke_url)
        return templates

    def render(self, template: str, values: Mapping[str, str] | None = None) -> str:
        """Render one of this entry's templates with a connection's values."""
        return render(template, self.template_variables, values or {})

    def resolve_oauth(self, values: Mapping[str, str] | None = None) -> ResolvedOAuth:
        """The OAuth endpoints and scopes for one connection (before any token exists)."""
        if self.oauth is None:
            raise ValueError(f"provider {self.id!r} does not use OAuth ({self.auth_type})")
        oauth, values = self.oauth, values or {}
        return ResolvedOAuth(
            authorization_url=self.render(oauth.authorization_url, values),
            token_url=self.render(oauth.token_url, values),
            revoke_url=self.render(oauth.revoke_url, values) if oauth.revoke_url else None,
            scopes=[self.render(scope, values) for scope in oauth.scopes],
        )

    def resolve_api_base_url(self, values: Mapping[str, str] | None = None) -> str:
        """The API base URL for one connection (Salesforce's needs the token's instance)."""
        return self.render(self.api_base_url, values)

    def entity(self, name: str) -> EntitySpec:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(f"provider {self.id!r} has no entity {name!r}")

    def default_entity_mappings(self) -> list[EntityMapping]:
        return [entity.default_mapping() for entity in self.entities]
