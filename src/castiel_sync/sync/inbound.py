"""The inbound sync service: the spec's "Inbound Sync" steps 3 to 6 as bounded,
crash-safe, idempotent jobs.

``InboundSync.run_job(job)``:

1. loads the integration in the job's tenant scope (another tenant's id: NotFoundError,
   nothing written);
2. claims the entity's run in the checkpoint (a new run, or the interrupted one: a job
   always continues from the last committed page), records a ``running`` execution;
3. gets credentials (:class:`~castiel_sync.sync.credentials.CredentialProvider`), builds
   and connects the adapter, applies the tenant's pullFilters;
4. fetches pages and applies each in ONE transaction together with the execution's
   counters and the checkpoint's advance (and, on the job's last page, the follow-up
   ``SyncRequested`` when records remain, or the run's completion: delete detection,
   high-water mark, ``lastSyncAt`` / ``nextSyncAt``).

A job applies at most the effective ``maxRecordsPerSync`` records (tenant, then global
limit, at most 1000). A kill at any instant loses at most the uncommitted page, which the
next job (the redelivered message, or the follow-up) fetches again from the committed
position; re-applying a record is a no-op by its dedup key and fingerprint.

Data access control: an entity whose shard type is not in the integration's
``allowed_shard_types`` is not fetched at all (the job fails with a clear message), and
webhook records of such an entity are reported per record. **An empty list allows
nothing**: the management API fills it from the catalog's entity defaults when an
integration is created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog

from castiel_sync.domain.config import EntityMapping, IntegrationSettings
from castiel_sync.domain.hashing import fingerprint
from castiel_sync.domain.mapping import MappingPlan, compile_mappings
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.sdk import (
    MAX_FETCH_LIMIT,
    AdapterError,
    AuthError,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    IntegrationAdapter,
    RateLimitedError,
    TransientError,
    WebhookEvent,
    get_adapter,
)
from castiel_sync.settings import Settings, get_settings
from castiel_sync.store import Store
from castiel_sync.store.base import new_id, utcnow
from castiel_sync.store.repositories import IntegrationRepository, TenantSettingsRepository
from castiel_sync.store.repositories.executions import ExecutionRepository, SyncStateRepository
from castiel_sync.store.repositories.shards import RelationshipRepository
from castiel_sync.store.repositories.webhook_deliveries import WebhookDeliveryRepository
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.sync._apply import (
    MAX_RECORD_ERRORS,
    BatchResult,
    EntityContext,
    apply_batch,
    publish_envelopes,
    reap,
)
from castiel_sync.sync.checkpoint import EntityCheckpoint, RunState, advance_hwm
from castiel_sync.sync.credentials import CredentialProvider
from castiel_sync.sync.jobs import JobOutcome, RetryableSyncError, SyncConfigError, SyncJob

log = structlog.get_logger(__name__)

AdapterFactory = Callable[[IntegrationRow], IntegrationAdapter]


def default_adapter_factory(integration: IntegrationRow) -> IntegrationAdapter:
    """The installed adapter for the integration's provider (entry points)."""
    return get_adapter(integration.provider_id)()


def inbound_entities(settings: IntegrationSettings) -> list[EntityMapping]:
    """The enabled entity mappings that sync inbound (inbound or bidirectional)."""
    return [m for m in settings.entity_mappings if m.enabled and m.direction != "outbound"]


@dataclass
class WebhookOutcome:
    execution_id: str
    counts: dict[str, int] = field(default_factory=dict)
    record_errors: list[dict[str, Any]] = field(default_factory=list)


class _Overtaken(Exception):
    """Another job advanced the run since this one read it."""


class InboundSync:
    """Runs inbound sync jobs and applies webhook events. One instance per worker; it
    caches compiled mapping plans (per integration config version) and the one provider
    page a job stopped in the middle of (so the follow-up need not fetch it again)."""

    def __init__(
        self,
        store: Store,
        credentials: CredentialProvider,
        *,
        adapter_factory: AdapterFactory = default_adapter_factory,
        settings: Settings | None = None,
        clock: Callable[[], datetime] = utcnow,
        look_back: timedelta = timedelta(0),
        page_cache_size: int = 8,
    ) -> None:
        self.store = store
        self.credentials = credentials
        self.adapter_factory = adapter_factory
        self.settings = settings
        self.clock = clock
        self.look_back = look_back
        self._plans: OrderedDict[tuple[str, int, str], MappingPlan] = OrderedDict()
        self._pages: OrderedDict[tuple[str, ...], FetchResult] = OrderedDict()
        self._page_cache_size = page_cache_size
        self._transport: httpx.AsyncBaseTransport | None = None

    # -- public -----------------------------------------------------------------------

    async def run_job(self, job: SyncJob) -> JobOutcome:
        scope = TenantScope(TenantId(job.tenant_id))
        async with self.store.transaction() as session:
            integration = await IntegrationRepository(session, scope).get(job.integration_id)
            limits = await TenantSettingsRepository(
                session, scope, defaults=self.settings or get_settings()
            ).effective()
        settings = IntegrationRepository.settings_of(integration)
        if integration.status in {"disabled", "paused"}:
            return JobOutcome("skipped", job, error=f"the integration is {integration.status}")
        if job.entity is None:
            return await self._fan_out(job, settings)
        mapping = next((m for m in inbound_entities(settings) if m.entity == job.entity), None)
        if mapping is None:
            return JobOutcome(
                "skipped", job, error=f"entity {job.entity!r} is not enabled for inbound sync"
            )
        ctx = self._context(integration, settings, mapping)
        budget = max(1, min(limits.max_records_per_sync, MAX_FETCH_LIMIT))
        return await _Job(self, job, integration, settings, ctx, budget).run()

    async def run_to_completion(self, job: SyncJob, *, max_jobs: int = 100_000) -> list[JobOutcome]:
        """Run a job and, in process, every follow-up and fan-out job it leads to (the
        same jobs the outbox also publishes; when the bus delivers them later they are
        ``stale`` no-ops). For the CLI, tests and benchmarks."""
        outcomes: list[JobOutcome] = []
        queue = [job]
        while queue and len(outcomes) < max_jobs:
            outcome = await self.run_job(queue.pop(0))
            outcomes.append(outcome)
            queue.extend(outcome.follow_ups)
        return outcomes

    async def apply_webhook_events(
        self,
        tenant_id: str,
        integration_id: str,
        events: list[WebhookEvent],
        *,
        delivery_id: str | None = None,
    ) -> WebhookOutcome:
        """Apply the records a webhook names (fetching those it names only by id), in one
        transaction with their execution. Replays and stale deliveries change nothing.
        ``delivery_id``: the stored delivery is marked processed in that transaction; if
        it already was, nothing is applied (``execution_id`` is "")."""
        scope = TenantScope(TenantId(tenant_id))
        async with self.store.transaction() as session:
            integration = await IntegrationRepository(session, scope).get(integration_id)
        settings = IntegrationRepository.settings_of(integration)
        mappings = {m.entity: m for m in inbound_entities(settings)}
        started = time.monotonic()
        adapter: IntegrationAdapter | None = None
        result = BatchResult()
        batches: dict[str, list[ExternalRecord]] = {}
        try:
            for event in events:
                if event.entity not in mappings:
                    result.counts["fetched"] += 1
                    result.counts["failed"] += 1
                    self._note(result, event.external_id, f"entity {event.entity!r} is not synced")
                    continue
                if event.action == "deleted":
                    record = ExternalRecord(
                        external_id=event.external_id, modified_at=event.modified_at, deleted=True
                    )
                elif event.data is not None:
                    record = ExternalRecord(
                        external_id=event.external_id, data=event.data,
                        modified_at=event.modified_at,
                    )  # fmt: skip
                else:
                    mapping = mappings[event.entity]
                    if not self._context(integration, settings, mapping).allowed:
                        record = ExternalRecord(external_id=event.external_id)  # rejected below
                    else:
                        if adapter is None:
                            adapter = await self._connect(integration)
                        fetched = await adapter.fetch_record(event.entity, event.external_id)
                        record = fetched or ExternalRecord(
                            external_id=event.external_id, deleted=True
                        )
                batches.setdefault(event.entity, []).append(record)
        except (RateLimitedError, TransientError) as exc:
            raise RetryableSyncError(exc.user_message, retry_after=exc.retry_after) from exc
        finally:
            if adapter is not None:
                await adapter.disconnect()

        now = self.clock()
        async with self.store.transaction() as session:
            deliveries = WebhookDeliveryRepository(session, scope)
            if delivery_id is not None and not await deliveries.mark_processed(delivery_id):
                return WebhookOutcome("")  # another delivery of it was applied
            executions = ExecutionRepository(session, scope)
            execution_id = await executions.start(
                integration_id=integration_id, entity=",".join(sorted(batches)) or None,
                trigger="webhook", sync_type="webhook", cursor_before=None, started_at=now,
            )  # fmt: skip
            for entity, records in batches.items():
                ctx = self._context(integration, settings, mappings[entity])
                await apply_batch(session, ctx, records, now=now, reject_older=True, result=result)
            await executions.add_progress(
                execution_id, result.counts, record_errors=result.record_errors
            )
            await executions.finish(
                execution_id,
                status="partial" if result.counts["failed"] else "succeeded",
                finished_at=now + timedelta(seconds=time.monotonic() - started),
            )
        return WebhookOutcome(execution_id, dict(result.counts), result.record_errors)

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _note(result: BatchResult, external_id: str, reason: str) -> None:
        if len(result.record_errors) < MAX_RECORD_ERRORS:
            result.record_errors.append({"externalId": external_id[:255], "reason": reason})

    def _plan(self, integration: IntegrationRow, mapping: EntityMapping) -> MappingPlan:
        key = (integration.id, integration.row_version, mapping.entity)
        plan = self._plans.get(key)
        if plan is None:
            plan = compile_mappings(mapping.field_mappings)
            self._plans[key] = plan
            while len(self._plans) > 256:
                self._plans.popitem(last=False)
        return plan

    def _context(
        self, integration: IntegrationRow, settings: IntegrationSettings, mapping: EntityMapping
    ) -> EntityContext:
        return EntityContext(
            tenant_id=integration.tenant_id,
            integration_id=integration.id,
            entity=mapping.entity,
            shard_type=mapping.shard_type,
            direction=mapping.direction,
            plan=self._plan(integration, mapping),
            conflict_mode=settings.conflict_resolution,
            allowed=mapping.shard_type in settings.allowed_shard_types,
            match_rules=tuple(
                rule for rule in settings.match_rules if rule.shard_type == mapping.shard_type
            ),
            delete_grace_seconds=settings.delete_grace_seconds,
            plan_key=fingerprint([m.model_dump(mode="json") for m in mapping.field_mappings]),
        )

    async def _connect(self, integration: IntegrationRow) -> IntegrationAdapter:
        credentials = await self.credentials.credentials(integration)
        try:
            adapter = self.adapter_factory(integration)
        except LookupError as exc:
            raise SyncConfigError(str(exc)) from exc
        refresher = self.credentials.token_refresher(integration)
        configure = getattr(adapter, "configure", None)
        if refresher is not None and configure is not None:
            configure(token_refresher=refresher)
        if configure is not None and getattr(adapter, "transport", False) is None:
            # One connection pool per worker: a client per job would build a TLS context
            # (tens of milliseconds) and a new connection every time.
            configure(transport=self._shared_transport())
        await adapter.connect(credentials)
        return adapter

    def _shared_transport(self) -> httpx.AsyncBaseTransport:
        if self._transport is None:
            self._transport = httpx.AsyncHTTPTransport(retries=0)
        return self._transport

    async def aclose(self) -> None:
        """Close the worker's connection pool."""
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def _fan_out(self, job: SyncJob, settings: IntegrationSettings) -> JobOutcome:
        """``entity=None``: one job per enabled inbound entity, published together."""
        children = [
            job.model_copy(update={"entity": m.entity, "run_id": None, "cursor": None})
            for m in inbound_entities(settings)
        ]
        stamp = self.clock()
        seed = f"{job.integration_id}:{job.sync_type}:{job.trigger}:{stamp.isoformat()}"
        envelopes = [
            (child.to_event(id=f"sync-fanout:{_digest(seed)}:{child.entity}").to_dict(), None)
            for child in children
        ]
        async with self.store.transaction() as session:
            await publish_envelopes(session, job.tenant_id, envelopes, stamp)
        return JobOutcome("fanned_out", job, follow_ups=children)

    def _cached_page(self, key: tuple[str, ...]) -> FetchResult | None:
        return self._pages.get(key)

    def _keep_page(self, key: tuple[str, ...], page: FetchResult) -> None:
        self._pages[key] = page
        self._pages.move_to_end(key)
        while len(self._pages) > self._page_cache_size:
            self._pages.popitem(last=False)

    def _drop_page(self, key: tuple[str, ...]) -> None:
        self._pages.pop(key, None)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _summary(checkpoint: EntityCheckpoint) -> dict[str, Any]:
    """The checkpoint as recorded on an execution (cursor before / after)."""
    dumped = checkpoint.dump()
    run = dumped.get("run")
    if run:
        run.pop("hwm_ids", None)
    dumped.pop("since_ids", None)
    return dumped


class _Job:
    """One bounded job over one (integration, entity)."""

    def __init__(
        self,
        engine: InboundSync,
        job: SyncJob,
        integration: IntegrationRow,
        settings: IntegrationSettings,
        ctx: EntityContext,
        budget: int,
    ) -> None:
        self.engine = engine
        self.job = job
        self.integration = integration
        self.settings = settings
        self.ctx = ctx
        self.budget = budget
        self.scope = TenantScope(TenantId(job.tenant_id))
        self.entity = ctx.entity
        self.execution_id = ""
        self.run_state: RunState | None = None
        self.seq = 0
        self.started = time.monotonic()
        self.started_at = engine.clock()
        self.execution_started_at = self.started_at
        self.counts: dict[str, int] = {}
        self.errors: list[dict[str, Any]] = []
        self.processed = 0

    def outcome(self, status: Any, **kw: Any) -> JobOutcome:
        return JobOutcome(
            status, self.job, execution_id=self.execution_id or None,
            run_id=self.run_state.id if self.run_state else None, counts=dict(self.counts), **kw,
        )  # fmt: skip

    async def run(self) -> JobOutcome:
        claimed = await self._claim()
        if claimed is not None:
            return claimed
        if not self.ctx.allowed:
            message = (
                f"shard type {self.ctx.shard_type} is not allowed for this integration "
                "(data access control): nothing was fetched"
            )
            await self._fail(message)
            return self.outcome("failed", error=message)
        adapter: IntegrationAdapter | None = None
        try:
            adapter = await self.engine._connect(self.integration)
            return await self._pages(adapter)
        except _Overtaken:
            await self._fail("superseded: another job continued this run")
            return self.outcome("stale", error="another job continued this run")
        except AuthError as exc:
            message = (
                f"the provider rejected the credentials ({exc.user_message}); "
                "reconnect the integration"
            )
            await self._fail(message)
            return self.outcome("failed", error=message)
        except (RateLimitedError, TransientError) as exc:
            await self._fail(f"{exc.user_message}; the job will be retried")
            raise RetryableSyncError(exc.user_message, retry_after=exc.retry_after) from exc
        except (AdapterError, SyncConfigError) as exc:
            message = getattr(exc, "user_message", None) or str(exc)
            await self._fail(message)
            return self.outcome("failed", error=message)
        except BaseException:
            await asyncio.shield(self._fail("the sync job stopped unexpectedly"))
            raise
        finally:
            if adapter is not None:
                try:
                    await adapter.disconnect()
                except Exception:
                    log.warning("adapter disconnect failed", integration=self.integration.id)

    async def _claim(self) -> JobOutcome | None:
        """Start or continue the entity's run; None when this job should go on."""
        engine, job = self.engine, self.job
        now = engine.clock()
        async with engine.store.transaction() as session:
            state = SyncStateRepository(session, self.scope)
            cursors = await state.lock(self.integration.id)
            checkpoint = EntityCheckpoint.load(cursors, self.entity)
            run = checkpoint.run
            if job.run_id is not None and (run is None or run.id != job.run_id):
                return self.outcome("stale", error="the run this job continues has ended")
            before = _summary(checkpoint)
            previous_owner = run.owner if run is not None else None
            if run is None:
                incremental = job.sync_type == "incremental"
                since = checkpoint.since
                if incremental and since is not None:
                    since = since - engine.look_back
                run = RunState(
                    id=new_id(),
                    type=job.sync_type,
                    started_at=now,
                    since=since if incremental else None,
                    delta_token=checkpoint.delta_token if incremental else None,
                )
                self.execution_id = run.id
            else:
                self.execution_id = new_id()
            run.owner = self.execution_id
            checkpoint.run = run
            checkpoint.seq += 1
            await state.write_checkpoint(
                self.integration.id, self.entity, checkpoint.dump(), cursors=cursors
            )
            executions = ExecutionRepository(session, self.scope)
            await executions.start(
                execution_id=self.execution_id,
                integration_id=self.integration.id,
                entity=self.entity,
                trigger=job.trigger,
                sync_type=run.type,
                cursor_before=before,
                parent_execution_id=None if self.execution_id == run.id else run.id,
                started_at=now,
            )
            self.execution_started_at = now
            if previous_owner and previous_owner != self.execution_id:
                await executions.finish(
                    previous_owner, status="failed", only_if_running=True, finished_at=now,
                    error=f"interrupted; the run was continued by execution {self.execution_id}",
                )  # fmt: skip
        self.run_state, self.seq = run, checkpoint.seq
        trusted = checkpoint.plan_key is not None and checkpoint.plan_key == self.ctx.plan_key
        self.ctx = dataclasses.replace(self.ctx, trust_modified_at=trusted)
        return None

    async def _pages(self, adapter: IntegrationAdapter) -> JobOutcome:
        engine = self.engine
        assert self.run_state is not None
        filters = self.settings.pull_filters.get(self.entity, [])
        while True:
            run = self.run_state
            remaining = self.budget - self.processed
            limit = (run.skip and run.page_limit) or min(MAX_FETCH_LIMIT, self.budget)
            key = (self.integration.id, self.entity, run.id, str(run.page_cursor), str(limit))
            page = engine._cached_page(key)
            if page is None:
                page = await adapter.fetch_records(
                    self.entity,
                    FetchOptions(
                        filters=filters,
                        since=run.since,
                        delta_token=run.delta_token,
                        cursor=run.page_cursor,
                        limit=limit,
                        include_deleted=run.type == "incremental",
                    ),
                )
            rest = page.records[run.skip :]
            take = rest[:remaining]
            more_pages = bool(page.has_more and page.next_cursor)
            if len(take) < len(rest):  # stop inside the page; the next job resumes here
                next_cursor, next_skip, complete = run.page_cursor, run.skip + len(take), False
                engine._keep_page(key, page)
            else:
                engine._drop_page(key)
                next_cursor = page.next_cursor if more_pages else None
                next_skip, complete = 0, not more_pages
            self.processed += len(take)
            last = complete or self.processed >= self.budget
            follow_up = await self._commit(
                run, page, take, next_cursor, next_skip, limit, complete=complete, last=last
            )
            if last:
                if complete:
                    return self.outcome("completed")
                assert follow_up is not None
                return self.outcome("continued", follow_ups=[follow_up])

    async def _commit(
        self,
        run: RunState,
        page: FetchResult,
        take: list[ExternalRecord],
        next_cursor: str | None,
        next_skip: int,
        limit: int,
        *,
        complete: bool,
        last: bool,
    ) -> SyncJob | None:
        """One page: records, counters, checkpoint (and follow-up or completion) in ONE
        transaction."""
        engine, ctx = self.engine, self.ctx
        now = engine.clock()
        follow_up: SyncJob | None = None
        async with engine.store.transaction() as session:
            state = SyncStateRepository(session, self.scope)
            cursors = await state.lock(self.integration.id)
            checkpoint = EntityCheckpoint.load(cursors, self.entity)
            if checkpoint.seq != self.seq or checkpoint.run is None or checkpoint.run.id != run.id:
                raise _Overtaken
            seen = run.id if run.type == "full" else None
            result = await apply_batch(session, ctx, take, now=now, seen_run_id=seen)
            hwm, hwm_ids = advance_hwm(run.hwm, run.hwm_ids, result.moments)
            run = run.model_copy(
                update={
                    "page_cursor": next_cursor,
                    "skip": next_skip,
                    "hwm": hwm,
                    "hwm_ids": hwm_ids,
                    "next_delta_token": page.delta_token or run.next_delta_token,
                    "pages": run.pages + 1,
                    "records": run.records + len(take),
                    "page_limit": limit if next_skip else None,
                    # the job's last page finishes its execution in this transaction:
                    # the next job has no interrupted owner to close
                    "owner": None if last else run.owner,
                }
            )
            checkpoint.seq += 1
            last_sync_at: datetime | None = None
            next_sync_at: Any = ...
            if complete:
                rels = RelationshipRepository(session, self.scope)
                if run.type == "full":
                    swept = await rels.sweep_unseen(
                        self.integration.id, self.entity, run.id,
                        run_started_at=run.started_at, now=now,
                    )  # fmt: skip
                    result.counts["deleted"] += swept
                    checkpoint.last_full_sync_at = now
                    checkpoint.plan_key = ctx.plan_key
                await reap(session, ctx, now=now)
                if hwm is not None and (checkpoint.since is None or hwm >= checkpoint.since):
                    checkpoint.since, checkpoint.since_ids = hwm, hwm_ids
                checkpoint.delta_token = run.next_delta_token or checkpoint.delta_token
                checkpoint.last_run_id = run.id
                checkpoint.run = None
                last_sync_at = now
                next_sync_at = self.settings.sync_frequency.next_after(now)
            else:
                checkpoint.run = run
                if last:
                    follow_up = self.job.model_copy(
                        update={"trigger": "followup", "run_id": run.id, "cursor": checkpoint.seq}
                    )
                    event = follow_up.to_event(id=f"sync-followup:{run.id}:{checkpoint.seq}")
                    envelopes = [(event.to_dict(), None)]
                    await publish_envelopes(session, self.job.tenant_id, envelopes, now)
            await state.write_checkpoint(
                self.integration.id, self.entity, checkpoint.dump(), cursors=cursors,
                last_sync_at=last_sync_at, next_sync_at=next_sync_at,
            )  # fmt: skip
            for name, value in result.counts.items():
                self.counts[name] = self.counts.get(name, 0) + value
            room = MAX_RECORD_ERRORS - len(self.errors)
            self.errors.extend(result.record_errors[: max(room, 0)])
            # Counters, cursor and (on the job's last page) the final status: one UPDATE.
            await ExecutionRepository(session, self.scope).add_progress(
                self.execution_id, result.counts, cursor_after=_summary(checkpoint),
                record_errors=self.errors if result.record_errors else None,
                **self._final(last),
            )  # fmt: skip
        self.run_state, self.seq = run, checkpoint.seq
        return follow_up

    def _final(self, last: bool) -> dict[str, Any]:
        """``add_progress`` arguments that finish the execution on the job's last page."""
        if not last:
            return {}
        return {
            "status": "partial" if self.counts.get("failed") else "succeeded",
            "started_at": self.execution_started_at,
            "finished_at": self.started_at + timedelta(seconds=time.monotonic() - self.started),
        }

    async def _fail(self, message: str) -> None:
        if not self.execution_id:
            return
        async with self.engine.store.transaction() as session:
            await ExecutionRepository(session, self.scope).finish(
                self.execution_id,
                status="failed",
                error=message,
                finished_at=self.started_at + timedelta(seconds=time.monotonic() - self.started),
                only_if_running=True,
            )


__all__ = [
    "AdapterFactory",
    "InboundSync",
    "WebhookOutcome",
    "default_adapter_factory",
    "inbound_entities",
]
