"""``castiel-sync``: each command group lives in its own module and is added here."""

from __future__ import annotations

import typer

from castiel_sync.cli.config import app as config_app
from castiel_sync.cli.conflicts import app as conflicts_app
from castiel_sync.cli.db import app as db_app
from castiel_sync.cli.deadletters import app as deadletters_app
from castiel_sync.cli.demo import demo
from castiel_sync.cli.executions import app as executions_app
from castiel_sync.cli.integrations import app as integrations_app
from castiel_sync.cli.scheduler import scheduler
from castiel_sync.cli.serve import api, serve
from castiel_sync.cli.token import token
from castiel_sync.cli.vault import app as vault_app
from castiel_sync.cli.worker import worker

app = typer.Typer(
    name="castiel-sync",
    help="Bidirectional sync between Castiel and tenants' business systems.",
    no_args_is_help=True,
)
app.add_typer(vault_app, name="vault")
app.add_typer(db_app, name="db")
app.command()(serve)
app.command()(api)
app.command()(worker)
app.command()(scheduler)
app.add_typer(deadletters_app, name="deadletters")
app.command()(token)
app.add_typer(integrations_app, name="integrations")
app.add_typer(executions_app, name="executions")
app.add_typer(conflicts_app, name="conflicts")
app.add_typer(config_app, name="config")
app.command()(demo)


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as pkg_version

    typer.echo(pkg_version("castiel-sync"))
