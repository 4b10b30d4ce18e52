"""Applying a batch of external records to shards: the inbound hot path.

One call handles a page (up to 1000 records) inside the caller's transaction with a
handful of statements: one SELECT of the page's relationships (with their shards'
versions), one SELECT of the contents of shards that change, executemany INSERTs and
UPDATEs, one UPDATE marking the records a full run saw, and one executemany INSERT into
the outbox for the shard events. Unchanged records (by fingerprint of the mapped fields)
write nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from castiel_sync.domain.config import ConflictMode, MatchRule
from castiel_sync.domain.events import (
    SHARD_CREATED,
    SHARD_DELETED,
    SHARD_UPDATED,
    SOURCE_PREFIX,
    WRITE_BACK_REQUESTED,
    write_back_requested,
)
from castiel_sync.domain.hashing import canonical_datetime, fingerprint
from castiel_sync.domain.mapping import MappingPlan
from castiel_sync.domain.merge import three_way_merge
from castiel_sync.domain.paths import MISSING, Path, compile_path
from castiel_sync.domain.tenancy import TenantScope
from castiel_sync.sdk import ExternalRecord
from castiel_sync.store.base import new_id, new_ids
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.repositories.shards import (
    OutboxWriter,
    RelationshipRepository,
    ShardRepository,
)

#: Most record errors kept on one execution (the counts stay exact).
MAX_RECORD_ERRORS = 100
#: Most merge-decision entries kept in a shard's history.
MAX_HISTORY = 100


@dataclass(frozen=True)
class EntityContext:
    """Everything about one (integration, entity) the applier needs; built once per job."""

    tenant_id: str
    integration_id: str
    entity: str
    shard_type: str
    direction: str
    plan: MappingPlan
    conflict_mode: ConflictMode
    allowed: bool
    match_rules: tuple[MatchRule, ...] = ()
    delete_grace_seconds: int = 0
    #: fingerprint of the entity's field mappings (see ``trust_modified_at``)
    plan_key: str = ""
    #: a record whose provider modification time equals the one last applied is
    #: unchanged without mapping it again. Only true when the current mappings are the
    #: ones the last complete full run applied to every record.
    trust_modified_at: bool = False

    @property
    def actor(self) -> str:
        return f"integration:{self.integration_id}"

    @property
    def keeps_snapshot(self) -> bool:
        """The merge base is kept only where Castiel may write back (outbound or
        bidirectional relationships); inbound-only relationships never merge."""
        return self.direction != "inbound"

    def paths(self) -> list[Path]:
        return [compile_path(name) for name in self.plan.castiel_fields]


@dataclass
class BatchResult:
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("fetched", "created", "updated", "unchanged", "deleted", "failed", "conflicts"), 0
        )
    )
    record_errors: list[dict[str, Any]] = field(default_factory=list)
    #: (modified_at, external_id) of the live records, for the high-water mark
    moments: list[tuple[datetime, str]] = field(default_factory=list)
    events: int = 0


def _error(result: BatchResult, external_id: str, reason: str, **extra: Any) -> None:
    if len(result.record_errors) < MAX_RECORD_ERRORS:
        result.record_errors.append({"externalId": external_id[:255], "reason": reason, **extra})


class _Events:
    """Shard and write-back events of one batch, inserted into the outbox at once."""

    def __init__(self, ctx: EntityContext, now: datetime) -> None:
        self.ctx = ctx
        self.now = now
        self.time = canonical_datetime(now)
        self.source = f"{SOURCE_PREFIX}/tenants/{ctx.tenant_id}/shards"
        self.rows: list[dict[str, Any]] = []

    def shard(
        self, event_type: str, action: str, shard_id: str, shard_type: str, version: int,
        changed: list[str] | None = None,
    ) -> None:  # fmt: skip
        # The same envelope as castiel_sync.domain.events.shard_* builds (a test pins it),
        # without a pydantic round trip per record.
        data: dict[str, Any] = {
            "tenantId": self.ctx.tenant_id,
            "integrationId": self.ctx.integration_id,
            "shardId": shard_id,
            "shardType": shard_type,
            "version": version,
        }
        if changed is not None:
            data["changedFields"] = changed
        self._add(
            event_type,
            {
                "specversion": "1.0",
                "id": f"shard:{shard_id}:{version}:{action}",
                "source": self.source,
                "type": event_type,
                "subject": shard_id,
                "time": self.time,
                "datacontenttype": "application/json",
                "data": data,
            },
            None,
        )

    def write_back(self, shard_id: str, shard_type: str, version: int, external_id: str) -> None:
        event = write_back_requested(
            tenant_id=self.ctx.tenant_id,
            integration_id=self.ctx.integration_id,
            shard_id=shard_id,
            shard_type=shard_type,
            shard_version=version,
            entity=self.ctx.entity,
            operation="update",
            external_id=external_id,
            time=self.now,
        )
        self._add(WRITE_BACK_REQUESTED, event.to_dict(), self.ctx.integration_id)

    def _add(self, event_type: str, envelope: dict[str, Any], session_key: str | None) -> None:
        self.rows.append(
            {
                "event_type": event_type,
                "session_key": session_key,
                "event": envelope,
                "created_at": self.now,
                "relayed_at": None,
            }
        )

    async def flush(self, session: AsyncSession) -> int:
        if self.rows:
            scope = TenantScope(self.ctx.tenant_id)  # type: ignore[arg-type]
            await OutboxWriter(session, scope).publish_many(self.rows)
        count, self.rows = len(self.rows), []
        return count


async def publish_envelopes(
    session: AsyncSession, tenant_id: str, envelopes: Sequence[tuple[dict[str, Any], str | None]],
    now: datetime,
) -> None:  # fmt: skip
    """Insert ready CloudEvent dicts ``(envelope, session_key)`` into the outbox."""
    if envelopes:
        rows = [
            {
                "event_type": envelope["type"],
                "session_key": key,
                "event": envelope,
                "created_at": now,
                "relayed_at": None,
            }
            for envelope, key in envelopes
        ]
        await OutboxWriter(session, TenantScope(tenant_id)).publish_many(rows)  # type: ignore[arg-type]


def _overlay(paths: list[Path], target: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """Write every mapped path present in ``data`` into ``target``; the changed paths."""
    changed: list[str] = []
    for path in paths:
        value = path.get(data)
        if value is MISSING:
            continue
        if path.get(target) != value or type(path.get(target)) is not type(value):
            path.set(target, copy.deepcopy(value))
            changed.append(path.text)
    return changed


def _project(paths: list[Path], data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        value = path.get(data)
        if value is not MISSING:
            path.set(out, copy.deepcopy(value))
    return out


def _key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


async def apply_batch(
    session: AsyncSession,
    ctx: EntityContext,
    records: Iterable[ExternalRecord],
    *,
    now: datetime,
    seen_run_id: str | None = None,
    reject_older: bool = False,
    result: BatchResult | None = None,
) -> BatchResult:
    """Apply ``records`` (one page, or one webhook's events) to the store, in the
    caller's transaction. ``seen_run_id``: the full run whose mark-and-sweep these
    records count for. ``reject_older``: skip a record older than the one already
    applied (out-of-order webhook deliveries)."""
    result = result or BatchResult()
    counts = result.counts
    scope = TenantScope(ctx.tenant_id)  # type: ignore[arg-type]
    shards = ShardRepository(session, scope)
    rels = RelationshipRepository(session, scope)

    # The last occurrence of an id in a batch wins (a webhook naming a record twice).
    batch: dict[str, ExternalRecord] = {}
    for record in records:
        counts["fetched"] += 1
        batch[record.external_id] = record
    if not batch:
        return result
    if not ctx.allowed:
        for external_id in batch:
            counts["failed"] += 1
            _error(result, external_id, f"shard type {ctx.shard_type} is not allowed for this "
                   "integration (data access control)")  # fmt: skip
        return result

    paths = ctx.paths()
    plan = ctx.plan
    events = _Events(ctx, now)
    existing = await rels.by_external_ids(ctx.integration_id, ctx.entity, list(batch))

    mapped: dict[str, tuple[dict[str, Any], str]] = {}
    gone: list[str] = []
    same_time: list[str] = []
    trust = ctx.trust_modified_at
    for external_id, record in batch.items():
        if record.deleted:
            gone.append(external_id)
            continue
        if trust and record.modified_at is not None:
            rel = existing.get(external_id)
            if (
                rel is not None
                and rel.external_modified_at == record.modified_at
                and rel.sync_status != "deleted"
                and rel.shard_deleted_at is None
                and rel.deleted_upstream_at is None
            ):
                same_time.append(external_id)
                counts["unchanged"] += 1
                result.moments.append((record.modified_at, external_id))
                continue
        try:
            outcome = plan.inbound(record.data)
            digest = fingerprint(outcome.data)
        except (TypeError, ValueError) as exc:
            counts["failed"] += 1
            _error(result, external_id, f"record could not be mapped: {type(exc).__name__}")
            continue
        for problem in outcome.errors:
            _error(result, external_id, problem.reason, field=problem.field,
                   value=problem.value, transform=problem.transform)  # fmt: skip
        mapped[external_id] = (outcome.data, digest)
        if record.modified_at is not None:
            result.moments.append((record.modified_at, external_id))

    # Classify against what we hold.
    new_ids_list: list[str] = []
    changed: list[str] = []
    relink: list[str] = []  # unchanged content, but pending deletion: seen again
    for external_id, (_data, digest) in mapped.items():
        rel = existing.get(external_id)
        if rel is None:
            new_ids_list.append(external_id)
            continue
        record = batch[external_id]
        dead = rel.sync_status == "deleted" or rel.shard_deleted_at is not None
        if (
            reject_older
            and not dead
            and record.modified_at is not None
            and rel.external_modified_at is not None
            and record.modified_at < rel.external_modified_at
        ):
            counts["unchanged"] += 1
            continue
        if dead or rel.last_synced_hash != digest:
            changed.append(external_id)
        elif rel.deleted_upstream_at is not None:
            relink.append(external_id)
            counts["unchanged"] += 1
        else:
            counts["unchanged"] += 1

    # Match rules: link a new record to an existing shard instead of duplicating it.
    links: dict[str, Any] = {}
    if new_ids_list and ctx.match_rules:
        links = await _match(ctx, shards, rels, {i: mapped[i][0] for i in new_ids_list})

    contents = await shards.contents(
        [existing[i].shard_id for i in changed] + [row_id for row_id in links.values()]
    )
    merge_rel_ids = [
        existing[i].id
        for i in changed
        if ctx.keeps_snapshot
        and existing[i].sync_status != "deleted"
        and existing[i].shard_deleted_at is None
        and (existing[i].last_synced_version or 0) < existing[i].shard_version
    ]
    bases = await rels.snapshots(merge_rel_ids) if merge_rel_ids else {}
    open_conflicts: set[tuple[str, str]] = set()
    if bases and ctx.conflict_mode == "manual":
        open_conflicts = await ConflictRepository(session, scope).open_fields(
            existing[i].shard_id for i in changed if existing[i].id in bases
        )

    shard_inserts: list[dict[str, Any]] = []
    rel_inserts: list[dict[str, Any]] = []
    shard_updates: list[dict[str, Any]] = []
    rel_updates: list[dict[str, Any]] = []
    conflict_rows: list[dict[str, Any]] = []

    def rel_update(rel: Any, **values: Any) -> None:
        row = {
            "id": rel.id,
            "sync_direction": ctx.direction,
            "last_synced_at": now,
            "last_synced_version": rel.last_synced_version,
            "last_synced_hash": rel.last_synced_hash,
            "last_synced_snapshot": {},
            "external_modified_at": rel.external_modified_at,
            "sync_status": "synced",
            "last_error": None,
            "deleted_upstream_at": None,
        }
        row.update(values)
        rel_updates.append(row)

    # Ids for the new shards and relationships, made at once (time-ordered, so each
    # table's rows are appended in creation order).
    fresh_ids = iter(new_ids(2 * len(new_ids_list)))

    def new_rel(external_id: str, shard_id: str, version: int, digest: str, snap: Any) -> None:
        rel_inserts.append(
            {
                "id": next(fresh_ids, None) or new_id(),
                "shard_id": shard_id,
                "integration_id": ctx.integration_id,
                "entity": ctx.entity,
                "external_id": external_id,
                "sync_direction": ctx.direction,
                "last_synced_at": now,
                "last_synced_version": version,
                "last_synced_hash": digest,
                "last_synced_snapshot": snap if ctx.keeps_snapshot else {},
                "external_modified_at": batch[external_id].modified_at,
                "sync_status": "synced",
                "last_error": None,
                "deleted_upstream_at": None,
                "created_at": now,
                "seen_run_id": seen_run_id,
            }
        )

    def shard_update(shard_id: str, data: dict[str, Any], version: int, history: list[Any],
                     digest: str | None = None) -> None:  # fmt: skip
        shard_updates.append(
            {
                "id": shard_id,
                "structured_data": data,
                "version": version,
                "content_hash": digest or fingerprint(data),
                "history": history[-MAX_HISTORY:],
                "updated_by": ctx.actor,
                "updated_at": now,
                "deleted_at": None,
            }
        )

    # New records: create a shard, or link to the matched one.
    for external_id in new_ids_list:
        data, digest = mapped[external_id]
        target = links.get(external_id)
        if target is None:
            shard_id = next(fresh_ids)
            shard_inserts.append(
                {
                    "id": shard_id,
                    "shard_type": ctx.shard_type,
                    "structured_data": data,
                    "version": 1,
                    "content_hash": digest,
                    "history": [],
                    "updated_by": ctx.actor,
                    "created_at": now,
                    "updated_at": now,
                    "deleted_at": None,
                }
            )
            new_rel(external_id, shard_id, 1, digest, data)
            events.shard(SHARD_CREATED, "created", shard_id, ctx.shard_type, 1)
            counts["created"] += 1
            continue
        shard = contents[target]
        merged = copy.deepcopy(shard.structured_data or {})
        fields = _overlay(paths, merged, data)
        version = shard.version
        if fields:
            version += 1
            shard_update(target, merged, version, list(shard.history or []))
            events.shard(SHARD_UPDATED, "updated", target, shard.shard_type, version, fields)
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
        new_rel(external_id, target, version, digest, _project(paths, merged))

    # Known records whose mapped content changed (or that come back from the dead).
    for external_id in changed:
        data, digest = mapped[external_id]
        rel = existing[external_id]
        record = batch[external_id]
        shard = contents[rel.shard_id]
        current = shard.structured_data or {}
        history = list(shard.history or [])
        revived = rel.sync_status == "deleted" or shard.deleted_at is not None
        base = bases.get(rel.id) if not revived else None
        if base is None:
            merged = copy.deepcopy(current)
            fields = _overlay(paths, merged, data)
            version = shard.version
            if fields or revived:
                version += 1
                if revived:
                    history.append({"at": canonical_datetime(now), "source": ctx.actor,
                                    "externalId": external_id, "action": "revived"})  # fmt: skip
                shard_update(rel.shard_id, merged, version, history)
                events.shard(SHARD_UPDATED, "updated", rel.shard_id, shard.shard_type, version,
                             fields)  # fmt: skip
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
            rel_update(rel, last_synced_version=version, last_synced_hash=digest,
                       last_synced_snapshot=_project(paths, merged) if ctx.keeps_snapshot else {},
                       external_modified_at=record.modified_at)  # fmt: skip
            continue

        # Both sides changed since the last sync: three-way merge against the base.
        external = copy.deepcopy(data)
        for path in paths:
            if path.get(external) is MISSING:
                was = path.get(base)
                if was is not MISSING:
                    path.set(external, copy.deepcopy(was))
        merge = three_way_merge(
            base, current, external, ctx.conflict_mode,
            castiel_modified_at=shard.updated_at, external_modified_at=record.modified_at,
            fields=plan.castiel_fields,
        )  # fmt: skip
        next_base = merge.next_base
        for name in merge.outbound_fields:  # not agreed until the write-back lands
            path = compile_path(name)
            was = path.get(base)
            if was is MISSING:
                path.delete(next_base)
            else:
                path.set(next_base, copy.deepcopy(was))
        version = shard.version
        decisions = [d.to_dict() for d in merge.changes]
        if decisions:
            history.append({"at": canonical_datetime(now), "source": ctx.actor,
                            "externalId": external_id, "mode": ctx.conflict_mode,
                            "decisions": decisions})  # fmt: skip
        if merge.inbound_fields or decisions:
            if merge.inbound_fields:
                version += 1
            shard_update(rel.shard_id, merge.merged, version, history)
            if merge.inbound_fields:
                events.shard(SHARD_UPDATED, "updated", rel.shard_id, shard.shard_type, version,
                             list(merge.inbound_fields))  # fmt: skip
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        else:
            counts["unchanged"] += 1
        pending = bool(merge.outbound_fields or merge.conflicts)
        if merge.outbound_fields:
            events.write_back(rel.shard_id, shard.shard_type, version, external_id)
        for conflict in merge.conflicts:
            counts["conflicts"] += 1
            if (rel.shard_id, conflict.field) in open_conflicts:
                continue
            open_conflicts.add((rel.shard_id, conflict.field))
            conflict_rows.append(
                {
                    "id": new_id(),
                    "integration_id": ctx.integration_id,
                    "shard_id": rel.shard_id,
                    "relationship_id": rel.id,
                    "field": conflict.field,
                    "base_value": None if conflict.base is MISSING else conflict.base,
                    "castiel_value": None if conflict.castiel is MISSING else conflict.castiel,
                    "external_value": None if conflict.external is MISSING else conflict.external,
                    "status": "open",
                    "resolution": None,
                    "resolved_value": None,
                    "resolved_by": None,
                    "resolved_at": None,
                    "created_at": now,
                }
            )
        rel_update(
            rel,
            last_synced_version=rel.last_synced_version if pending else version,
            last_synced_hash=digest,
            last_synced_snapshot=next_base,
            external_modified_at=record.modified_at,
            sync_status="pending" if merge.outbound_fields else "synced",
        )

    # Seen again while pending deletion: no longer gone.
    await rels.update_many(
        [{"id": existing[i].id, "deleted_upstream_at": None, "last_synced_at": now}
         for i in relink]
    )  # fmt: skip

    # Deletions the provider reported: pending deletion now, tombstoned after the grace.
    marked = []
    for external_id in gone:
        rel = existing.get(external_id)
        if rel is None or rel.sync_status == "deleted" or rel.deleted_upstream_at is not None:
            continue
        marked.append(rel)
        counts["deleted"] += 1
    if marked:
        await rels.update_many(
            [{"id": rel.id, "deleted_upstream_at": batch[rel.external_id].modified_at or now,
              "external_modified_at": batch[rel.external_id].modified_at}
             for rel in marked]
        )  # fmt: skip

    await shards.insert_many(shard_inserts)
    await rels.insert_many(rel_inserts)
    await shards.update_many(shard_updates)
    await rels.update_many(rel_updates)
    if conflict_rows:
        await ConflictRepository(session, scope).insert_many(conflict_rows)
    if seen_run_id is not None:
        seen = [i for i in mapped if i in existing] + same_time
        await rels.mark_seen(ctx.integration_id, ctx.entity, seen, seen_run_id)
    if marked:
        await reap(session, ctx, now=now, events=events, result=result)
    result.events += await events.flush(session)
    return result


async def _match(
    ctx: EntityContext,
    shards: ShardRepository,
    rels: RelationshipRepository,
    new: dict[str, dict[str, Any]],
) -> dict[str, str]:
    """``{external_id: shard_id}`` for new records a match rule links to a live shard of
    the same type that this integration's entity does not hold yet (first rule wins; a
    shard is linked to at most one record of a batch)."""
    links: dict[str, str] = {}
    taken: set[str] = set()
    held = rels.held_by(ctx.integration_id, ctx.entity)
    for rule in ctx.match_rules:
        paths = [compile_path(name) for name in rule.fields]
        wanted: dict[str, tuple[str | None, ...]] = {}
        for external_id, data in new.items():
            if external_id in links:
                continue
            keys = tuple(_key(path.get(data)) for path in paths)
            if all(keys):
                wanted[external_id] = keys
        if not wanted:
            continue
        candidates = await shards.find_by_fields(
            rule.shard_type, rule.fields[0], [k[0] for k in wanted.values() if k[0]],
            exclude_held_by=held,
        )  # fmt: skip
        by_key: dict[tuple[str | None, ...], str] = {}
        for row in sorted(candidates, key=lambda r: r.id):
            keys = tuple(_key(path.get(row.structured_data or {})) for path in paths)
            by_key.setdefault(keys, row.id)
        for external_id, keys in wanted.items():
            shard_id = by_key.get(keys)
            if shard_id is not None and shard_id not in taken:
                links[external_id] = shard_id
                taken.add(shard_id)
    return links


async def reap(
    session: AsyncSession,
    ctx: EntityContext,
    *,
    now: datetime,
    events: _Events | None = None,
    result: BatchResult | None = None,
) -> int:
    """Tombstone the pending deletions whose grace period has ended, and every shard no
    live relationship holds any more. Returns the number of shards tombstoned."""
    scope = TenantScope(ctx.tenant_id)  # type: ignore[arg-type]
    rels = RelationshipRepository(session, scope)
    cutoff = now - timedelta(seconds=ctx.delete_grace_seconds)
    due = await rels.due_for_tombstone(ctx.integration_id, ctx.entity, cutoff)
    if not due:
        return 0
    await rels.set_status([row.id for row in due], "deleted", now=now)
    shard_ids = {row.shard_id for row in due}
    orphans = sorted(shard_ids - await rels.holding(shard_ids))
    own = events is None
    events = events or _Events(ctx, now)
    tombstoned = await ShardRepository(session, scope).tombstone(orphans, now)
    for row in tombstoned:
        events.shard(SHARD_DELETED, "deleted", row.id, row.shard_type, row.version + 1)
    if own:
        await events.flush(session)
    return len(tombstoned)


__all__ = [
    "MAX_RECORD_ERRORS",
    "BatchResult",
    "EntityContext",
    "apply_batch",
    "publish_envelopes",
    "reap",
]
