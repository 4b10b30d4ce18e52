"""``castiel-sync deadletters``: list, show, replay and purge dead letters, per tenant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="Messages past their delivery limit (sync-deadletter).", no_args_is_help=True
)

T = TypeVar("T")

TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", "-t", help="Only this tenant's (default: every tenant's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _scope(tenant: str | None) -> Any:
    from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope

    if tenant:
        return TenantScope(TenantId(tenant))
    return SystemScope("castiel-sync deadletters (operator)")


def _with_bus(action: Callable[[Any], Awaitable[T]]) -> T:
    from castiel_sync.bus import open_bus
    from castiel_sync.settings import get_settings
    from castiel_sync.store.base import create_engine

    async def go() -> T:
        settings = get_settings()
        engine = create_engine(settings.resolved_database_url)
        bus = open_bus(settings, engine)
        try:
            await bus.start()
            return await action(bus)
        finally:
            await bus.close()
            await engine.dispose()

    return asyncio.run(go())


def _doc(message: Any, *, full: bool = False) -> dict[str, Any]:
    body = message.body if isinstance(message.body, dict) else None
    doc = {
        "id": message.id,
        "tenantId": message.tenant_id,
        "queue": message.original_queue,
        "eventType": body.get("type") if body else None,
        "deliveryCount": message.delivery_count,
        "lastError": message.last_error,
        "enqueuedAt": message.enqueued_at.isoformat() if message.enqueued_at else None,
    }
    if full:
        doc["event"] = body
    return doc


@app.command("list")
def list_(tenant: TenantOption = None, limit: int = 100, as_json: JsonOption = False) -> None:
    """Dead letters, oldest first."""
    messages = _with_bus(lambda bus: bus.list_dead_letters(_scope(tenant), limit=limit))
    docs = [_doc(m) for m in messages]
    if as_json:
        typer.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        typer.echo("no dead letters")
    for d in docs:
        typer.echo(
            f"{d['id']}  {d['tenantId']}  {d['queue']}  {d['eventType']}  "
            f"deliveries={d['deliveryCount']}  {d['lastError'] or ''}"
        )


@app.command()
def show(dead_letter_id: str, tenant: TenantOption = None, as_json: JsonOption = True) -> None:
    """One dead letter with its event."""

    async def find(bus: Any) -> Any:
        every = await bus.list_dead_letters(_scope(tenant), limit=100_000)
        return next((m for m in every if m.id == dead_letter_id), None)

    message = _with_bus(find)
    if message is None:
        typer.echo(f"dead letter {dead_letter_id!r} was not found", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_doc(message, full=True), indent=2 if as_json else None))


@app.command()
def replay(
    dead_letter_ids: list[str], tenant: TenantOption = None, as_json: JsonOption = False
) -> None:
    """Send dead letters back to their queue with a fresh delivery count."""
    n = _with_bus(lambda bus: bus.replay(_scope(tenant), dead_letter_ids))
    typer.echo(json.dumps({"replayed": n}) if as_json else f"replayed {n}")
    if n < len(dead_letter_ids):
        raise typer.Exit(1)


@app.command()
def purge(
    dead_letter_ids: list[str], tenant: TenantOption = None, as_json: JsonOption = False
) -> None:
    """Delete dead letters for good."""
    n = _with_bus(lambda bus: bus.purge(_scope(tenant), dead_letter_ids))
    typer.echo(json.dumps({"purged": n}) if as_json else f"purged {n}")
    if n < len(dead_letter_ids):
        raise typer.Exit(1)
