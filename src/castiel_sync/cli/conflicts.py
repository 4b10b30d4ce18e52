"""``castiel-sync conflicts``: field conflicts waiting for a decision (manual mode), per
tenant; ``resolve`` settles one (the value then syncs both ways)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer

from castiel_sync.cli._common import (
    EXIT_USAGE,
    JsonOption,
    TenantOption,
    check_tenant,
    fail,
    open_system,
    operator,
    out_console,
    print_json,
    print_table,
    run,
    status_text,
    usage,
    when,
)

app = typer.Typer(help="Field conflicts (manual mode): list and resolve.", no_args_is_help=True)

Choice = Literal["castiel", "external", "value"]


def conflict_doc(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "integrationId": row.integration_id,
        "shardId": row.shard_id,
        "field": row.field,
        "baseValue": row.base_value,
        "castielValue": row.castiel_value,
        "externalValue": row.external_value,
        "status": row.status,
        "resolution": row.resolution,
        "resolvedValue": row.resolved_value,
        "resolvedBy": row.resolved_by,
        "resolvedAt": row.resolved_at,
        "createdAt": row.created_at,
    }


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"


@app.command("list")
def list_(
    tenant: TenantOption,
    status: Annotated[str, typer.Option(help="open, resolved or all.")] = "open",
    integration: Annotated[
        str | None, typer.Option("--integration", "-i", help="Only this integration's.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, oldest first (1 to 1000).")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Conflicts, oldest first (open ones by default)."""
    check_tenant(tenant)
    if status not in {"open", "resolved", "all"}:
        usage("--status must be open, resolved or all")
    if not 1 <= limit <= 1000:
        usage("--limit must be between 1 and 1000")

    async def go() -> list[dict[str, Any]]:
        from castiel_sync.store.repositories import IntegrationRepository
        from castiel_sync.store.repositories.conflicts import ConflictRepository

        async with open_system() as system, system.store.transaction() as session:
            scope = system.scope(tenant)
            if integration is not None:
                await IntegrationRepository(session, scope).get(integration)
            rows = await ConflictRepository(session, scope).list(
                status=None if status == "all" else status,
                integration_id=integration,
                limit=limit,
            )
            return [conflict_doc(r) for r in rows]

    docs = run(go)
    if as_json:
        print_json(docs)
        return
    print_table(
        f"Conflicts of tenant {tenant} ({status})",
        ["id", "shard", "field", "base", "castiel", "external", "status", "opened"],
        [
            [
                d["id"],
                d["shardId"][:8],
                d["field"],
                _short(d["baseValue"]),
                _short(d["castielValue"]),
                _short(d["externalValue"]),
                status_text(d["status"]),
                when(d["createdAt"]),
            ]
            for d in docs
        ],
        empty=f"tenant {tenant} has no {'' if status == 'all' else status + ' '}conflicts",
    )


@app.command()
def resolve(
    tenant: TenantOption,
    conflict_id: Annotated[str, typer.Argument(help="The conflict's id.")],
    use: Annotated[
        str,
        typer.Option(
            "--use",
            help="castiel (keep Castiel's value and write it to the provider), external "
            "(take the provider's) or value (give one with --value).",
        ),
    ],
    value: Annotated[
        str | None,
        typer.Option(help="With --use value: the value as JSON (a bare word is a string)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Settle one conflict; the chosen value syncs both ways."""
    check_tenant(tenant)
    if use not in {"castiel", "external", "value"}:
        usage("--use must be castiel, external or value")
    if use == "value" and value is None:
        usage("--use value needs --value (JSON, e.g. --value '\"Paris\"' or --value 42)")
    if use != "value" and value is not None:
        usage("--value goes only with --use value")
    parsed: Any = None
    if value is not None:
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value

    async def go() -> dict[str, Any]:
        from castiel_sync.sync.conflict_service import ConflictService

        async with open_system() as system:
            service = ConflictService(system.store)
            args = (parsed,) if use == "value" else ()
            try:
                result = await service.resolve(
                    system.scope(tenant), conflict_id, use, *args, actor=operator()
                )
            except ValueError as exc:
                fail(str(exc), EXIT_USAGE)
            doc = conflict_doc(result.conflict)
            doc["shardVersion"] = result.shard_version
            doc["writeBackRequested"] = result.write_back is not None
            return doc

    doc = run(go)
    if as_json:
        print_json(doc)
        return
    out_console().print(
        f"[green]✓[/green] conflict {doc['id']} on {doc['field']} resolved ({doc['resolution']}): "
        f"{_short(doc['resolvedValue'])}; shard version {doc['shardVersion']}"
        + ("; write-back requested" if doc["writeBackRequested"] else "")
    )
