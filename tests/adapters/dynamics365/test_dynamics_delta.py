"""Paging with odata.maxpagesize/@odata.nextLink, change tracking with delta links and
removed entries, and the modifiedon fallback when a table has no change tracking."""

from __future__ import annotations

import pytest

from castiel_sync.adapters.dynamics365 import Dynamics365Adapter
from castiel_sync.sdk import AdapterValidationError, ExternalRecord, FetchOptions, FetchResult
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator


async def read_all(
    adapter: Dynamics365Adapter, entity: str = "account", **options: object
) -> tuple[list[ExternalRecord], list[FetchResult]]:
    pages: list[FetchResult] = []
    cursor = None
    while True:
        page = await adapter.fetch_records(
            entity,
            FetchOptions(cursor=cursor, **options),  # type: ignore[arg-type]
        )
        pages.append(page)
        if not page.has_more:
            return [r for p in pages for r in p.records], pages
        cursor = page.next_cursor


def seed(emulator: Dynamics365Emulator, count: int, entity: str = "account") -> list[str]:
    ids = []
    for n in range(count):
        emulator.clock.advance(1)
        ids.append(emulator.store[entity].create({"name": f"Account {n}"}).id)
    return ids


async def test_full_read_pages_with_maxpagesize_and_next_link(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    ids = seed(emulator, 7)
    records, pages = await read_all(adapter, limit=3)
    assert [len(p.records) for p in pages] == [3, 3, 1]
    assert [r.external_id for r in records] == ids
    requests = emulator.requests_to("/api/data/v9.2/accounts")
    # Every page asked for the same page size, and the first asked to track changes.
    assert all("odata.maxpagesize=3" in r.headers["prefer"] for r in requests)
    assert "odata.track-changes" in requests[0].headers["prefer"]
    # Pages 2 and 3 used the nextLink unchanged: a $skiptoken paging cookie, same $select.
    assert "$skiptoken" in requests[1].params and "pagenumber" in requests[1].params["$skiptoken"]
    assert requests[1].params["$select"] == requests[0].params["$select"]
    # Only the last page carries the delta link; intermediate ones have a cursor.
    assert [p.delta_token is not None for p in pages] == [False, False, True]
    assert pages[0].next_cursor and emulator.base_url in pages[0].next_cursor
    assert records[0].data["@odata.etag"].startswith('W/"')


async def test_delta_link_round_trip_with_updates_and_removals(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    ids = seed(emulator, 4)
    _, pages = await read_all(adapter, limit=2)
    token = pages[-1].delta_token
    assert token and "$deltatoken=" in token

    emulator.clock.advance(5)
    store = emulator.store["account"]
    store.update(ids[1], {"name": "Renamed"})
    created = store.create({"name": "New one"})
    store.delete(ids[3])
    # Created and deleted after the token: still reported deleted (docs).
    ephemeral = store.create({"name": "Short-lived"})
    store.delete(ephemeral.id)

    changes, delta_pages = await read_all(adapter, delta_token=token, include_deleted=True, limit=2)
    by_id = {r.external_id: r for r in changes}
    assert by_id[ids[1]].data["name"] == "Renamed" and not by_id[ids[1]].deleted
    assert by_id[created.id].data["name"] == "New one"
    assert by_id[ids[3]].deleted and by_id[ephemeral.id].deleted
    assert set(by_id) == {ids[1], created.id, ids[3], ephemeral.id}
    # New or updated rows come first, then removals.
    assert [r.deleted for r in changes] == [False, False, True, True]
    marks = [p.high_water_mark for p in delta_pages if p.high_water_mark]
    assert max(marks) == emulator.clock.now()
    next_token = delta_pages[-1].delta_token
    assert next_token and next_token != token
    delta_request = emulator.requests_to("/api/data/v9.2/accounts")[-len(delta_pages)]
    assert "$deltatoken" in delta_request.params

    # Nothing changed since: an empty change set and yet another delta link.
    quiet = await adapter.fetch_records("account", FetchOptions(delta_token=next_token))
    assert quiet.records == [] and quiet.delta_token


async def test_delta_without_include_deleted_leaves_tombstones_out(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    ids = seed(emulator, 2)
    _, pages = await read_all(adapter)
    emulator.store["account"].delete(ids[0])
    result = await adapter.fetch_records("account", FetchOptions(delta_token=pages[-1].delta_token))
    assert result.records == [] and result.delta_token


async def test_delta_link_of_another_org_is_refused(adapter: Dynamics365Adapter) -> None:
    foreign = "https://evil.example/api/data/v9.2/accounts?$deltatoken=1%2101"
    with pytest.raises(AdapterValidationError):
        await adapter.fetch_records("account", FetchOptions(delta_token=foreign))
    with pytest.raises(AdapterValidationError):
        await adapter.fetch_records("account", FetchOptions(cursor=f"t:{foreign}"))


async def test_table_without_change_tracking_falls_back_to_modifiedon(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    emulator.disable_change_tracking("account")
    ids = seed(emulator, 3)
    records, pages = await read_all(adapter, limit=2)
    assert [r.external_id for r in records] == ids
    assert all(p.delta_token is None for p in pages)
    assert emulator.requests[0].status == 400
    assert "account" in adapter.untracked
    async with emulator.client() as client:
        refused = await client.get(
            "/api/data/v9.2/accounts",
            headers={
                "Authorization": f"Bearer {emulator.issue_token()}",
                "Prefer": "odata.track-changes",
            },
        )
    assert refused.json()["error"] == {
        "code": "0x80072491",
        "message": "Entity account isn't enabled for change tracking.",
    }

    mark = max(p.high_water_mark for p in pages if p.high_water_mark)
    since = emulator.clock.advance(1)
    emulator.clock.advance(1)
    emulator.store["account"].update(ids[0], {"name": "Changed"})
    changes, _ = await read_all(adapter, since=since)
    assert [r.external_id for r in changes] == [ids[0]]
    request = emulator.requests[-1]
    assert request.params["$filter"] == "modifiedon ge 2024-01-01T00:00:04Z"
    assert request.params["$orderby"] == "modifiedon asc,accountid asc"
    assert "odata.track-changes" not in request.headers["prefer"]
    resumed, _ = await read_all(adapter, since=mark)
    assert ids[0] in {r.external_id for r in resumed}


async def test_stored_delta_token_after_tracking_lost_reads_plainly(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    seed(emulator, 2)
    _, pages = await read_all(adapter)
    emulator.disable_change_tracking("account")
    since = emulator.clock.now()
    result = await adapter.fetch_records(
        "account", FetchOptions(delta_token=pages[-1].delta_token, since=since)
    )
    assert [r.data["name"] for r in result.records] == ["Account 1"]
    assert result.delta_token is None


async def test_emulator_refuses_filter_with_change_tracking(
    emulator: Dynamics365Emulator,
) -> None:
    async with emulator.client() as client:
        response = await client.get(
            "/api/data/v9.2/accounts",
            params={"$filter": "name eq 'x'"},
            headers={
                "Authorization": f"Bearer {emulator.issue_token()}",
                "Prefer": "odata.track-changes",
            },
        )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        'The "$filter" query parameter isn\'t supported when Change Tracking is enabled.'
    )
