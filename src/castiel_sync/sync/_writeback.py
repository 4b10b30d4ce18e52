"""What the write-back side shares: which relationships write back, the field diff
against the last agreed snapshot, the expected fingerprint of our own echo, and
publishing the events through the outbox."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from castiel_sync.bus.outbox import publish
from castiel_sync.domain.config import EntityMapping, IntegrationSettings
from castiel_sync.domain.events import shard_deleted, shard_updated, write_back_requested
from castiel_sync.domain.hashing import fingerprint
from castiel_sync.domain.mapping import MappingPlan, compile_mappings
from castiel_sync.domain.merge import same
from castiel_sync.domain.paths import MISSING, compile_path

#: ``external_id`` of a relationship whose external record is not created yet.
PENDING_PREFIX = "pending:"
#: Most entries kept in a shard's history (as the inbound engine keeps).
MAX_HISTORY = 100


def write_back_mapping(
    settings: IntegrationSettings, entity: str, relationship_direction: str | None = None
) -> EntityMapping | None:
    """The entity mapping a Castiel-side change of ``entity`` is written back through, or
    None when this integration does not write that entity back (write-back disabled, the
    entity not listed, or an inbound-only integration, mapping or relationship)."""
    write_back = settings.write_back
    if not write_back.enabled or settings.sync_direction == "inbound":
        return None
    if write_back.entities and entity not in write_back.entities:
        return None
    if relationship_direction == "inbound":
        return None
    for mapping in settings.entity_mappings:
        if mapping.entity == entity and mapping.enabled and mapping.direction != "inbound":
            return mapping
    return None


def outbound_fields(plan: MappingPlan) -> list[str]:
    """The Castiel paths an outbound mapping reads."""
    return [m.castiel for m in plan.mappings if m.direction != "inbound"]


@dataclass
class Diff:
    """The Castiel-side changes to write: ``patch`` in Castiel space (a removed field as
    ``None``), ``fields`` their paths."""

    fields: list[str]
    patch: dict[str, Any]


def castiel_diff(
    plan: MappingPlan,
    base: dict[str, Any],
    current: dict[str, Any],
    *,
    exclude: Iterable[str] = (),
    everything: bool = False,
) -> Diff:
    """Fields Castiel changed since the last agreed ``base`` (all present ones when
    ``everything``: a create). ``exclude``: fields with an open conflict."""
    skip = set(exclude)
    fields: list[str] = []
    patch: dict[str, Any] = {}
    for name in outbound_fields(plan):
        if name in skip:
            continue
        path = compile_path(name)
        now, was = path.get(current), path.get(base)
        if everything:
            if now is MISSING:
                continue
        elif same(now, was):
            continue
        fields.append(name)
        path.set(patch, None if now is MISSING else copy.deepcopy(now))
    return Diff(fields, patch)


def agreed_after_write(
    plan: MappingPlan, base: dict[str, Any], current: dict[str, Any], diff: Diff
) -> tuple[dict[str, Any], str]:
    """The snapshot both sides hold once ``diff`` is written, and the fingerprint the
    provider's echo of that write maps to (what the inbound engine compares)."""
    snapshot = copy.deepcopy(base)
    for name in diff.fields:
        path = compile_path(name)
        value = path.get(current)
        if value is MISSING:
            path.delete(snapshot)
        else:
            path.set(snapshot, copy.deepcopy(value))
    echo = copy.deepcopy(snapshot)
    round_trip = plan.inbound(plan.outbound(diff.patch).data).data
    for name in diff.fields:
        path = compile_path(name)
        value = path.get(round_trip)
        if value is not MISSING:
            path.set(echo, value)
    return snapshot, fingerprint(echo)


def plan_for(mapping: EntityMapping) -> MappingPlan:
    return compile_mappings(mapping.field_mappings)


def publish_write_back(
    session: AsyncSession,
    *,
    tenant_id: str,
    integration_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    entity: str,
    operation: str,
    external_id: str | None,
) -> str:
    event = write_back_requested(
        tenant_id=tenant_id,
        integration_id=integration_id,
        shard_id=shard_id,
        shard_type=shard_type,
        shard_version=version,
        entity=entity,
        operation=operation,  # type: ignore[arg-type]
        external_id=None
        if external_id is None or external_id.startswith(PENDING_PREFIX)
        else external_id,
    )
    publish(session, event, session_key=integration_id)
    return event.id


def publish_shard_updated(
    session: AsyncSession,
    *,
    tenant_id: str,
    shard_id: str,
    shard_type: str,
    version: int,
    fields: list[str],
) -> None:
    publish(
        session,
        shard_updated(
            tenant_id=tenant_id, shard_id=shard_id, shard_type=shard_type, version=version,
            changed_fields=fields,
        ),
    )  # fmt: skip


def publish_shard_deleted(
    session: AsyncSession, *, tenant_id: str, shard_id: str, shard_type: str, version: int
) -> None:
    publish(
        session,
        shard_deleted(
            tenant_id=tenant_id, shard_id=shard_id, shard_type=shard_type, version=version
        ),
    )


__all__ = [
    "MAX_HISTORY",
    "PENDING_PREFIX",
    "Diff",
    "agreed_after_write",
    "castiel_diff",
    "outbound_fields",
    "plan_for",
    "publish_shard_deleted",
    "publish_shard_updated",
    "publish_write_back",
    "write_back_mapping",
]
