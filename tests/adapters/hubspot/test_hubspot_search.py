"""Incremental fetches through the CRM search API: more changes than one query's 10,000
results, equal timestamps across page boundaries, runs of equal timestamps longer than a
page, and records modified while the scan runs."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from castiel_sync.adapters.hubspot import SEARCH_RESULT_CAP, HubSpotAdapter
from castiel_sync.sdk import ExternalRecord, FetchOptions
from castiel_sync.testing.emulators.hubspot import HubSpotEmulator


async def scan(
    adapter: HubSpotAdapter, entity: str, since: datetime, on_page=None
) -> list[ExternalRecord]:
    records: list[ExternalRecord] = []
    cursor = None
    for n in range(1000):
        page = await adapter.fetch_records(entity, FetchOptions(since=since, cursor=cursor))
        records += page.records
        if on_page is not None:
            on_page(n)
        if not page.has_more:
            return records
        cursor = page.next_cursor
    raise AssertionError("the scan did not finish")


def seed(emulator: HubSpotEmulator, entity: str, count: int, per_instant: int) -> list[str]:
    """``count`` records, ``per_instant`` sharing each modified millisecond."""
    store = emulator.store[entity]
    ids = []
    for n in range(count):
        if n % per_instant == 0:
            emulator.clock.advance(0.001)
        ids.append(store.create({"name": f"Company {n}"}).id)
    return ids


async def test_more_changes_than_the_search_cap(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    since = hubspot.clock.advance(1)
    ids = seed(hubspot, "companies", SEARCH_RESULT_CAP + 700, per_instant=7)
    records = await scan(adapter, "companies", since)
    counts = Counter(r.external_id for r in records)
    assert set(counts) == set(ids), "a record was missed"
    assert max(counts.values()) == 1, "a record came twice"
    searches = hubspot.requests_to("/crm/v3/objects/companies/search", "POST")
    assert all(r.status == 200 for r in searches)
    # Pages of the documented maximum, 200, and no request ever pages toward the cap.
    assert {r.json()["limit"] for r in searches} == {200}
    assert all("after" not in r.json() for r in searches)
    # The newest change bounds the next run (timestamps are milliseconds on the wire).
    newest = hubspot.store["companies"].all()[-1].modified_at
    assert max(r.modified_at for r in records) == newest.replace(
        microsecond=newest.microsecond // 1000 * 1000
    )


async def test_the_emulator_refuses_paging_past_the_cap(hubspot: HubSpotEmulator) -> None:
    # What a naive offset pager would run into.
    seed(hubspot, "companies", 10, per_instant=1)
    token = hubspot.issue_token()
    async with hubspot.client(headers={"Authorization": f"Bearer {token}"}) as client:
        ok = await client.post(
            "/crm/v3/objects/companies/search", json={"limit": 200, "after": "9800"}
        )
        refused = await client.post(
            "/crm/v3/objects/companies/search", json={"limit": 200, "after": "10000"}
        )
        too_big = await client.post("/crm/v3/objects/companies/search", json={"limit": 201})
    assert ok.status_code == 200
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    assert too_big.status_code == 400


async def test_equal_timestamps_across_page_boundaries(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    since = hubspot.clock.advance(1)
    # 13 per instant: every page of 200 ends inside a run of equal timestamps.
    ids = seed(hubspot, "companies", 1000, per_instant=13)
    records = await scan(adapter, "companies", since)
    assert sorted(r.external_id for r in records) == sorted(ids)


async def test_a_run_of_equal_timestamps_longer_than_a_page(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    since = hubspot.clock.advance(1)
    before = seed(hubspot, "companies", 150, per_instant=1)
    hubspot.clock.advance(0.001)
    store = hubspot.store["companies"]
    burst = [store.create({"name": f"Imported {n}"}).id for n in range(650)]  # one instant
    after = seed(hubspot, "companies", 120, per_instant=3)
    records = await scan(adapter, "companies", since)
    ids = [r.external_id for r in records]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(before + burst + after)
    sorts = {
        r.json()["sorts"][0]["propertyName"]
        for r in hubspot.requests_to("/crm/v3/objects/companies/search")
    }
    assert sorts == {"hs_lastmodifieddate", "hs_object_id"}  # the run was read in id order


async def test_records_modified_during_the_scan_are_not_lost(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    since = hubspot.clock.advance(1)
    ids = seed(hubspot, "companies", 1000, per_instant=1)
    store = hubspot.store["companies"]

    def touch(page: int) -> None:
        # Early records change while we read (an offset pager would now skip some).
        if page < 3:
            hubspot.clock.advance(0.001)
            for rid in ids[page * 10 : page * 10 + 10]:
                store.update(rid, {"name": f"edited {rid}"})

    records = await scan(adapter, "companies", since, on_page=touch)
    assert set(ids) <= {r.external_id for r in records}


async def test_contacts_use_lastmodifieddate(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    since = hubspot.clock.advance(1)
    contact = hubspot.store["contacts"].create({"email": "a@example.com"})
    records = await scan(adapter, "contacts", since)
    assert [r.external_id for r in records] == [contact.id]
    body = hubspot.requests_to("/crm/v3/objects/contacts/search")[0].json()
    assert body["filterGroups"][0]["filters"][0]["propertyName"] == "lastmodifieddate"
    assert body["filterGroups"][0]["filters"][0]["value"] == str(int(since.timestamp() * 1000))
