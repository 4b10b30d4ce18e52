"""Apply the Alembic migrations from code (``castiel-sync db upgrade``; ``serve`` on start).

On PostgreSQL the upgrade runs in one transaction under a transaction-level advisory
lock, so processes that start together apply it once: the others wait, then find the
database at head. SQLite serialises writers itself.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from castiel_sync.store.base import create_engine

MIGRATIONS = Path(__file__).parent / "migrations"
#: pg_advisory_xact_lock key for migrations ("castiel" in ASCII, as a 64-bit int).
ADVISORY_LOCK_KEY = int.from_bytes(b"castiel", "big")


def alembic_config() -> Config:
    """The Alembic config for the packaged migrations (no ini file needed)."""
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``. Idempotent."""
    _ensure_sqlite_dir(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
            await conn.run_sync(_upgrade, revision)
            await conn.commit()
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def current(url: str) -> str | None:
    """The database's revision (None for an empty database)."""
    _ensure_sqlite_dir(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


__all__ = ["ADVISORY_LOCK_KEY", "alembic_config", "current", "head_revision", "upgrade"]
