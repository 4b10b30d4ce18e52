"""The store port: SQLAlchemy 2 (async) over SQLite (embedded default) or PostgreSQL.

``Store(engine).transaction()`` opens a transaction; repositories live in
:mod:`castiel_sync.store.repositories`, errors in :mod:`castiel_sync.store.errors`,
migrations in :mod:`castiel_sync.store.migrate`.
"""

from castiel_sync.store.uow import Store

__all__ = ["Store"]
