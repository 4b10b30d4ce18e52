"""Shards: list, get (with their external relationships), patch (a user's change, which
writes back), and a shard's relationships with their sync status.

Any role reads and edits its own tenant's shards (the user's change is what write-back
carries out); another tenant's shard is the same 404 as a missing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import Field

from castiel_sync.api.deps import TenantAccessDep
from castiel_sync.api.problems import BadRequest, UnprocessableProblem
from castiel_sync.api.schemas import MAX_VERSION, SHARD_TYPE_PATTERN, Out
from castiel_sync.domain.config import CamelModel
from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository
from castiel_sync.store.repositories.write_back import ShardEditRepository
from castiel_sync.store.tables import ExternalRelationshipRow, ShardRow
from castiel_sync.sync._writeback import PENDING_PREFIX
from castiel_sync.sync.shard_service import ShardEditError, ShardService

router = APIRouter(prefix="/shards", tags=["shards"])

ShardId = Annotated[str, Path(max_length=64, description="The shard's id.")]


class RelationshipOut(Out):
    id: str
    integration_id: str
    entity: str
    external_id: str | None
    sync_direction: str
    sync_status: str
    last_synced_at: datetime | None
    last_synced_version: int | None
    last_error: str | None
    external_modified_at: datetime | None
    deleted_upstream_at: datetime | None


class ShardOut(Out):
    id: str
    shard_type: str
    structured_data: dict[str, Any]
    version: int
    history: list[dict[str, Any]] | None = None
    updated_by: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    external_relationships: list[RelationshipOut] | None = None


class ShardPatch(CamelModel):
    """``changes``: dotted path -> value (``null`` is a value: a cleared field);
    ``remove``: paths to remove; ``version``: the version you edited (or ``If-Match``)."""

    changes: dict[str, Any] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, max_length=200)
    version: int | None = Field(None, ge=1, le=MAX_VERSION)


def relationship_out(row: ExternalRelationshipRow) -> RelationshipOut:
    external_id = None if row.external_id.startswith(PENDING_PREFIX) else row.external_id
    return RelationshipOut(
        id=row.id, integration_id=row.integration_id, entity=row.entity,
        external_id=external_id, sync_direction=row.sync_direction,
        sync_status=row.sync_status, last_synced_at=row.last_synced_at,
        last_synced_version=row.last_synced_version, last_error=row.last_error,
        external_modified_at=row.external_modified_at,
        deleted_upstream_at=row.deleted_upstream_at,
    )  # fmt: skip


def shard_out(
    row: ShardRow, rels: list[ExternalRelationshipRow] | None = None, *, full: bool = False
) -> ShardOut:
    return ShardOut(
        id=row.id, shard_type=row.shard_type, structured_data=row.structured_data or {},
        version=row.version, history=list(row.history or []) if full else None,
        updated_by=row.updated_by, created_at=row.created_at, updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        external_relationships=None if rels is None else [relationship_out(r) for r in rels],
    )  # fmt: skip


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or not 1 <= int(text) <= MAX_VERSION:
        raise BadRequest('If-Match takes the shard version as its ETag, e.g. If-Match: "3"')
    return int(text)


@router.get("", summary="The tenant's shards (keyset paging by id)")
async def list_shards(
    access: TenantAccessDep,
    shard_type: Annotated[str | None, Query(alias="type", pattern=SHARD_TYPE_PATTERN)] = None,
    integration_id: Annotated[str | None, Query(alias="integrationId", max_length=64)] = None,
    after_id: Annotated[str | None, Query(alias="afterId", max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ShardOut]:
    async with access.transaction() as repos:
        if integration_id is not None:
            await repos.integrations.get(integration_id)  # 404 outside the tenant
            rows = await ShardEditRepository(repos.session, access.scope).list_held_by(
                integration_id, shard_type=shard_type, after_id=after_id, limit=limit
            )
        else:
            rows = await ShardRepository(repos.session, access.scope).list(
                shard_type=shard_type, after_id=after_id, limit=limit
            )
        return [shard_out(row) for row in rows]


@router.get("/{shard_id}", summary="One shard, its history and its external relationships")
async def get_shard(access: TenantAccessDep, shard_id: ShardId, response: Response) -> ShardOut:
    async with access.transaction() as repos:
        row = await ShardRepository(repos.session, access.scope).get(shard_id)
        rels = await RelationshipRepository(repos.session, access.scope).for_shard(shard_id)
    response.headers["ETag"] = f'"{row.version}"'
    return shard_out(row, rels, full=True)


@router.patch(
    "/{shard_id}",
    summary="Change a shard; relationships that write back push the change to the provider",
)
async def patch_shard(
    access: TenantAccessDep,
    shard_id: ShardId,
    body: ShardPatch,
    response: Response,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> ShardOut:
    expected = _if_match(if_match)
    if body.version is not None:
        if expected is not None and expected != body.version:
            raise BadRequest("If-Match and version name different versions")
        expected = body.version
    service = ShardService(access.ctx.store)
    try:
        result = await service.patch(
            access.tenant_scope, shard_id, body.changes, remove=body.remove,
            actor=f"user:{access.principal.user_id}", expected_version=expected,
        )  # fmt: skip
    except ShardEditError as exc:
        raise UnprocessableProblem(str(exc)) from exc
    async with access.transaction() as repos:
        rels = await RelationshipRepository(repos.session, access.scope).for_shard(shard_id)
    response.headers["ETag"] = f'"{result.shard.version}"'
    return shard_out(result.shard, rels, full=True)


@router.get("/{shard_id}/relationships", summary="A shard's relationships and their sync status")
async def shard_relationships(access: TenantAccessDep, shard_id: ShardId) -> list[RelationshipOut]:
    async with access.transaction() as repos:
        await ShardRepository(repos.session, access.scope).get(shard_id)
        rels = await RelationshipRepository(repos.session, access.scope).for_shard(shard_id)
    return [relationship_out(r) for r in rels]
