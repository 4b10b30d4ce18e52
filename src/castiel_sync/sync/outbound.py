"""The outbound worker: the spec's "Outbound Sync / Write-Back" step 4 and 5.

``OutboundSync.handle(event, attempt=n)`` (or the runtime's ``handler(event, delivery)``)
for one ``WriteBackRequested``:

1. loads the integration, shard and relationship in the event's tenant scope;
2. **never stale**: skips the event when the relationship already recorded a write-back
   of this shard version or a newer one, and otherwise always writes the shard's
   *current* state, never the event's payload, so version n cannot land after n+1;
3. writes only what Castiel changed since the last agreed snapshot (the three-way merge
   base), reverse-mapped through the entity's compiled mapping, and never a field with an
   open conflict: a concurrent external change to another field survives;
4. creates, updates or deletes the external record. A create retried after an ambiguous
   failure (sent, no answer: ``attempt > 1``) first looks the record up with
   ``adapter.find_record`` so the provider never gets a duplicate;
5. records ``last_synced_at``, ``last_synced_version``, ``last_synced_hash`` (the
   fingerprint the provider's echo maps to, so the inbound engine treats the echo as
   unchanged) and the new snapshot.

Failures follow the integration's ``WriteBackConfig.retry_policy`` (default 3 attempts,
5000 ms, doubling): :class:`RetryLater` (a ``RetryableSyncError``: the runtime worker
nacks with ``retry_after``) with the provider's Retry-After when it sent one, else the
policy's delay; past the last attempt, or for a failure retrying cannot fix,
:class:`GiveUp` (a ``SyncConfigError``: the worker dead-letters it at once with the
reason). Both leave the reason on the relationship (``sync_status`` ``pending`` /
``failed``, ``last_error``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.events import WRITE_BACK_REQUESTED, CloudEvent
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.sdk import (
    AdapterError,
    IntegrationAdapter,
    NotFoundError,
    NotSupportedError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.store import Store
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError as StoreNotFoundError
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository
from castiel_sync.store.repositories.write_back import RelationshipStateRepository
from castiel_sync.store.tables import ExternalRelationshipRow, IntegrationRow, ShardRow
from castiel_sync.sync._writeback import (
    PENDING_PREFIX,
    Diff,
    agreed_after_write,
    castiel_diff,
    plan_for,
    write_back_mapping,
)
from castiel_sync.sync.credentials import CredentialProvider
from castiel_sync.sync.inbound import AdapterFactory, default_adapter_factory
from castiel_sync.sync.jobs import RetryableSyncError, SyncConfigError

log = structlog.get_logger(__name__)

OutboundStatus = Literal["updated", "created", "linked", "deleted", "unchanged", "skipped"]


class RetryLater(RetryableSyncError):
    """Try this write-back again in ``delay_seconds`` (the runtime nacks with it)."""

    def __init__(self, reason: str, delay_seconds: float) -> None:
        super().__init__(reason, retry_after=delay_seconds)
        self.delay_seconds = delay_seconds


class GiveUp(SyncConfigError):
    """Stop retrying: the runtime dead-letters the message with this reason."""


@dataclass
class OutboundOutcome:
    status: OutboundStatus
    external_id: str | None = None
    version: int | None = None
    fields: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass
class _Loaded:
    integration: IntegrationRow
    settings: IntegrationSettings
    shard: ShardRow
    rel: ExternalRelationshipRow
    open_fields: set[str]


class OutboundSync:
    def __init__(
        self,
        store: Store,
        credentials: CredentialProvider,
        *,
        adapter_factory: AdapterFactory = default_adapter_factory,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.adapter_factory = adapter_factory
        self.clock = clock

    async def __call__(self, event: CloudEvent, delivery: Any) -> None:
        """The runtime's handler signature (``HandlerRegistry.register``)."""
        await self.handle(event, attempt=getattr(delivery, "delivery_count", 1) or 1)

    async def handle(self, event: CloudEvent, *, attempt: int = 1) -> OutboundOutcome:
        if event.type != WRITE_BACK_REQUESTED:
            raise GiveUp(f"not a write-back event: {event.type}")
        data = event.data
        scope = TenantScope(TenantId(event.tenant_id))
        version = int(data["shardVersion"])
        try:
            loaded = await self._load(scope, data)
        except StoreNotFoundError:
            return OutboundOutcome("skipped", reason="the shard, relationship or integration "
                                   "is gone")  # fmt: skip
        if loaded is None:
            return OutboundOutcome("skipped", reason="no relationship writes this shard back")
        rel, shard = loaded.rel, loaded.shard
        if rel.sync_status == "deleted":
            return OutboundOutcome("skipped", rel.external_id, reason="the relationship is deleted")
        if rel.last_synced_version is not None and rel.last_synced_version >= version:
            return OutboundOutcome("skipped", rel.external_id, rel.last_synced_version,
                                   reason="a newer or equal version is already synced")  # fmt: skip
        mapping = write_back_mapping(loaded.settings, rel.entity, rel.sync_direction)
        if mapping is None:
            return OutboundOutcome("skipped", rel.external_id, reason="write-back is off")
        if loaded.integration.status in {"disabled", "paused"}:
            reason = f"the integration is {loaded.integration.status}"
            await self._fail(scope, rel, reason)
            raise GiveUp(reason)
        plan = plan_for(mapping)
        base = dict(rel.last_synced_snapshot or {})
        current = dict(shard.structured_data or {})
        creating = rel.external_id.startswith(PENDING_PREFIX)
        if shard.deleted_at is not None:
            operation = "delete"
            diff = Diff([], {})
        else:
            operation = "create" if creating else "update"
            diff = castiel_diff(plan, base, current, exclude=loaded.open_fields,
                                everything=creating)  # fmt: skip
        payload = plan.outbound(diff.patch)
        if payload.errors:
            reason = "; ".join(f"{e.field}: {e.reason}" for e in payload.errors)
            reason = f"the shard's values cannot be written back ({reason})"
            await self._fail(scope, rel, reason)
            raise GiveUp(reason)
        if operation == "delete" and creating:
            await self._record(scope, rel, shard.version, {"sync_status": "deleted"})
            return OutboundOutcome("deleted", None, shard.version)
        if operation == "update" and not payload.data:
            snapshot, digest = agreed_after_write(plan, base, current, diff)
            await self._record(scope, rel, shard.version, self._synced(snapshot, None))
            return OutboundOutcome("unchanged", rel.external_id, shard.version)

        policy = loaded.settings.write_back.retry_policy
        external_id = None if creating else rel.external_id
        status: OutboundStatus
        adapter: IntegrationAdapter | None = None
        try:
            adapter = await self._connect(loaded.integration)
            if operation == "delete":
                try:
                    await adapter.delete_record(rel.entity, rel.external_id)
                except NotFoundError:
                    pass  # already gone: the deletion holds
                status = "deleted"
            elif operation == "update":
                try:
                    await adapter.update_record(rel.entity, rel.external_id, payload.data)
                except NotFoundError as exc:
                    raise GiveUp(
                        f"the {rel.entity} record {rel.external_id} no longer exists in the "
                        "provider"
                    ) from exc
                status = "updated"
            else:
                found = None
                if attempt > 1:
                    found = await self._look_up(adapter, rel.entity, payload.data, loaded)
                if found is not None:
                    external_id, status = found, "linked"
                else:
                    external_id = await adapter.create_record(rel.entity, payload.data)
                    status = "created"
        except GiveUp as exc:
            await self._fail(scope, rel, str(exc))
            raise
        except (RateLimitedError, TransientError) as exc:
            reason = exc.user_message
            if attempt >= policy.max_attempts:
                reason = f"gave up after {attempt} attempts: {reason}"
                await self._fail(scope, rel, reason)
                raise GiveUp(reason) from exc
            wait = exc.retry_after
            delay = float(wait) if wait is not None else policy.delay_ms(attempt) / 1000
            await self._note(scope, rel, f"attempt {attempt} of {policy.max_attempts} failed: "
                             f"{reason}; retrying in {delay:g}s")  # fmt: skip
            raise RetryLater(reason, delay) from exc
        except AdapterError as exc:
            reason = f"the provider refused the write: {exc.user_message}"
            await self._fail(scope, rel, reason)
            raise GiveUp(reason) from exc
        finally:
            if adapter is not None:
                try:
                    await adapter.disconnect()
                except Exception:
                    log.warning("adapter disconnect failed", integration=rel.integration_id)

        if status == "deleted":
            await self._record(scope, rel, shard.version, {"sync_status": "deleted",
                               "last_synced_at": self.clock(), "last_error": None})  # fmt: skip
            return OutboundOutcome(status, rel.external_id, shard.version)
        snapshot, digest = agreed_after_write(plan, base, current, diff)
        values = self._synced(snapshot, digest)
        if external_id != rel.external_id:
            values["external_id"] = external_id
        await self._record(scope, rel, shard.version, values)
        return OutboundOutcome(status, external_id, shard.version, diff.fields)

    # -- steps ------------------------------------------------------------------------

    async def _load(self, scope: TenantScope, data: dict[str, Any]) -> _Loaded | None:
        async with self.store.transaction() as session:
            integration = await IntegrationRepository(session, scope).get(data["integrationId"])
            shard = await ShardRepository(session, scope).get(data["shardId"])
            rel: ExternalRelationshipRow | None = None
            external_id = data.get("externalId")
            if external_id:
                rel = await RelationshipRepository(session, scope).find(
                    integration.id, data["entity"], external_id
                )
            if rel is None or rel.shard_id != shard.id:
                rel = await RelationshipStateRepository(session, scope).for_shard_entity(
                    shard.id, integration.id, data["entity"]
                )
            if rel is None:
                return None
            conflicts = await ConflictRepository(session, scope).list(
                status="open", shard_id=shard.id, limit=1000
            )
            open_fields = {c.field for c in conflicts if c.relationship_id == rel.id}
        settings = IntegrationRepository.settings_of(integration)
        return _Loaded(integration, settings, shard, rel, open_fields)

    async def _connect(self, integration: IntegrationRow) -> IntegrationAdapter:
        credentials = await self.credentials.credentials(integration)
        try:
            adapter = self.adapter_factory(integration)
        except LookupError as exc:
            raise GiveUp(str(exc)) from exc
        refresher = self.credentials.token_refresher(integration)
        configure = getattr(adapter, "configure", None)
        if refresher is not None and configure is not None:
            configure(token_refresher=refresher)
        await adapter.connect(credentials)
        return adapter

    async def _look_up(
        self, adapter: IntegrationAdapter, entity: str, payload: dict[str, Any], loaded: _Loaded
    ) -> str | None:
        """After an ambiguous create: the record an earlier attempt may have created,
        matched on the match-rule fields of the shard type when the integration has
        them, else on every scalar field sent."""
        match = _match_keys(payload, loaded)
        if not match:
            return None
        try:
            record = await adapter.find_record(entity, match)
        except NotSupportedError:
            return None
        return record.external_id if record is not None else None

    def _synced(self, snapshot: dict[str, Any], digest: str | None) -> dict[str, Any]:
        values: dict[str, Any] = {
            "last_synced_at": self.clock(),
            "last_synced_snapshot": snapshot,
            "sync_status": "synced",
            "last_error": None,
        }
        if digest is not None:
            values["last_synced_hash"] = digest
        return values

    async def _record(
        self, scope: TenantScope, rel: ExternalRelationshipRow, version: int, values: dict[str, Any]
    ) -> None:
        async with self.store.transaction() as session:
            shards = ShardRepository(session, scope)
            current = await shards.get(rel.shard_id)
            if current.version > version and values.get("sync_status") == "synced":
                values["sync_status"] = "pending"  # a newer version's write-back is owed
            await RelationshipStateRepository(session, scope).record_synced(
                rel.id, version, {**values, "last_synced_version": version}
            )

    async def _note(self, scope: TenantScope, rel: ExternalRelationshipRow, reason: str) -> None:
        async with self.store.transaction() as session:
            await RelationshipStateRepository(session, scope).set_values(
                rel.id, {"sync_status": "pending", "last_error": reason[:2000]}
            )

    async def _fail(self, scope: TenantScope, rel: ExternalRelationshipRow, reason: str) -> None:
        async with self.store.transaction() as session:
            await RelationshipStateRepository(session, scope).set_values(
                rel.id, {"sync_status": "failed", "last_error": reason[:2000]}
            )


def _match_keys(payload: dict[str, Any], loaded: _Loaded) -> dict[str, Any]:
    scalars = {
        k: v for k, v in payload.items() if isinstance(v, str | int | float | bool) and v != ""
    }
    rules = [r for r in loaded.settings.match_rules if r.shard_type == loaded.shard.shard_type]
    if rules:
        mapping = write_back_mapping(loaded.settings, loaded.rel.entity)
        by_castiel = {m.castiel: m.external for m in (mapping.field_mappings if mapping else [])}
        keys = [by_castiel.get(name) for name in rules[0].fields]
        if all(k in scalars for k in keys if k) and all(keys):
            return {k: scalars[k] for k in keys if k}
    return scalars


__all__ = ["GiveUp", "OutboundOutcome", "OutboundSync", "RetryLater"]
