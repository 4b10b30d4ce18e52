"""The provider catalog: everyone reads what they may use; super admins change status and
audience and set each provider's OAuth client."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from castiel_sync.api.deps import ProviderAccessDep, SuperAdminDep
from castiel_sync.api.problems import BadRequest, NotFound
from castiel_sync.api.schemas import (
    PROVIDER_ID_PATTERN,
    EntityOut,
    OAuthClientIn,
    ProviderOut,
    ProviderPatch,
)
from castiel_sync.catalog import Catalog, ProviderSpec
from castiel_sync.domain.secret_names import system_secret
from castiel_sync.store.tables import IntegrationProviderRow

router = APIRouter(prefix="/providers", tags=["providers"])

ProviderId = Annotated[str, Path(pattern=PROVIDER_ID_PATTERN, description="e.g. `salesforce`")]


def provider_out(row: IntegrationProviderRow, catalog: Catalog) -> ProviderOut:
    spec: ProviderSpec | None = catalog.get(row.id) if row.id in catalog else None
    entities: list[EntityOut] = []
    scopes: list[str] = []
    if spec is not None:
        scopes = list(spec.oauth.scopes) if spec.oauth else []
        entities = [
            EntityOut(
                name=e.name,
                shard_type=e.shard_type,
                direction=e.direction,
                supports_incremental=e.supports_incremental,
                supports_deletes=e.supports_deletes,
                supports_webhooks=e.supports_webhooks,
                fields=[m.external for m in e.field_mappings],
            )
            for e in spec.entities
        ]
    return ProviderOut(
        id=row.id,
        name=row.name,
        category=row.category,
        status=row.status,
        audience=row.audience,
        auth_type=row.auth_type,
        docs_url=spec.docs_url if spec else None,
        scopes=scopes,
        webhooks=bool(spec and spec.webhooks.supported),
        entities=entities,
    )


@router.get("", summary="List the providers you may use (super admins: all)")
async def list_providers(
    access: ProviderAccessDep,
    category: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ProviderOut]:
    async with access.transaction() as repos:
        rows = await repos.providers.list(category=category)
    return [provider_out(row, access.ctx.catalog) for row in rows]


@router.get("/{provider_id}", summary="One provider")
async def get_provider(access: ProviderAccessDep, provider_id: ProviderId) -> ProviderOut:
    async with access.transaction() as repos:
        row = await repos.providers.get(provider_id)
    return provider_out(row, access.ctx.catalog)


@router.patch("/{provider_id}", summary="Change a provider's status or audience (super admin)")
async def patch_provider(
    access: SuperAdminDep, provider_id: ProviderId, body: ProviderPatch
) -> ProviderOut:
    if body.status is None and body.audience is None:
        raise BadRequest("send 'status' and/or 'audience' to change")
    async with access.transaction() as repos:
        before = await repos.providers.get(provider_id)
        snapshot = {"status": before.status, "audience": before.audience}
        row = before
        if body.status is not None:
            row = await repos.providers.set_status(provider_id, body.status)
        if body.audience is not None:
            row = await repos.providers.set_audience(provider_id, body.audience)
        await repos.audit.record(
            **access.audit_actor(),
            action="provider.update",
            object_type="provider",
            object_id=provider_id,
            before=snapshot,
            after={"status": row.status, "audience": row.audience},
        )
        return provider_out(row, access.ctx.catalog)


@router.put(
    "/{provider_id}/oauth-client",
    status_code=204,
    summary="Set the provider's OAuth client id and secret (super admin)",
    description="Stored in the vault as `system-{provider}-oauth`; never returned.",
)
async def put_oauth_client(
    access: SuperAdminDep, provider_id: ProviderId, body: OAuthClientIn
) -> Response:
    catalog: Catalog = access.ctx.catalog
    if provider_id not in catalog:
        raise NotFound(f"provider {provider_id!r} was not found")
    if catalog.get(provider_id).auth_type != "oauth2":
        raise BadRequest(f"{provider_id} does not use OAuth; it needs no OAuth client")
    name = system_secret(provider_id, "oauth")
    value = json.dumps(
        {"client_id": body.client_id, "client_secret": body.client_secret.get_secret_value()}
    )
    await access.ctx.vault.put(name, value)
    async with access.transaction() as repos:
        await repos.audit.record(
            **access.audit_actor(),
            action="provider.oauth_client.set",
            object_type="provider",
            object_id=provider_id,
            after={"clientId": body.client_id, "clientSecret": "set", "secretName": name},
        )
    return Response(status_code=204)
