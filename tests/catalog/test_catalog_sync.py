"""sync_catalog on SQLite and PostgreSQL: idempotent, and super admins' overrides survive."""

from __future__ import annotations

import copy

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import Catalog, load_catalog, parse_catalog
from castiel_sync.catalog.sync import sync_catalog
from castiel_sync.store.base import session_factory
from castiel_sync.store.tables import IntegrationProviderRow


async def _rows(engine: AsyncEngine) -> dict[str, IntegrationProviderRow]:
    async with session_factory(engine)() as session:
        result = await session.execute(select(IntegrationProviderRow))
        return {row.id: row for row in result.scalars()}


async def _sync(engine: AsyncEngine, catalog: Catalog | None = None):  # type: ignore[no-untyped-def]
    async with session_factory(engine)() as session, session.begin():
        return await sync_catalog(session, catalog)


def _catalog_with(provider_id: str, **changes: object) -> Catalog:
    """The packaged catalog with one entry's top-level fields changed."""
    entries = [copy.deepcopy(spec.model_dump(mode="json")) for spec in load_catalog()]
    for entry in entries:
        if entry["id"] == provider_id:
            entry.update(changes)
    return parse_catalog(yaml.safe_dump({"providers": entries}))


async def test_first_sync_creates_every_provider(engine: AsyncEngine) -> None:
    report = await _sync(engine)
    catalog = load_catalog()
    assert sorted(report.created) == sorted(catalog.ids())
    rows = await _rows(engine)
    assert set(rows) == set(catalog.ids())
    salesforce = rows["salesforce"]
    assert (salesforce.status, salesforce.audience, salesforce.auth_type) == (
        "active",
        "tenant",
        "oauth2",
    )
    assert salesforce.definition == catalog.get("salesforce").model_dump(mode="json")
    assert rows["google_news"].audience == "system"
    assert not salesforce.status_overridden and not salesforce.audience_overridden


async def test_second_sync_changes_nothing(engine: AsyncEngine) -> None:
    await _sync(engine)
    before = {
        row.id: (row.updated_at, row.definition, row.status)
        for row in (await _rows(engine)).values()
    }

    report = await _sync(engine)

    assert not report.changed
    assert sorted(report.unchanged) == sorted(load_catalog().ids())
    after = {
        row.id: (row.updated_at, row.definition, row.status)
        for row in (await _rows(engine)).values()
    }
    assert after == before  # updated_at included: no write happened


async def test_a_changed_entry_is_updated(engine: AsyncEngine) -> None:
    await _sync(engine)
    renamed = _catalog_with("hubspot", name="HubSpot CRM", status="beta")

    report = await _sync(engine, renamed)

    assert report.updated == ["hubspot"]
    row = (await _rows(engine))["hubspot"]
    assert (row.name, row.status) == ("HubSpot CRM", "beta")
    assert row.definition["name"] == "HubSpot CRM"


async def test_a_status_edit_without_override_is_reset_to_the_catalog(engine: AsyncEngine) -> None:
    await _sync(engine)
    async with session_factory(engine)() as session, session.begin():
        row = await session.get(IntegrationProviderRow, "zoom")
        assert row is not None
        row.status = "disabled"

    report = await _sync(engine)

    assert report.updated == ["zoom"]
    assert (await _rows(engine))["zoom"].status == "beta"


async def test_super_admin_overrides_survive_sync(engine: AsyncEngine) -> None:
    await _sync(engine)
    async with session_factory(engine)() as session, session.begin():
        salesforce = await session.get(IntegrationProviderRow, "salesforce")
        jira = await session.get(IntegrationProviderRow, "jira")
        assert salesforce is not None and jira is not None
        salesforce.status, salesforce.status_overridden = "disabled", True
        jira.audience, jira.audience_overridden = "system", True

    # Even when the catalog entry itself changes, the overridden fields stay.
    changed = _catalog_with("salesforce", name="Salesforce Sales Cloud")
    report = await _sync(engine, changed)

    rows = await _rows(engine)
    assert rows["salesforce"].status == "disabled"
    assert rows["salesforce"].name == "Salesforce Sales Cloud"  # the rest still follows the catalog
    assert rows["jira"].audience == "system"
    assert rows["jira"].status == "disabled"  # from the catalog (not overridden)
    assert sorted(report.overrides_kept) == ["jira", "salesforce"]
    assert report.updated == ["salesforce"]

    before = {row.id: row.updated_at for row in rows.values()}
    again = await _sync(engine, changed)
    assert not again.changed
    assert {row.id: row.updated_at for row in (await _rows(engine)).values()} == before


async def test_rows_missing_from_the_catalog_are_kept_and_reported(engine: AsyncEngine) -> None:
    await _sync(engine)
    smaller = parse_catalog(
        yaml.safe_dump({"providers": [load_catalog().get("hubspot").model_dump(mode="json")]})
    )

    report = await _sync(engine, smaller)

    assert report.unchanged == ["hubspot"]
    assert "salesforce" in report.not_in_catalog
    assert "salesforce" in await _rows(engine)
