"""Manual conflict resolution (item 14): an admin settles a field the inbound engine's
three-way merge left open under the ``manual`` mode.

``ConflictService.resolve(scope, conflict_id, choice, value, actor=...)``, in one
transaction: applies the chosen value to the shard as a new version, records the decision
in the shard's history (which side changed the field, who resolved it and why that value
won), moves the relationship's snapshot (the merge base) to the value where the external
record already holds it, closes the conflict, and, when the external record must change,
publishes ``WriteBackRequested`` so the outbound worker writes it (the worker skips fields
with open conflicts until then, so neither side is overwritten while one is open).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from castiel_sync.domain.hashing import canonical_datetime, fingerprint
from castiel_sync.domain.merge import Conflict, resolve_conflict
from castiel_sync.domain.paths import MISSING, compile_path
from castiel_sync.domain.tenancy import TenantScope
from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import ConflictError
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository
from castiel_sync.store.repositories.write_back import (
    RelationshipStateRepository,
    ShardEditRepository,
)
from castiel_sync.store.tables import ConflictRow
from castiel_sync.sync._writeback import (
    MAX_HISTORY,
    publish_shard_updated,
    publish_write_back,
    write_back_mapping,
)


@dataclass
class ResolveResult:
    conflict: ConflictRow
    shard_version: int
    write_back: str | None


class ConflictService:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def resolve(
        self,
        scope: TenantScope,
        conflict_id: str,
        choice: str,
        value: Any = MISSING,
        *,
        actor: str,
    ) -> ResolveResult:
        """``choice``: ``castiel`` (keep the shard's value, write it to the provider),
        ``external`` (take the provider's), or ``value`` (``value``; None clears the
        field). ValueError for a bad choice; ConflictError when already resolved."""
        now = self.clock()
        async with self.store.transaction() as session:
            conflicts = ConflictRepository(session, scope)
            row = await conflicts.get(conflict_id)
            if row.status != "open":
                raise ConflictError(f"conflict {conflict_id!r} is already resolved")
            shard = await ShardRepository(session, scope).get(row.shard_id)
            rel = await RelationshipRepository(session, scope).get(row.relationship_id)
            path = compile_path(row.field)
            data = copy.deepcopy(shard.structured_data or {})
            conflict = Conflict(
                row.field, row.base_value, path.get(data), row.external_value,
                "changed", "changed",
            )  # fmt: skip
            resolution = resolve_conflict(conflict, choice, value)  # type: ignore[arg-type]
            if resolution.value is MISSING:
                path.delete(data)
            else:
                path.set(data, copy.deepcopy(resolution.value))
            version = shard.version + 1
            history = list(shard.history or [])
            history.append({"at": canonical_datetime(now), "source": actor,
                            "action": "conflict_resolved", "conflictId": row.id,
                            "externalId": rel.external_id, "mode": "manual", "version": version,
                            "decisions": [resolution.decision.to_dict()]})  # fmt: skip
            if not await ShardEditRepository(session, scope).update_if_version(
                shard.id, shard.version,
                {"structured_data": data, "version": version, "content_hash": fingerprint(data),
                 "history": history[-MAX_HISTORY:], "updated_by": actor, "updated_at": now},
            ):  # fmt: skip
                raise ConflictError(f"shard {shard.id!r} changed meanwhile; try again")

            rel_values: dict[str, Any] = {}
            write_back_id = None
            if resolution.write_external:
                # The base keeps the old value: the outbound diff then writes this field.
                integration = await IntegrationRepository(session, scope).get(rel.integration_id)
                settings = IntegrationRepository.settings_of(integration)
                if write_back_mapping(settings, rel.entity, rel.sync_direction) is not None:
                    write_back_id = publish_write_back(
                        session, tenant_id=scope.tenant_id, integration_id=rel.integration_id,
                        shard_id=shard.id, shard_type=shard.shard_type, version=version,
                        entity=rel.entity, operation="update", external_id=rel.external_id,
                    )  # fmt: skip
                    rel_values["sync_status"] = "pending"
            else:
                snapshot = copy.deepcopy(rel.last_synced_snapshot or {})
                if resolution.value is MISSING:
                    path.delete(snapshot)
                else:
                    path.set(snapshot, copy.deepcopy(resolution.value))
                rel_values["last_synced_snapshot"] = snapshot
            if rel_values:
                await RelationshipStateRepository(session, scope).set_values(rel.id, rel_values)
            publish_shard_updated(
                session, tenant_id=scope.tenant_id, shard_id=shard.id,
                shard_type=shard.shard_type, version=version, fields=[row.field],
            )  # fmt: skip
            stored = None if resolution.value is MISSING else resolution.value
            closed = await conflicts.mark_resolved(
                row.id, resolution=choice, resolved_value=stored, resolved_by=actor, at=now
            )
            return ResolveResult(closed, version, write_back_id)


__all__ = ["ConflictService", "ResolveResult"]
