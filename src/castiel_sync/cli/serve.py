"""``castiel-sync serve``: everything in one process on the embedded default."""

from __future__ import annotations

from typing import Annotated

import typer

from castiel_sync.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.port).")] = None,
) -> None:
    """Run the API (and, as they land, the workers and scheduler) in one process."""
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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=log_config,
    )
