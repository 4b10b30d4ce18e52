"""Tenant-scoped repositories: ``Repo(session, scope)``, nothing else.

With a :class:`~castiel_sync.domain.tenancy.TenantScope` every statement is confined to
that tenant and inserts take the tenant from the scope; with a
:class:`~castiel_sync.domain.tenancy.SystemScope` cross-tenant methods see every tenant
and tenant-only methods raise :class:`~castiel_sync.store.errors.ScopeError` (use
``repo.for_tenant(tenant_id)``). Another tenant's object raises the same
:class:`~castiel_sync.store.errors.NotFoundError` as a missing one.
"""

from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.repositories.audit import AuditRepository, redact
from castiel_sync.store.repositories.connections import ConnectionRepository
from castiel_sync.store.repositories.integrations import IntegrationRepository
from castiel_sync.store.repositories.oauth_states import OAuthStateRepository
from castiel_sync.store.repositories.providers import ProviderRepository
from castiel_sync.store.repositories.tenant_settings import (
    UNSET,
    LimitOverrides,
    Limits,
    TenantSettingsRepository,
)
from castiel_sync.store.repositories.webhook_deliveries import WebhookDeliveryRepository

__all__ = [
    "UNSET",
    "AuditRepository",
    "ConnectionRepository",
    "IntegrationRepository",
    "LimitOverrides",
    "Limits",
    "OAuthStateRepository",
    "ProviderRepository",
    "ScopedRepository",
    "TenantSettingsRepository",
    "WebhookDeliveryRepository",
    "redact",
]
