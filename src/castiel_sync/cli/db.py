"""``castiel-sync db``: apply and inspect the database migrations."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)

UrlOption = Annotated[
    str | None,
    typer.Option(help="Database URL (default: CASTIEL_DATABASE_URL or the SQLite file)."),
]


def _url(url: str | None) -> str:
    if url:
        return url
    from castiel_sync.settings import Settings

    return Settings().resolved_database_url


@app.command()
def upgrade(
    url: UrlOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Bring the database up to date (safe to run again, and from several processes)."""
    from castiel_sync.store import migrate

    target = _url(url)
    asyncio.run(migrate.upgrade(target, revision))
    typer.echo(f"database at revision {asyncio.run(migrate.current(target))}")


@app.command()
def current(url: UrlOption = None) -> None:
    """Print the database's revision and the newest one this version ships."""
    from castiel_sync.store import migrate

    revision = asyncio.run(migrate.current(_url(url)))
    head = migrate.head_revision()
    state = "up to date" if revision == head else f"behind (head is {head})"
    typer.echo(f"{revision or 'empty (no revision)'}: {state}")
