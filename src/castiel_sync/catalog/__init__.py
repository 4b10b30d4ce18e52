"""The provider catalog: every shipped provider declared as data in ``providers.yaml``.

``load_catalog()`` reads and validates the packaged file once per process;
``sync_catalog(session)`` (in :mod:`castiel_sync.catalog.sync`) writes it into the
``integration_providers`` table.
"""

from __future__ import annotations

from functools import cache

from castiel_sync.catalog._loader import (
    Catalog,
    CatalogError,
    HasVisibility,
    UnknownProviderError,
    parse_catalog,
    read_packaged_catalog_text,
    tenant_visible,
)
from castiel_sync.catalog.schema import (
    KNOWN_SHARD_TYPES,
    STABLE_PROVIDER_IDS,
    EntitySpec,
    OAuthConfig,
    ProviderSpec,
    RateLimit,
    ResolvedOAuth,
    WebhookSupport,
)
from castiel_sync.catalog.templating import TemplateError, TemplateVariable


@cache
def load_catalog() -> Catalog:
    """The packaged catalog, validated (raises :class:`CatalogError`) and cached."""
    return parse_catalog(read_packaged_catalog_text())


__all__ = [
    "KNOWN_SHARD_TYPES",
    "STABLE_PROVIDER_IDS",
    "Catalog",
    "CatalogError",
    "EntitySpec",
    "HasVisibility",
    "OAuthConfig",
    "ProviderSpec",
    "RateLimit",
    "ResolvedOAuth",
    "TemplateError",
    "TemplateVariable",
    "UnknownProviderError",
    "WebhookSupport",
    "load_catalog",
    "parse_catalog",
    "tenant_visible",
]
