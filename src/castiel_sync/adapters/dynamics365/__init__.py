"""Dynamics 365 / Dataverse adapter (Web API OData v4, change tracking, webhooks)."""

from castiel_sync.adapters.dynamics365._adapter import (
    API_PATH,
    AUTHORIZE_URL,
    TOKEN_URL,
    ChangeTrackingNotEnabledError,
    ConcurrencyConflictError,
    Dynamics365Adapter,
    entity_id_from_header,
    scope_for,
)
from castiel_sync.adapters.dynamics365._entities import ENTITIES, EntitySpec, entity_spec
from castiel_sync.adapters.dynamics365._odata import (
    build_filter,
    escape_like,
    escape_string,
    literal,
)
from castiel_sync.adapters.dynamics365._webhooks import WebhookAuth, parse_wcf_date

__all__ = [
    "API_PATH",
    "AUTHORIZE_URL",
    "ENTITIES",
    "TOKEN_URL",
    "ChangeTrackingNotEnabledError",
    "ConcurrencyConflictError",
    "Dynamics365Adapter",
    "EntitySpec",
    "WebhookAuth",
    "build_filter",
    "entity_id_from_header",
    "entity_spec",
    "escape_like",
    "escape_string",
    "literal",
    "parse_wcf_date",
    "scope_for",
]
