"""A tenant's integration instances: create, read, configure, pause, activate, delete."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import ValidationError

from castiel_sync.api.deps import Access, Repositories, TenantAccessDep, TenantAdminDep
from castiel_sync.api.problems import (
    ConflictProblem,
    Forbidden,
    UnprocessableProblem,
    validation_problem,
)
from castiel_sync.api.schemas import (
    PROVIDER_ID_PATTERN,
    SHARD_TYPE_PATTERN,
    ConnectionOut,
    IntegrationCreate,
    IntegrationOut,
    IntegrationPatch,
    SettingsPatch,
)
from castiel_sync.catalog import ProviderSpec
from castiel_sync.domain import secret_names
from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.secret_names import user_key
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.tables import IntegrationConnectionRow, IntegrationRow
from castiel_sync.vault.orphans import delete_orphaned_secrets

router = APIRouter(prefix="/integrations", tags=["integrations"])

IntegrationId = Annotated[str, Path(max_length=64, description="The integration's id.")]
SETTINGS_FIELDS = tuple(SettingsPatch.model_fields)


# -- views ------------------------------------------------------------------------------


def integration_out(row: IntegrationRow) -> IntegrationOut:
    settings = IntegrationRepository.settings_of(row)
    return IntegrationOut(
        id=row.id,
        provider_id=row.provider_id,
        instance_id=row.instance_id,
        name=row.name,
        status=row.status,
        status_reason=row.status_reason,
        credential_secret_name=row.credential_secret_name,
        last_sync_at=row.last_sync_at,
        next_sync_at=row.next_sync_at,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        row_version=row.row_version,
        **{name: getattr(settings, name) for name in IntegrationSettings.model_fields},
    )


def connection_out(row: IntegrationConnectionRow) -> ConnectionOut:
    return ConnectionOut(
        id=row.id,
        integration_id=row.integration_id,
        scope=row.scope,
        user_id=row.user_id or None,
        credential_secret_name=row.credential_secret_name,
        status=row.status,
        token_expires_at=row.token_expires_at,
        last_refreshed_at=row.last_refreshed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def audit_view(row: IntegrationRow) -> dict[str, Any]:
    return integration_out(row).model_dump(
        mode="json", by_alias=True, exclude={"created_at", "updated_at", "last_sync_at"}
    )


# -- settings checks that need the provider ------------------------------------------------


def provider_errors(settings: IntegrationSettings, spec: ProviderSpec) -> list[dict[str, Any]]:
    """What the provider or the integration's allowed shard types forbid, with field paths."""
    errors: list[dict[str, Any]] = []
    entities = {e.name: e for e in spec.entities}
    supported = ", ".join(entities)
    allowed = set(settings.allowed_shard_types)

    def fail(field: str, message: str) -> None:
        errors.append({"field": f"body.{field}", "message": message, "code": "provider"})

    for i, shard_type in enumerate(settings.allowed_shard_types):
        if not re.fullmatch(SHARD_TYPE_PATTERN, shard_type):
            fail(f"allowedShardTypes.{i}", f"{shard_type!r} is not a shard type (c_name)")
    seen: set[str] = set()
    for i, mapping in enumerate(settings.entity_mappings):
        if mapping.entity not in entities:
            fail(
                f"entityMappings.{i}.entity",
                f"{spec.name} has no entity {mapping.entity!r}; it supports {supported}",
            )
        elif mapping.entity in seen:
            fail(f"entityMappings.{i}.entity", f"entity {mapping.entity!r} is mapped twice")
        seen.add(mapping.entity)
        if mapping.shard_type not in allowed:
            fail(
                f"entityMappings.{i}.shardType",
                f"shard type {mapping.shard_type!r} is not allowed for this integration; add it "
                f"to allowedShardTypes (now: {', '.join(sorted(allowed)) or 'none'})",
            )
    mapped = {m.entity: {f.external for f in m.field_mappings} for m in settings.entity_mappings}
    for entity, conditions in settings.pull_filters.items():
        spec_entity = entities.get(entity)
        if spec_entity is None:
            fail(
                f"pullFilters.{entity}",
                f"{spec.name} has no entity {entity!r} to filter; it supports {supported}",
            )
            continue
        known = {spec_entity.id_field, *(f.external for f in spec_entity.field_mappings)}
        if spec_entity.modified_field:
            known.add(spec_entity.modified_field)
        known |= mapped.get(entity, set())
        for j, condition in enumerate(conditions):
            if condition.field not in known:
                fail(
                    f"pullFilters.{entity}.{j}.field",
                    f"{entity} has no field {condition.field!r} to filter on; use one of "
                    f"{', '.join(sorted(known))} (or map the field first)",
                )
    for i, entity in enumerate(settings.write_back.entities):
        if entity not in entities:
            fail(
                f"writeBack.entities.{i}",
                f"{spec.name} has no entity {entity!r}; it supports {supported}",
            )
    if settings.write_back.enabled and settings.sync_direction == "inbound":
        fail(
            "writeBack.enabled",
            "write-back sends changes to the provider: set syncDirection to outbound or "
            "bidirectional first",
        )
    for i, rule in enumerate(settings.match_rules):
        if rule.shard_type not in allowed:
            fail(
                f"matchRules.{i}.shardType",
                f"shard type {rule.shard_type!r} is not in allowedShardTypes",
            )
    return errors


def validated_settings(
    base: dict[str, Any], patch: SettingsPatch, spec: ProviderSpec
) -> IntegrationSettings:
    values = dict(base)
    for name in patch.model_fields_set & set(SETTINGS_FIELDS):
        value = getattr(patch, name)
        if value is None:
            raise UnprocessableProblem(
                f"body.{SettingsPatch.model_fields[name].alias}: may not be null; leave it out "
                "to keep the current value",
                errors=[
                    {
                        "field": f"body.{SettingsPatch.model_fields[name].alias}",
                        "message": "may not be null",
                        "code": "null",
                    }
                ],
            )
        values[name] = value
    try:
        settings = IntegrationSettings.model_validate(values)
    except ValidationError as exc:
        raise validation_problem(exc) from None
    errors = provider_errors(settings, spec)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UnprocessableProblem(f"{first['field']}: {first['message']}{more}", errors=errors)
    return settings


async def visible_spec(access: Access, repos: Repositories, provider_id: str) -> ProviderSpec:
    """The catalog entry of a provider this tenant may use."""
    try:
        await repos.providers.get(provider_id)
    except NotFoundError:
        raise UnprocessableProblem(
            f"body.providerId: there is no provider {provider_id!r} available to your tenant; "
            "GET /providers lists them",
            errors=[
                {
                    "field": "body.providerId",
                    "message": f"unknown or unavailable provider {provider_id!r}",
                    "code": "provider",
                }
            ],
        ) from None
    spec: ProviderSpec = access.ctx.catalog.get(provider_id)
    return spec


def spec_of(access: Access, row: IntegrationRow) -> ProviderSpec:
    spec: ProviderSpec = access.ctx.catalog.get(row.provider_id)
    return spec


# -- routes -----------------------------------------------------------------------------


@router.post("", status_code=201, summary="Create an integration instance of a provider")
async def create_integration(access: TenantAdminDep, body: IntegrationCreate) -> IntegrationOut:
    try:
        secret_names.tenant_secret(access.tenant_id, body.provider_id, body.instance_id)
    except ValueError as exc:
        raise UnprocessableProblem(
            f"body.instanceId: {exc}",
            errors=[{"field": "body.instanceId", "message": str(exc), "code": "secret_name"}],
        ) from None
    async with access.transaction() as repos:
        spec = await visible_spec(access, repos, body.provider_id)
        defaults = spec.default_entity_mappings()
        base = IntegrationSettings(
            entity_mappings=defaults,
            allowed_shard_types=sorted({m.shard_type for m in defaults}),
        ).model_dump()
        settings = validated_settings(base, body, spec)
        row = await repos.integrations.create(
            provider_id=body.provider_id,
            name=body.name,
            instance_id=body.instance_id,
            settings=settings,
            created_by=access.principal.user_id,
        )
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.create",
            object_type="integration",
            object_id=row.id,
            after=audit_view(row),
        )
        return integration_out(row)


@router.get("", summary="List this tenant's integrations")
async def list_integrations(
    access: TenantAccessDep,
    provider_id: Annotated[
        str | None, Query(alias="providerId", pattern=PROVIDER_ID_PATTERN)
    ] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> list[IntegrationOut]:
    async with access.transaction() as repos:
        rows = await repos.integrations.list(provider_id=provider_id, status=status)
    return [integration_out(row) for row in rows]


@router.get("/{integration_id}", summary="One integration")
async def get_integration(access: TenantAccessDep, integration_id: IntegrationId) -> IntegrationOut:
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
    return integration_out(row)


@router.patch(
    "/{integration_id}",
    summary="Change an integration's name or settings",
    description="Send only what changes. `rowVersion` guards against overwriting someone "
    "else's change. `maxRecordsPerSync` is a super admin's limit (`/admin/limits`).",
)
async def patch_integration(
    access: TenantAdminDep, integration_id: IntegrationId, body: IntegrationPatch
) -> IntegrationOut:
    if "max_records_per_sync" in body.model_fields_set:
        raise Forbidden(
            "maxRecordsPerSync is set by a super admin, per tenant or globally "
            "(PATCH /admin/limits or /admin/tenants/{tenantId}/limits)"
        )
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        before = audit_view(row)
        spec = spec_of(access, row)
        current = repos.integrations.settings_of(row)
        settings = validated_settings(current.model_dump(), body, spec)
        fields: dict[str, Any] = {"settings": settings}
        if "name" in body.model_fields_set and body.name is not None:
            fields["name"] = body.name
        if settings.sync_frequency != current.sync_frequency and row.status == "active":
            fields["next_sync_at"] = settings.sync_frequency.next_after(utcnow())
        updated = await repos.integrations.update(
            integration_id, expected_row_version=body.row_version, **fields
        )
        after = audit_view(updated)
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.update",
            object_type="integration",
            object_id=integration_id,
            before=before,
            after=after,
        )
        return integration_out(updated)


@router.post("/{integration_id}/pause", summary="Stop syncing (settings are kept)")
async def pause_integration(
    access: TenantAdminDep, integration_id: IntegrationId
) -> IntegrationOut:
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        before = {"status": row.status}
        updated = await repos.integrations.update(
            integration_id, status="paused", status_reason="paused by an admin", next_sync_at=None
        )
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.pause",
            object_type="integration",
            object_id=integration_id,
            before=before,
            after={"status": updated.status},
        )
        return integration_out(updated)


@router.post(
    "/{integration_id}/activate",
    summary="Enable syncing",
    description="Refused until the integration has a credential (OAuth or API key).",
)
async def activate_integration(
    access: TenantAdminDep, integration_id: IntegrationId
) -> IntegrationOut:
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        connections = await repos.connections.list(integration_id)
        if row.credential_secret_name is None and not any(
            c.status == "active" for c in connections
        ):
            raise ConflictProblem(
                "connect the integration before activating it: POST "
                f"/integrations/{integration_id}/oauth/authorize (OAuth providers) or PUT "
                f"/integrations/{integration_id}/credentials/api-key (API-key providers)"
            )
        try:
            await repos.providers.get(row.provider_id)
        except NotFoundError:
            raise ConflictProblem(
                f"provider {row.provider_id!r} is no longer available to tenants; "
                "it cannot be activated"
            ) from None
        settings = repos.integrations.settings_of(row)
        updated = await repos.integrations.update(
            integration_id,
            status="active",
            status_reason=None,
            sync_enabled=True,
            next_sync_at=settings.sync_frequency.next_after(utcnow()),
        )
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.activate",
            object_type="integration",
            object_id=integration_id,
            before={"status": row.status, "syncEnabled": row.sync_enabled},
            after={"status": updated.status, "syncEnabled": updated.sync_enabled},
        )
        return integration_out(updated)


@router.delete(
    "/{integration_id}",
    status_code=204,
    summary="Delete an integration and its credentials",
)
async def delete_integration(access: TenantAdminDep, integration_id: IntegrationId) -> Response:
    # The PKCE verifiers of pending authorizations go first: their state rows, which name
    # them, go with the integration; an authorization that outlives them cannot complete.
    async with access.transaction() as repos:
        pending = await repos.oauth_states.for_integration(integration_id)
    for state in pending:
        await access.ctx.vault.delete(state.verifier_secret_name)
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        connections = await repos.connections.list(integration_id)
        names = {c.credential_secret_name for c in connections}
        names |= {n for n in (row.credential_secret_name, row.webhook_secret_name) if n}
        before = audit_view(row)
        await repos.integrations.delete(integration_id)
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.delete",
            object_type="integration",
            object_id=integration_id,
            before=before,
            after={"deletedSecretNames": sorted(names)},
        )
    # After the commit (the vault is a separate store): the integration's secrets are
    # orphans now. Should this process stop first, the refresher's hourly sweep removes them.
    await delete_orphaned_secrets(access.ctx.store, access.ctx.vault, access.tenant_scope)
    return Response(status_code=204)


@router.get(
    "/{integration_id}/connections",
    summary="Credentials' metadata (never the secret); users see their own",
)
async def list_connections(
    access: TenantAccessDep, integration_id: IntegrationId
) -> list[ConnectionOut]:
    async with access.transaction() as repos:
        await repos.integrations.get(integration_id)
        rows = await repos.connections.list(integration_id)
    if not access.principal.can_manage:
        mine = user_key(access.principal.user_id)
        rows = [r for r in rows if r.scope == "user" and r.user_id == mine]
    return [connection_out(r) for r in rows]
