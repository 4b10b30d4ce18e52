"""HubSpot adapter (CRM v3 objects, search, batch, webhook signatures v1/v2/v3)."""

from castiel_sync.adapters.hubspot._adapter import (
    API_BASE_URL,
    AUTHORIZE_URL,
    TOKEN_URL,
    HubSpotAdapter,
    parse_hs_datetime,
)
from castiel_sync.adapters.hubspot._entities import ENTITIES, EntitySpec, entity_spec
from castiel_sync.adapters.hubspot._search import (
    SEARCH_RESULT_CAP,
    ScanState,
    render_filter,
    render_filters,
)
from castiel_sync.adapters.hubspot._webhooks import (
    signature_v1,
    signature_v2,
    signature_v3,
    v3_uri,
)

__all__ = [
    "API_BASE_URL",
    "AUTHORIZE_URL",
    "ENTITIES",
    "SEARCH_RESULT_CAP",
    "TOKEN_URL",
    "EntitySpec",
    "HubSpotAdapter",
    "ScanState",
    "entity_spec",
    "parse_hs_datetime",
    "render_filter",
    "render_filters",
    "signature_v1",
    "signature_v2",
    "signature_v3",
    "v3_uri",
]
