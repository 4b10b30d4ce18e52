"""Alembic environment: the async engine and every module's tables.

``castiel_sync.store.migrate.upgrade`` passes an open connection in
``config.attributes["connection"]`` (holding the PostgreSQL advisory lock); the
``alembic`` command line opens its own from ``sqlalchemy.url`` or the settings.
"""

from __future__ import annotations

import asyncio
import logging.config
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from castiel_sync.store.base import UTCDateTime, create_engine
from castiel_sync.store.schema import metadata

config = context.config
target_metadata = metadata()

if config.config_file_name is not None and not config.attributes.get("connection"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from castiel_sync.settings import Settings

    return Settings().resolved_database_url


def render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | Literal[False]:
    """Render the project's portable types as plain SQLAlchemy, so a revision never
    imports castiel_sync code that may change after it was written."""
    if kind != "type":
        return False
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    variants = getattr(obj, "_variant_mapping", {})
    if isinstance(obj, JSON) and isinstance(variants.get("postgresql"), JSONB):
        autogen.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=render_item,
        **kwargs,
    )


def run_with(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_with)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    url = _url()
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        run_with(given)
    else:
        asyncio.run(run_async())
