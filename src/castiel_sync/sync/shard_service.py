"""A user's edits to shards (the API's ``PATCH /shards/{id}``), and the write-back they
owe.

``ShardService.patch`` writes a new version (compare-and-swap on the version, optionally
against the version the caller last saw) and, in the same transaction, publishes through
the outbox a shard event and one ``WriteBackRequested`` per relationship that writes back
(outbound or bidirectional, write-back enabled for its entity, and a changed field that an
outbound mapping reads).

Echo suppression, item 12: the inbound engine applies external changes with its own bulk
statements (``castiel_sync.sync._apply``) and never calls this service, so nothing an
inbound sync writes is written back to its source; the only write-backs the inbound side
emits are for fields where a three-way merge let Castiel's (user's) value win.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from castiel_sync.domain.hashing import canonical_datetime, fingerprint
from castiel_sync.domain.merge import same
from castiel_sync.domain.paths import MISSING, PathError, compile_path
from castiel_sync.domain.tenancy import TenantScope
from castiel_sync.store import Store
from castiel_sync.store.base import new_id, utcnow
from castiel_sync.store.errors import ConflictError
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.repositories.executions import SyncStateRepository
from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository
from castiel_sync.store.repositories.write_back import (
    RelationshipStateRepository,
    ShardEditRepository,
)
from castiel_sync.store.tables import ExternalRelationshipRow, ShardRow
from castiel_sync.sync._writeback import (
    MAX_HISTORY,
    PENDING_PREFIX,
    outbound_fields,
    plan_for,
    publish_shard_deleted,
    publish_shard_updated,
    publish_write_back,
    write_back_mapping,
)


class ShardEditError(ValueError):
    """An edit that cannot apply (a bad path, a deleted shard); safe to show."""


@dataclass
class PatchResult:
    shard: ShardRow
    changed_fields: list[str]
    #: ids of the WriteBackRequested events published with the edit
    write_backs: list[str] = field(default_factory=list)


class ShardService:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def patch(
        self,
        scope: TenantScope,
        shard_id: str,
        changes: dict[str, Any],
        *,
        actor: str,
        expected_version: int | None = None,
        remove: Iterable[str] = (),
    ) -> PatchResult:
        """Set each dotted path of ``changes`` (``None`` is a value: a cleared field) and
        remove each path of ``remove``. ``expected_version``: the version the caller
        edited (409 ConflictError when the shard moved on). No effective change: no new
        version and no event."""
        now = self.clock()
        async with self.store.transaction() as session:
            rels = await RelationshipRepository(session, scope).for_shard(shard_id)
            # Serialise with inbound pages of the same integrations (they lock them too).
            state = SyncStateRepository(session, scope)
            for integration_id in sorted({r.integration_id for r in rels}):
                await state.lock(integration_id)
            shard = await ShardRepository(session, scope).get(shard_id)
            if shard.deleted_at is not None:
                raise ShardEditError(f"shard {shard_id!r} is deleted")
            if expected_version is not None and expected_version != shard.version:
                raise ConflictError(
                    f"shard {shard_id!r} is at version {shard.version}, not {expected_version}; "
                    "reload it and apply your change again"
                )
            data = copy.deepcopy(shard.structured_data or {})
            changed = _apply(data, changes, remove)
            if not changed:
                return PatchResult(shard, [])
            version = shard.version + 1
            history = list(shard.history or [])
            history.append({"at": canonical_datetime(now), "source": actor, "action": "edited",
                            "version": version, "fields": changed})  # fmt: skip
            values = {
                "structured_data": data,
                "version": version,
                "content_hash": fingerprint(data),
                "history": history[-MAX_HISTORY:],
                "updated_by": actor,
                "updated_at": now,
            }
            if not await ShardEditRepository(session, scope).update_if_version(
                shard_id, shard.version, values
            ):
                raise ConflictError(f"shard {shard_id!r} changed meanwhile; try again")
            write_backs = await _owe_write_backs(
                session, scope, shard, rels, version, set(changed), now
            )
            publish_shard_updated(
                session, tenant_id=scope.tenant_id, shard_id=shard_id,
                shard_type=shard.shard_type, version=version, fields=changed,
            )  # fmt: skip
            shard = await ShardRepository(session, scope).get(shard_id)
            return PatchResult(shard, changed, write_backs)

    async def link(
        self,
        scope: TenantScope,
        shard_id: str,
        integration_id: str,
        entity: str,
        *,
        actor: str,
    ) -> str:
        """Relate a Castiel shard to a record that does not exist yet in ``entity`` of the
        integration: the outbound worker creates it. Returns the relationship id."""
        now = self.clock()
        async with self.store.transaction() as session:
            shard = await ShardRepository(session, scope).get(shard_id, include_deleted=False)
            integration = await IntegrationRepository(session, scope).get(integration_id)
            settings = IntegrationRepository.settings_of(integration)
            mapping = write_back_mapping(settings, entity)
            if mapping is None or mapping.shard_type != shard.shard_type:
                raise ShardEditError(
                    f"the integration does not write {shard.shard_type} shards back to {entity}"
                )
            rel_id = new_id()
            await RelationshipStateRepository(session, scope).add(
                ExternalRelationshipRow(
                    id=rel_id, shard_id=shard_id, integration_id=integration_id, entity=entity,
                    external_id=PENDING_PREFIX + rel_id, sync_direction=mapping.direction,
                    last_synced_snapshot={}, sync_status="pending", created_at=now,
                )
            )  # fmt: skip
            publish_write_back(
                session, tenant_id=scope.tenant_id, integration_id=integration_id,
                shard_id=shard_id, shard_type=shard.shard_type, version=shard.version,
                entity=entity, operation="create", external_id=None,
            )  # fmt: skip
            _ = actor
            return rel_id

    async def delete(self, scope: TenantScope, shard_id: str, *, actor: str) -> list[str]:
        """Tombstone the shard (new version), publish its ``Shard.Deleted`` and write the
        deletion back."""
        now = self.clock()
        async with self.store.transaction() as session:
            rels = await RelationshipRepository(session, scope).for_shard(shard_id)
            shard = await ShardRepository(session, scope).get(shard_id, include_deleted=False)
            version = shard.version + 1
            entry = {"at": canonical_datetime(now), "source": actor, "action": "deleted",
                     "version": version}  # fmt: skip
            history = [*(shard.history or []), entry]
            if not await ShardEditRepository(session, scope).update_if_version(
                shard_id, shard.version,
                {"deleted_at": now, "version": version, "updated_at": now, "updated_by": actor,
                 "history": history[-MAX_HISTORY:]},
            ):  # fmt: skip
                raise ConflictError(f"shard {shard_id!r} changed meanwhile; try again")
            publish_shard_deleted(
                session, tenant_id=scope.tenant_id, shard_id=shard_id,
                shard_type=shard.shard_type, version=version,
            )  # fmt: skip
            ids = []
            for rel in await _writing_back(session, scope, rels):
                if rel[0].external_id.startswith(PENDING_PREFIX):
                    continue
                ids.append(
                    publish_write_back(
                        session, tenant_id=scope.tenant_id, integration_id=rel[0].integration_id,
                        shard_id=shard_id, shard_type=shard.shard_type, version=version,
                        entity=rel[0].entity, operation="delete", external_id=rel[0].external_id,
                    )
                )  # fmt: skip
            return ids


def _apply(data: dict[str, Any], changes: dict[str, Any], remove: Iterable[str]) -> list[str]:
    changed: list[str] = []
    try:
        for name, value in changes.items():
            path = compile_path(name)
            if not same(path.get(data), value):
                path.set(data, copy.deepcopy(value))
                changed.append(path.text)
        for name in remove:
            path = compile_path(name)
            if path.get(data) is not MISSING:
                path.delete(data)
                changed.append(path.text)
    except PathError as exc:
        raise ShardEditError(str(exc)) from exc
    return changed


async def _writing_back(
    session: Any, scope: TenantScope, rels: list[ExternalRelationshipRow]
) -> list[tuple[ExternalRelationshipRow, list[str]]]:
    """The live relationships that write back, with the Castiel fields each writes."""
    out = []
    integrations = IntegrationRepository(session, scope)
    settings_by_id: dict[str, Any] = {}
    for rel in rels:
        if rel.sync_status == "deleted":
            continue
        if rel.integration_id not in settings_by_id:
            row = await integrations.get(rel.integration_id)
            settings_by_id[rel.integration_id] = IntegrationRepository.settings_of(row)
        mapping = write_back_mapping(settings_by_id[rel.integration_id], rel.entity,
                                     rel.sync_direction)  # fmt: skip
        if mapping is not None:
            out.append((rel, outbound_fields(plan_for(mapping))))
    return out


async def _owe_write_backs(
    session: Any,
    scope: TenantScope,
    shard: ShardRow,
    rels: list[ExternalRelationshipRow],
    version: int,
    changed: set[str],
    now: datetime,
) -> list[str]:
    ids: list[str] = []
    state = RelationshipStateRepository(session, scope)
    for rel, fields in await _writing_back(session, scope, rels):
        if not any(_overlaps(name, changed) for name in fields):
            continue
        pending = rel.external_id.startswith(PENDING_PREFIX)
        ids.append(
            publish_write_back(
                session, tenant_id=scope.tenant_id, integration_id=rel.integration_id,
                shard_id=shard.id, shard_type=shard.shard_type, version=version,
                entity=rel.entity, operation="create" if pending else "update",
                external_id=rel.external_id,
            )
        )  # fmt: skip
        await state.set_values(rel.id, {"sync_status": "pending"})
    _ = now
    return ids


def _overlaps(mapped: str, changed: set[str]) -> bool:
    """A mapped path and a changed path overlap when one encloses the other."""
    for name in changed:
        if mapped == name or mapped.startswith(name + ".") or name.startswith(mapped + "."):
            return True
    return False


__all__ = ["PatchResult", "ShardEditError", "ShardService"]
