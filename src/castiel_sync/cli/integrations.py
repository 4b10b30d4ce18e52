"""``castiel-sync integrations``: a tenant's integrations (list, show, sync now, pause,
resume). See :mod:`castiel_sync.cli._common` for how the CLI reaches the system and for
the exit codes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from castiel_sync.cli._common import (
    EXIT_FAILURE,
    JsonOption,
    System,
    TenantOption,
    check_tenant,
    fail,
    open_system,
    operator,
    out_console,
    print_fields,
    print_json,
    print_table,
    run,
    status_text,
    usage,
    when,
)

app = typer.Typer(
    help="A tenant's integrations: list, show, sync now, pause, resume.", no_args_is_help=True
)

IntegrationArg = Annotated[str, typer.Argument(help="The integration's id.")]
COUNTERS = ("fetched", "created", "updated", "unchanged", "deleted", "failed", "conflicts")


def integration_doc(row: Any) -> dict[str, Any]:
    from castiel_sync.store.repositories import IntegrationRepository

    settings = IntegrationRepository.settings_of(row)
    return {
        "id": row.id,
        "tenantId": row.tenant_id,
        "providerId": row.provider_id,
        "instanceId": row.instance_id,
        "name": row.name,
        "status": row.status,
        "statusReason": row.status_reason,
        "syncEnabled": row.sync_enabled,
        "syncDirection": row.sync_direction,
        "syncFrequency": settings.sync_frequency.model_dump(mode="json", exclude_none=True),
        "conflictResolution": row.conflict_resolution,
        "entities": [
            {
                "entity": m.entity,
                "shardType": m.shard_type,
                "direction": m.direction,
                "enabled": m.enabled,
            }
            for m in settings.entity_mappings
        ],
        "credentialSecretName": row.credential_secret_name,
        "lastSyncAt": row.last_sync_at,
        "nextSyncAt": row.next_sync_at,
        "createdAt": row.created_at,
        "updatedAt": row.updated_at,
    }


def execution_doc(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "integrationId": row.integration_id,
        "entity": row.entity,
        "trigger": row.trigger,
        "syncType": row.sync_type,
        "status": row.status,
        **{name: getattr(row, name) for name in COUNTERS},
        "startedAt": row.started_at,
        "finishedAt": row.finished_at,
        "durationMs": row.duration_ms,
        "error": row.error,
        "parentExecutionId": row.parent_execution_id,
    }


# -- list / show ----------------------------------------------------------------------------


@app.command("list")
def list_(
    tenant: TenantOption,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status (pending, active, paused, error, disabled)."),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Only this provider id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The tenant's integrations, oldest first."""
    from castiel_sync.store.repositories.integrations import INTEGRATION_STATUSES

    check_tenant(tenant)
    if status is not None and status not in INTEGRATION_STATUSES:
        usage(f"--status must be one of {', '.join(sorted(INTEGRATION_STATUSES))}")

    async def go() -> list[dict[str, Any]]:
        from castiel_sync.store.repositories import IntegrationRepository

        async with open_system() as system, system.store.transaction() as session:
            rows = await IntegrationRepository(session, system.scope(tenant)).list(
                provider_id=provider, status=status
            )
            return [integration_doc(r) for r in rows]

    docs = run(go)
    if as_json:
        print_json(docs)
        return
    print_table(
        f"Integrations of tenant {tenant}",
        ["id", "provider", "name", "status", "direction", "last sync", "next sync"],
        [
            [
                d["id"],
                d["providerId"],
                d["name"],
                status_text(d["status"]),
                d["syncDirection"],
                when(d["lastSyncAt"]),
                when(d["nextSyncAt"]),
            ]
            for d in docs
        ],
        empty=f"tenant {tenant} has no integrations",
    )


@app.command()
def show(tenant: TenantOption, integration_id: IntegrationArg, as_json: JsonOption = False) -> None:
    """One integration: settings, connections and its latest executions."""
    check_tenant(tenant)

    async def go() -> dict[str, Any]:
        from castiel_sync.store.repositories import ConnectionRepository, IntegrationRepository
        from castiel_sync.store.repositories.executions import ExecutionRepository

        async with open_system() as system, system.store.transaction() as session:
            scope = system.scope(tenant)
            row = await IntegrationRepository(session, scope).get(integration_id)
            connections = await ConnectionRepository(session, scope).list(integration_id)
            executions = await ExecutionRepository(session, scope).list(
                integration_id=integration_id, limit=5
            )
            doc = integration_doc(row)
            doc["connections"] = [
                {
                    "scope": c.scope,
                    "userId": c.user_id or None,
                    "status": c.status,
                    "credentialSecretName": c.credential_secret_name,
                    "tokenExpiresAt": c.token_expires_at,
                    "lastRefreshedAt": c.last_refreshed_at,
                }
                for c in connections
            ]
            doc["recentExecutions"] = [execution_doc(e) for e in executions]
            return doc

    doc = run(go)
    if as_json:
        print_json(doc)
        return
    entities = ", ".join(
        f"{e['entity']}→{e['shardType']} ({e['direction']})"
        for e in doc["entities"]
        if e["enabled"]
    )
    print_fields(
        f"{doc['name']} ({doc['providerId']}, {doc['id']})",
        [
            (
                "status",
                status_text(doc["status"])
                + (f" — {doc['statusReason']}" if doc["statusReason"] else ""),
            ),
            (
                "sync",
                f"{'enabled' if doc['syncEnabled'] else 'disabled'}, {doc['syncDirection']}, "
                f"{doc['syncFrequency'].get('kind')}",
            ),
            ("conflicts", doc["conflictResolution"]),
            ("entities", entities or "-"),
            ("credential", doc["credentialSecretName"]),
            ("last sync", when(doc["lastSyncAt"])),
            ("next sync", when(doc["nextSyncAt"])),
            ("connections", len(doc["connections"])),
        ],
    )
    executions = doc["recentExecutions"]
    if executions:
        print_table(
            "Recent executions",
            ["started", "entity", "type", "status", "fetched", "created", "updated", "failed"],
            [
                [
                    when(e["startedAt"]),
                    e["entity"],
                    e["syncType"],
                    status_text(e["status"]),
                    e["fetched"],
                    e["created"],
                    e["updated"],
                    e["failed"],
                ]
                for e in executions
            ],
            empty="",
        )


# -- pause / resume ---------------------------------------------------------------------------


def _set_status(tenant: str, integration_id: str, *, pause: bool) -> dict[str, Any]:
    check_tenant(tenant)

    async def go() -> dict[str, Any]:
        from castiel_sync.store.base import utcnow
        from castiel_sync.store.repositories import (
            AuditRepository,
            ConnectionRepository,
            IntegrationRepository,
        )

        async with open_system() as system, system.store.transaction() as session:
            scope = system.scope(tenant)
            repo = IntegrationRepository(session, scope)
            row = await repo.get(integration_id)
            before = {"status": row.status, "syncEnabled": row.sync_enabled}
            if pause:
                updated = await repo.update(
                    integration_id,
                    status="paused",
                    status_reason="paused by an operator",
                    next_sync_at=None,
                )
            else:
                connections = await ConnectionRepository(session, scope).list(integration_id)
                if row.credential_secret_name is None and not any(
                    c.status == "active" for c in connections
                ):
                    fail(
                        "the integration has no credential: connect it first "
                        f"(POST /integrations/{integration_id}/oauth/authorize)"
                    )
                settings = repo.settings_of(row)
                updated = await repo.update(
                    integration_id,
                    status="active",
                    status_reason=None,
                    sync_enabled=True,
                    next_sync_at=settings.sync_frequency.next_after(utcnow()),
                )
            await AuditRepository(session, scope).record(
                actor_user_id=operator(),
                actor_role="operator",
                action="integration.pause" if pause else "integration.activate",
                object_type="integration",
                object_id=integration_id,
                before=before,
                after={"status": updated.status, "syncEnabled": updated.sync_enabled},
            )
            return integration_doc(updated)

    return run(go)


@app.command()
def pause(
    tenant: TenantOption, integration_id: IntegrationArg, as_json: JsonOption = False
) -> None:
    """Stop syncing (settings and data are kept)."""
    doc = _set_status(tenant, integration_id, pause=True)
    if as_json:
        print_json(doc)
    else:
        out_console().print(f"{doc['name']} ({doc['id']}): {status_text(doc['status'])}")


@app.command()
def resume(
    tenant: TenantOption, integration_id: IntegrationArg, as_json: JsonOption = False
) -> None:
    """Sync again (the integration must be connected)."""
    doc = _set_status(tenant, integration_id, pause=False)
    if as_json:
        print_json(doc)
    else:
        out_console().print(
            f"{doc['name']} ({doc['id']}): {status_text(doc['status'])}, "
            f"next sync {when(doc['nextSyncAt'])}"
        )


# -- sync now -----------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What one "sync now" did, summed over its jobs."""

    integration_id: str
    sync_type: str
    jobs: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def doc(self) -> dict[str, Any]:
        return {
            "integrationId": self.integration_id,
            "syncType": self.sync_type,
            "status": "succeeded" if self.ok else "failed",
            "jobs": self.jobs,
            **self.counts,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[dict[str, int]], None]


async def sync_now(
    system: System,
    tenant: str,
    integration_id: str,
    *,
    entity: str | None = None,
    full: bool = False,
    on_progress: Progress | None = None,
    poll_seconds: float = 0.2,
    max_retries: int = 5,
) -> SyncReport:
    """Run a sync of one integration to completion in this process (every job and
    follow-up job), reporting the run's execution counts to ``on_progress`` as pages
    commit. The demo uses this too."""
    from castiel_sync.store.base import utcnow
    from castiel_sync.store.repositories import IntegrationRepository
    from castiel_sync.store.repositories.executions import ExecutionRepository
    from castiel_sync.sync import (
        InboundSync,
        RetryableSyncError,
        SyncError,
        SyncJob,
        VaultCredentialProvider,
        inbound_entities,
    )

    row_settings = IntegrationRepository.settings_of

    scope = system.scope(tenant)
    async with system.store.transaction() as session:
        row = await IntegrationRepository(session, scope).get(integration_id)
    if row.status in {"paused", "disabled"}:
        fail(f"integration {integration_id} is {row.status}: resume it first")
    sync_type = "full" if full else "incremental"
    report = SyncReport(integration_id, sync_type)
    started_at = utcnow()
    started = time.monotonic()
    engine = InboundSync(
        system.store, VaultCredentialProvider(system.vault), settings=system.settings
    )
    # One job per entity, run here: a fan-out job would also publish the entity jobs for
    # the workers; follow-ups published by these jobs reach workers as no-ops.
    entities = [entity] if entity else [m.entity for m in inbound_entities(row_settings(row))]
    jobs = [
        SyncJob(
            tenant_id=tenant,
            integration_id=integration_id,
            entity=name,
            sync_type=sync_type,
            trigger="manual",
        )
        for name in entities
    ]

    async def counts() -> dict[str, int]:
        async with system.store.transaction() as session:
            rows = await ExecutionRepository(session, scope).list(
                integration_id=integration_id, limit=10_000
            )
        mine = [r for r in rows if r.started_at >= started_at and r.trigger != "webhook"]
        return {name: sum(getattr(r, name) for r in mine) for name in COUNTERS}

    async def watch() -> None:
        while True:
            await asyncio.sleep(poll_seconds)
            if on_progress is not None:
                on_progress(await counts())

    watcher = asyncio.create_task(watch())
    try:
        queue = list(jobs)
        retries = 0
        while queue:
            job = queue.pop(0)
            try:
                outcome = await engine.run_job(job)
            except RetryableSyncError as exc:
                # Rate limited or transient past the adapter's own retries: the job resumes
                # from its last committed page, as a redelivered message would.
                retries += 1
                if retries > max_retries:
                    report.errors.append(f"{job.entity}: {exc}")
                    break
                await asyncio.sleep(min(exc.retry_after or 1.0, 30.0))
                queue.insert(0, job)
                continue
            except SyncError as exc:
                report.errors.append(f"{job.entity}: {exc}")
                break
            report.jobs += outcome.status not in {"fanned_out"}
            if outcome.status == "failed":
                report.errors.append(f"{outcome.job.entity or 'sync'}: {outcome.error or 'failed'}")
            elif outcome.status == "skipped" and entity is not None:
                report.errors.append(outcome.error or "skipped")
            queue.extend(outcome.follow_ups)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await engine.aclose()
    report.counts = await counts()
    report.seconds = time.monotonic() - started
    if on_progress is not None:
        on_progress(report.counts)
    return report


@app.command()
def sync(
    tenant: TenantOption,
    integration_id: IntegrationArg,
    entity: Annotated[
        str | None, typer.Option(help="Only this entity (default: every inbound entity).")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="A full sync (also detects deletions).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync now, in this process, with a progress bar; exit 1 if a job failed."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    check_tenant(tenant)
    console = out_console()
    show_progress = console.is_terminal and not as_json

    async def go() -> SyncReport:
        async with open_system() as system:
            if not show_progress:
                return await sync_now(system, tenant, integration_id, entity=entity, full=full)
            with Progress(
                SpinnerColumn(),
                TextColumn("[bold]syncing[/bold]"),
                BarColumn(),
                TextColumn("{task.fields[summary]}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("sync", total=None, summary="")

                def update(c: dict[str, int]) -> None:
                    progress.update(task, completed=c["fetched"], summary=_summary(c))

                report = await sync_now(
                    system, tenant, integration_id, entity=entity, full=full, on_progress=update
                )
                progress.update(task, total=max(1, report.counts["fetched"]))
                return report

    report = run(go)
    if as_json:
        print_json(report.doc())
    else:
        mark = "[green]✓[/green]" if report.ok else "[red]✗[/red]"
        console.print(
            f"{mark} {report.sync_type} sync of {integration_id}: {_summary(report.counts)} "
            f"in {report.seconds:.1f}s ({report.jobs} job{'s' if report.jobs != 1 else ''})"
        )
        for error in report.errors:
            console.print(f"  [red]{error}[/red]")
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[name]} {name}" for name in COUNTERS if counts.get(name)) or (
        "0 fetched"
    )
