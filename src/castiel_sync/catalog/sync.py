"""Writing the catalog into the ``integration_providers`` table.

Runs on every start (and from several processes at once in the scaled deployment), so it
is idempotent: a second run finds nothing to change and writes nothing, which leaves
``updated_at`` alone. Rows whose status or audience a super admin overrode
(``status_overridden`` / ``audience_overridden``) keep that value; everything else
follows the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from castiel_sync.catalog import Catalog, load_catalog
from castiel_sync.catalog.schema import ProviderSpec
from castiel_sync.store.tables import IntegrationProviderRow


@dataclass
class SyncReport:
    """What one ``sync_catalog`` run did, by provider id."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Rows whose overridden status/audience differ from the catalog and were kept.
    overrides_kept: list[str] = field(default_factory=list)
    # Rows in the table that the catalog no longer has. Never deleted: integrations
    # reference them; a super admin retires one by disabling it.
    not_in_catalog: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


def _columns(spec: ProviderSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "category": spec.category,
        "auth_type": spec.auth_type,
        "definition": spec.model_dump(mode="json"),
    }


async def _insert_missing(session: AsyncSession, specs: list[ProviderSpec]) -> list[str]:
    """Insert rows for ``specs``; a row another process inserted meanwhile is left alone
    (ON CONFLICT DO NOTHING), so concurrent starts do not fail on the primary key."""
    dialect = session.bind.dialect.name if session.bind is not None else ""
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"sync_catalog supports SQLite and PostgreSQL, not {dialect!r}")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    created: list[str] = []
    for spec in specs:
        values = {"id": spec.id, "status": spec.status, "audience": spec.audience, **_columns(spec)}
        statement = (
            insert(IntegrationProviderRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(IntegrationProviderRow.id)
        )
        if (await session.execute(statement)).scalar_one_or_none() is not None:
            created.append(spec.id)
    return created


async def sync_catalog(session: AsyncSession, catalog: Catalog | None = None) -> SyncReport:
    """Upsert every catalog entry (default: the packaged catalog) into
    ``integration_providers``.

    The caller owns the transaction: this function flushes, the caller commits
    (``async with session.begin(): await sync_catalog(session)``).
    """
    if catalog is None:
        catalog = load_catalog()

    report = SyncReport()
    rows = {
        row.id: row for row in (await session.execute(select(IntegrationProviderRow))).scalars()
    }
    report.not_in_catalog = sorted(set(rows) - set(catalog.ids()))

    report.created = await _insert_missing(session, [s for s in catalog if s.id not in rows])
    for spec in catalog:
        row = rows.get(spec.id)
        if row is None:
            continue
        wanted = _columns(spec)
        if not row.status_overridden:
            wanted["status"] = spec.status
        elif row.status != spec.status:
            report.overrides_kept.append(spec.id)
        if not row.audience_overridden:
            wanted["audience"] = spec.audience
        elif row.audience != spec.audience and spec.id not in report.overrides_kept:
            report.overrides_kept.append(spec.id)

        # Assign only what differs: an untouched row issues no UPDATE, so updated_at
        # (onupdate) does not churn on every start.
        changed = False
        for column, value in wanted.items():
            if getattr(row, column) != value:
                setattr(row, column, value)
                changed = True
        (report.updated if changed else report.unchanged).append(spec.id)

    await session.flush()
    return report
