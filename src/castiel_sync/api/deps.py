"""Dependencies, as ``Annotated`` aliases.

Routes get data access only through these. :data:`TenantAccessDep` is built from the
caller's token, so a route has no way to obtain a repository for another tenant: a
tenant admin's repositories are confined to the token's tenant, and a super admin's to
the tenant named explicitly with ``?tenantId=``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from castiel_sync.api.auth import Principal
from castiel_sync.api.context import AppContext
from castiel_sync.api.problems import BadRequest, Forbidden, NotFound, Unauthorized
from castiel_sync.domain.tenancy import Scope, SystemScope, TenantId, TenantScope
from castiel_sync.settings import Settings
from castiel_sync.store.repositories import (
    AuditRepository,
    ConnectionRepository,
    IntegrationRepository,
    OAuthStateRepository,
    ProviderRepository,
    TenantSettingsRepository,
)

TENANT_ID_PATTERN = r"^[0-9a-z]{1,64}$"

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT with `sub`, `tenant_id` and `role` claims "
    "(`castiel-sync token --tenant <id> --role tenant_admin`).",
)


def app_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(app_context)]


async def current_principal(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized(
            "send a bearer token: 'Authorization: Bearer <token>' "
            "(mint one with 'castiel-sync token --tenant <id> --role tenant_admin')"
        )
    return await ctx.verifier.verify(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@dataclass
class Repositories:
    """Every repository, bound to one session and one scope."""

    session: AsyncSession
    scope: Scope
    settings: Settings

    @cached_property
    def integrations(self) -> IntegrationRepository:
        return IntegrationRepository(self.session, self.scope)

    @cached_property
    def connections(self) -> ConnectionRepository:
        return ConnectionRepository(self.session, self.scope)

    @cached_property
    def providers(self) -> ProviderRepository:
        return ProviderRepository(self.session, self.scope)

    @cached_property
    def oauth_states(self) -> OAuthStateRepository:
        return OAuthStateRepository(self.session, self.scope)

    @cached_property
    def tenant_settings(self) -> TenantSettingsRepository:
        return TenantSettingsRepository(self.session, self.scope, defaults=self.settings)

    @cached_property
    def audit(self) -> AuditRepository:
        return AuditRepository(self.session, self.scope)


@dataclass(frozen=True)
class Access:
    """A caller's way into the store: transactions whose repositories carry one scope.

    Vault calls run outside these transactions (before or after), so that SQLite's single
    writer is never held by a request while the vault writes."""

    ctx: AppContext
    principal: Principal
    scope: Scope

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Repositories]:
        async with self.ctx.store.transaction() as session:
            yield Repositories(session, self.scope, self.ctx.settings)

    @property
    def tenant_scope(self) -> TenantScope:
        """The scope of a tenant route (TenantAccessDep and TenantAdminDep give one)."""
        assert isinstance(self.scope, TenantScope)
        return self.scope

    @property
    def tenant_id(self) -> TenantId:
        return self.tenant_scope.tenant_id

    def audit_actor(self) -> dict[str, Any]:
        return {"actor_user_id": self.principal.user_id, "actor_role": str(self.principal.role)}


def _tenant_access(
    ctx: ContextDep,
    principal: PrincipalDep,
    tenant_id: Annotated[
        str | None,
        Query(
            alias="tenantId",
            pattern=TENANT_ID_PATTERN,
            description="Super admins only: the tenant to act on (required for them).",
        ),
    ] = None,
) -> Access:
    if principal.is_super_admin:
        if tenant_id is None:
            raise BadRequest(
                "a super admin acts on a tenant's data only by naming it: add ?tenantId=<tenant>"
            )
        return Access(ctx, principal, TenantScope(TenantId(tenant_id)))
    if tenant_id is not None and tenant_id != principal.tenant_id:
        # Another tenant is a 404, like another tenant's object.
        raise NotFound(f"tenant {tenant_id!r} was not found")
    return Access(ctx, principal, TenantScope(principal.tenant_id))


def _tenant_admin_access(access: Annotated[Access, Depends(_tenant_access)]) -> Access:
    if not access.principal.can_manage:
        raise Forbidden(
            "this needs a tenant admin (or a super admin naming the tenant); your token's "
            f"role is {access.principal.role}"
        )
    return access


def _super_admin_access(ctx: ContextDep, principal: PrincipalDep, request: Request) -> Access:
    if not principal.is_super_admin:
        raise Forbidden(f"this needs a super admin; your token's role is {principal.role}")
    return Access(ctx, principal, SystemScope(f"super admin {request.method} {request.url.path}"))


#: Read access to one tenant (any role).
TenantAccessDep = Annotated[Access, Depends(_tenant_access)]
#: Write access to one tenant (tenant admins, or a super admin naming the tenant).
TenantAdminDep = Annotated[Access, Depends(_tenant_admin_access)]
#: System-wide access (super admins only).
SuperAdminDep = Annotated[Access, Depends(_super_admin_access)]


async def _provider_access(ctx: ContextDep, principal: PrincipalDep) -> Access:
    """Super admins see the whole catalog; everyone else what tenants may use."""
    if principal.is_super_admin:
        return Access(ctx, principal, SystemScope("super admin reads the catalog"))
    return Access(ctx, principal, TenantScope(principal.tenant_id))


ProviderAccessDep = Annotated[Access, Depends(_provider_access)]
