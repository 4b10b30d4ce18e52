"""``castiel-sync scheduler``: the timers (due syncs every minute, token refresh hourly)."""

from __future__ import annotations

import typer


def scheduler() -> None:
    """Run the sync scheduler, the token refresher and the outbox relay until SIGTERM."""
    from castiel_sync.cli.worker import _configure_logging
    from castiel_sync.runtime import event_loop
    from castiel_sync.runtime.process import run, scheduler_plan
    from castiel_sync.settings import get_settings

    settings = get_settings()
    _configure_logging(settings)
    event_loop.run(
        run(
            settings, scheduler_plan(), on_ready=lambda: typer.echo("castiel-sync scheduler: ready")
        ),
        settings,
    )
