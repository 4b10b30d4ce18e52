"""``castiel-sync serve``: everything in one process on the embedded default."""

from __future__ import annotations

from typing import Annotated

import typer

from castiel_sync.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.port).")] = None,
    api_only: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run everything in one process: API, workers, scheduler, token refresher."""
    import uvicorn

    from castiel_sync.api.app import create_app

    settings = get_settings()
    if host is not None or port is not None:
        settings = settings.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"castiel-sync: API docs at {base}/docs")
    typer.echo(
        "  get a token: castiel-sync token --tenant <tenant-id> --role tenant_admin"
        "  (then send 'Authorization: Bearer <token>')"
    )
    log_config: dict[str, object] | None = None
    try:
        from castiel_sync.logging import configure_logging
    except ImportError:  # pragma: no cover - until the logging module is installed
        log_config = uvicorn.config.LOGGING_CONFIG
    else:
        # uvicorn's own handlers would bypass the redaction (its access log holds the OAuth
        # callback's ?code=): log_config=None keeps it on ours.
        configure_logging(settings)
    if log_config is not None:  # pragma: no cover - without the redacting setup
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)
        return
    # The runtime (castiel_sync.runtime.process): API, outbox relay, scheduler, token
    # refresher and workers as asyncio tasks; SIGTERM drains.
    from castiel_sync.runtime import event_loop
    from castiel_sync.runtime.process import Plan, run, serve_plan

    plan = serve_plan() if not api_only else Plan(api=True)
    event_loop.run(run(settings, plan), settings)


def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.port).")] = None,
) -> None:
    """Run only the HTTP API (webhooks in, management, dead letters, health, metrics)."""
    serve(host=host, port=port, api_only=True)
