"""Salesforce adapter (REST API, SOQL, Outbound Messages, relayed Change Data Capture)."""

from castiel_sync.adapters.salesforce._adapter import (
    AUTHORIZE_URL,
    DEFAULT_API_VERSION,
    SANDBOX_AUTHORIZE_URL,
    SANDBOX_TOKEN_URL,
    TOKEN_URL,
    SalesforceAdapter,
    parse_sf_datetime,
)
from castiel_sync.adapters.salesforce._entities import ENTITIES, EntitySpec, entity_spec
from castiel_sync.adapters.salesforce._soql import build_select, escape_string, literal
from castiel_sync.adapters.salesforce._webhooks import ACK_BODY

__all__ = [
    "ACK_BODY",
    "AUTHORIZE_URL",
    "DEFAULT_API_VERSION",
    "ENTITIES",
    "SANDBOX_AUTHORIZE_URL",
    "SANDBOX_TOKEN_URL",
    "TOKEN_URL",
    "EntitySpec",
    "SalesforceAdapter",
    "build_select",
    "entity_spec",
    "escape_string",
    "literal",
    "parse_sf_datetime",
]
