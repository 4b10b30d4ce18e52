"""Deleting the vault secrets nobody will use again: those of integrations that no longer
exist, and the PKCE verifiers of OAuth authorizations nobody completed.

Deleting an integration commits the database delete first and removes its secrets from
the vault afterwards: the two stores cannot commit together, and deleting the secrets
first would leave a live integration without credentials whenever the database delete
failed. A crash in between leaves orphaned secrets. A secret's name is a function of its
integration's tenant, provider and instance (:mod:`castiel_sync.domain.secret_names`), so
an orphan is known by its name alone, and :func:`delete_orphaned_secrets` removes it: the
integration delete runs it for its tenant right after the commit, and the token
refresher's hourly pass for every tenant.

The vault is listed before the integrations are read: credentials are only ever written
for an integration that exists already, so every secret the listing finds belongs to an
integration the later read still sees, unless that integration was deleted.

An OAuth authorization (``POST .../oauth/authorize``) leaves a state row, valid for ten
minutes, and its PKCE verifier in the vault; the callback consumes both. Those of a user
who never came back are removed by :func:`purge_expired_authorizations`, in the same
hourly pass.
"""

from __future__ import annotations

from datetime import datetime

from castiel_sync.domain import secret_names
from castiel_sync.domain.tenancy import Scope, SystemScope, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.repositories import IntegrationRepository, OAuthStateRepository
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.vault.base import Vault

#: The vault names of PKCE verifiers start so (``api/routes/credentials.py``).
VERIFIER_PREFIX = "pkce-"


async def delete_orphaned_secrets(store: Store, vault: Vault, scope: Scope) -> list[str]:
    """Delete the integration secrets (OAuth tokens, API keys, webhook secrets; tenant and
    user scope) whose integration is not in the database: the scope's tenant's, or every
    tenant's from a SystemScope. Returns the deleted names."""
    if isinstance(scope, TenantScope):
        listed = await vault.list(secret_names.tenant_prefix(scope.tenant_id))
    else:
        listed = await vault.list(secret_names.TENANTS_PREFIX)
    async with store.transaction() as session:
        integrations = await IntegrationRepository(session, scope).list()
    live = {_prefix(row) for row in integrations}
    orphans = []
    for name in sorted(listed):
        owner = secret_names.owner_prefix(name)
        if owner is not None and owner not in live:
            await vault.delete(name)
            orphans.append(name)
    return orphans


async def purge_expired_authorizations(
    store: Store, vault: Vault, scope: Scope, now: datetime | None = None
) -> int:
    """Delete the OAuth states past their expiry (the callback refuses them already) and
    their PKCE verifiers: the scope's tenant's, or every tenant's from a SystemScope.
    Returns how many. The verifiers go first: the state row is what names a verifier, so
    a crash in between leaves the row for the next purge, never a verifier nobody finds."""
    now = now or utcnow()
    async with store.transaction() as session:
        expired = await OAuthStateRepository(session, scope).expired(now)
    for row in expired:
        await vault.delete(row.verifier_secret_name)
    async with store.transaction() as session:
        return await OAuthStateRepository(session, scope).purge_expired(now)


async def delete_orphaned_verifiers(store: Store, vault: Vault) -> list[str]:
    """Delete the PKCE verifiers (``pkce-...``) no OAuth state names: left by a crash
    between an authorization's steps. Authorize writes the state before the verifier and
    the callback reads the verifier before it takes the state, so listing the vault
    first and the states second never finds a verifier still in use without its state."""
    listed = await vault.list(VERIFIER_PREFIX)
    async with store.transaction() as session:
        named = await OAuthStateRepository(session, SystemScope("verifier sweep")).verifier_names()
    orphans = [name for name in listed if name not in named]
    for name in orphans:
        await vault.delete(name)
    return orphans


def _prefix(row: IntegrationRow) -> str | None:
    try:
        return secret_names.integration_prefix(row.tenant_id, row.provider_id, row.instance_id)
    except ValueError:
        return None  # ids no secret name can hold: the integration has no secrets


__all__ = [
    "VERIFIER_PREFIX",
    "delete_orphaned_secrets",
    "delete_orphaned_verifiers",
    "purge_expired_authorizations",
]
