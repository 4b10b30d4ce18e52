"""``castiel-sync demo``: see the whole system work in a minute, with no accounts and no
services (:mod:`castiel_sync.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from castiel_sync.cli._common import EXIT_FAILURE, usage


def demo(
    provider: Annotated[
        str, typer.Option(help="The bundled emulator to run (salesforce, hubspot, dynamics365).")
    ] = "salesforce",
    data_dir: Annotated[
        Path,
        typer.Option(help="A fresh data directory (a previous demo's is replaced)."),
    ] = Path("data/demo"),
    port: Annotated[
        int, typer.Option(help="The service's port (a free one if it is taken).")
    ] = 8000,
    records: Annotated[int, typer.Option(min=20, max=5000, help="How many records to seed.")] = 300,
    non_interactive: Annotated[
        bool,
        typer.Option(
            "--non-interactive",
            help="Run start to finish and exit: 0 only if every step succeeded.",
        ),
    ] = False,
) -> None:
    """Start the service and a provider emulator, connect, sync both ways, and show it."""
    from rich.console import Console

    from castiel_sync.demo import DemoOptions, run_demo
    from castiel_sync.demo.emulators import PROFILES

    if provider not in PROFILES:
        usage(f"--provider {provider!r}: the demo has {', '.join(sorted(PROFILES))}")
    options = DemoOptions(
        provider=provider,
        data_dir=data_dir,
        port=port,
        records=records,
        non_interactive=non_interactive,
    )
    from castiel_sync.demo.runner import prepare_data_dir
    from castiel_sync.runtime import event_loop
    from castiel_sync.settings import get_settings

    try:
        prepare_data_dir(data_dir)
    except ValueError as exc:
        usage(str(exc))
    report = event_loop.run(run_demo(options, Console(highlight=False)), get_settings())
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)
