"""``castiel-sync worker``: queue workers (and the outbox relay), any number of them."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            "-q",
            help="Queues to consume (repeat; default: sync-inbound-webhook, "
            "sync-inbound-scheduled and sync-outbound).",
        ),
    ] = None,
    handlers: Annotated[
        str | None,
        typer.Option(help="module:factory returning a HandlerRegistry (default: the engine's)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Messages at once.")] = 4,
    lease_seconds: Annotated[
        float, typer.Option(min=1, help="Lease per message (renewed while it runs).")
    ] = 60.0,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, how long in-flight work may finish.")
    ] = 30.0,
) -> None:
    """Consume the sync queues until SIGTERM (then drain)."""
    from castiel_sync.runtime import event_loop
    from castiel_sync.runtime.process import run, worker_plan
    from castiel_sync.settings import get_settings

    settings = get_settings()
    _configure_logging(settings)
    plan = worker_plan(
        queues,
        handlers=handlers,
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        drain_timeout=drain_timeout,
    )
    event_loop.run(
        run(settings, plan, on_ready=lambda: typer.echo("castiel-sync worker: ready")), settings
    )


def _configure_logging(settings: object) -> None:
    try:
        from castiel_sync.logging import configure_logging
    except ImportError:  # pragma: no cover
        return
    configure_logging(settings)  # type: ignore[arg-type]
