"""``castiel-sync executions``: recent sync runs with their counts, per tenant."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from castiel_sync.cli._common import (
    JsonOption,
    TenantOption,
    check_tenant,
    open_system,
    print_json,
    print_table,
    run,
    status_text,
    usage,
    when,
)
from castiel_sync.cli.integrations import execution_doc

app = typer.Typer(
    help="Sync executions (one per sync job) with their counts.", no_args_is_help=True
)


@app.command("list")
def list_(
    tenant: TenantOption,
    integration: Annotated[
        str | None, typer.Option("--integration", "-i", help="Only this integration's.")
    ] = None,
    entity: Annotated[str | None, typer.Option(help="Only this entity's.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (1 to 1000).")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Recent executions, newest first."""
    check_tenant(tenant)
    if not 1 <= limit <= 1000:
        usage("--limit must be between 1 and 1000")

    async def go() -> list[dict[str, Any]]:
        from castiel_sync.store.repositories import IntegrationRepository
        from castiel_sync.store.repositories.executions import ExecutionRepository

        async with open_system() as system, system.store.transaction() as session:
            scope = system.scope(tenant)
            if integration is not None:  # another tenant's integration: not found (3)
                await IntegrationRepository(session, scope).get(integration)
            rows = await ExecutionRepository(session, scope).list(
                integration_id=integration, entity=entity, limit=limit
            )
            return [execution_doc(r) for r in rows]

    docs = run(go)
    if as_json:
        print_json(docs)
        return
    print_table(
        f"Executions of tenant {tenant}",
        [
            "started",
            "integration",
            "entity",
            "trigger",
            "type",
            "status",
            "fetched",
            "created",
            "updated",
            "unchanged",
            "deleted",
            "failed",
            "ms",
        ],
        [
            [
                when(d["startedAt"]),
                d["integrationId"][:8],
                d["entity"],
                d["trigger"],
                d["syncType"],
                status_text(d["status"]),
                d["fetched"],
                d["created"],
                d["updated"],
                d["unchanged"],
                d["deleted"],
                d["failed"],
                d["durationMs"],
            ]
            for d in docs
        ],
        empty=f"tenant {tenant} has no executions yet",
    )
