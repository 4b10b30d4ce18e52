"""Full and incremental fetches: nextRecordsUrl paging, ties on SystemModstamp, deletions
through queryAll and getDeleted, single records."""

from __future__ import annotations

from datetime import timedelta

from castiel_sync.adapters.salesforce import SalesforceAdapter
from castiel_sync.sdk import FetchOptions, FetchResult
from castiel_sync.testing import FakeClock
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator


async def fetch_all(
    adapter: SalesforceAdapter, entity: str, **options: object
) -> list[FetchResult]:
    pages: list[FetchResult] = []
    cursor = None
    for _ in range(100):
        page = await adapter.fetch_records(entity, FetchOptions(cursor=cursor, **options))  # type: ignore[arg-type]
        pages.append(page)
        if not page.has_more:
            return pages
        cursor = page.next_cursor
    raise AssertionError("did not finish")


async def test_more_than_two_pages_follow_next_records_url(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    ids = []
    for n in range(450):
        ids.append(emulator.seed("Contact", {"LastName": f"Person {n:03d}"}))
        if n % 7 == 0:
            clock.advance(1)
    pages = await fetch_all(adapter, "Contact", limit=200)
    assert [len(p.records) for p in pages] == [200, 200, 50]
    # The cursor is Salesforce's own nextRecordsUrl, requested as is.
    assert pages[0].next_cursor is not None
    assert pages[0].next_cursor.startswith("/services/data/v62.0/query/01g")
    assert pages[0].next_cursor.endswith("-200")
    assert pages[1].next_cursor is not None and pages[1].next_cursor.endswith("-400")
    got = [r.external_id for p in pages for r in p.records]
    assert sorted(got) == sorted(ids) and len(set(got)) == 450
    queries = emulator.requests_to("/services/data/v62.0/query")
    assert [q.path.rsplit("/", 1)[-1] for q in queries[1:]] == [
        pages[0].next_cursor.rsplit("/", 1)[-1],
        pages[1].next_cursor.rsplit("/", 1)[-1],
    ]
    assert queries[0].headers["Sforce-Query-Options"] == "batchSize=200"


async def test_smaller_batches_than_asked_are_followed(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    # The docs allow Salesforce to return fewer records than the batch size asked for.
    emulator.max_batch_size = 4
    ids = {emulator.seed("Account", {"Name": f"A{n}"}) for n in range(10)}
    pages = await fetch_all(adapter, "Account", limit=200)
    assert [len(p.records) for p in pages] == [4, 4, 2]
    assert {r.external_id for p in pages for r in p.records} == ids


async def test_equal_modstamps_across_a_page_boundary_are_neither_lost_nor_repeated(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    before = emulator.seed("Account", {"Name": "before"})
    clock.advance(10)
    since = clock.now()
    tied = [emulator.seed("Account", {"Name": f"tie {n}"}) for n in range(5)]  # one instant
    clock.advance(1)
    after = emulator.seed("Account", {"Name": "after"})

    pages = await fetch_all(adapter, "Account", since=since, limit=2)
    got = [r.external_id for p in pages for r in p.records]
    assert [len(p.records) for p in pages] == [2, 2, 2]
    assert got == [*sorted(tied), after]  # ordered by SystemModstamp, then Id
    assert before not in got
    # The page boundaries fall inside the tie; the cursor carries the last (stamp, Id).
    assert pages[0].next_cursor is not None and pages[0].next_cursor.startswith("after|")
    soql = emulator.requests_to("/services/data/v62.0/query")[1].params["q"]
    assert "(SystemModstamp = 2024-01-01T00:00:10Z AND Id > '" in soql
    assert pages[-1].high_water_mark == clock.now()


async def test_incremental_uses_system_modstamp(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    old = emulator.seed(
        "Opportunity", {"Name": "Old", "StageName": "Prospecting", "CloseDate": "2024-06-30"}
    )
    fresh = emulator.seed(
        "Opportunity", {"Name": "New", "StageName": "Prospecting", "CloseDate": "2024-06-30"}
    )
    clock.advance(60)
    since = clock.now()
    clock.advance(5)
    emulator.touch("Opportunity", old, {"StageName": "Closed Won"})
    result = await adapter.fetch_records("Opportunity", FetchOptions(since=since))
    assert [r.external_id for r in result.records] == [old]
    record = result.records[0]
    assert record.data["IsWon"] is True and record.modified_at == since + timedelta(seconds=5)
    assert result.high_water_mark == since + timedelta(seconds=5)
    assert fresh not in [r.external_id for r in result.records]
    soql = emulator.requests[-1].params["q"]
    assert "WHERE (SystemModstamp >= 2024-01-01T00:01:00Z)" in soql
    assert soql.endswith("ORDER BY SystemModstamp ASC, Id ASC")


async def test_include_deleted_reads_query_all(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    keep = emulator.seed("Contact", {"LastName": "Keep"})
    gone = emulator.seed("Contact", {"LastName": "Gone"})
    clock.advance(30)
    since = clock.now()
    emulator.remove("Contact", gone)
    result = await adapter.fetch_records("Contact", FetchOptions(since=since, include_deleted=True))
    assert [(r.external_id, r.deleted) for r in result.records] == [(gone, True)]
    assert emulator.requests[-1].path == "/services/data/v62.0/queryAll/"
    full = await adapter.fetch_records("Contact", FetchOptions())
    assert [r.external_id for r in full.records] == [keep]
    assert emulator.requests[-1].path == "/services/data/v62.0/query/"


async def test_get_deleted_window(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    start = clock.now()
    first = emulator.seed("Account", {"Name": "one"})
    second = emulator.seed("Account", {"Name": "two"})
    clock.advance(120)
    emulator.remove("Account", first)
    clock.advance(300)
    emulator.remove("Account", second)
    clock.advance(600)
    window = await adapter.fetch_deleted("Account", start, start + timedelta(minutes=5))
    assert [(r.external_id, r.deleted) for r in window.records] == [(first, True)]
    assert window.records[0].modified_at == start + timedelta(seconds=120)
    assert window.high_water_mark == start + timedelta(minutes=5)  # latestDateCovered
    request = emulator.requests[-1]
    assert request.path == "/services/data/v62.0/sobjects/Account/deleted/"
    assert request.params["start"] == "2024-01-01T00:00:00+00:00"
    later = await adapter.fetch_deleted("Account", start, clock.now())
    assert {r.external_id for r in later.records} == {first, second}


async def test_fetch_record_by_15_or_18_character_id(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    record_id = emulator.seed("Account", {"Name": "Solo", "NumberOfEmployees": 12})
    for form in (record_id, record_id[:15]):
        record = await adapter.fetch_record("Account", form)
        assert record is not None and record.external_id == record_id
        assert record.data["NumberOfEmployees"] == 12
    emulator.remove("Account", record_id)
    assert await adapter.fetch_record("Account", record_id) is None  # ENTITY_IS_DELETED


async def test_record_shape_matches_the_docs(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    emulator.seed("Account", {"Name": "Test 1"})
    async with emulator.client(headers={"Authorization": f"Bearer {emulator.issue_token()}"}) as c:
        response = await c.get(
            "/services/data/v62.0/query/", params={"q": "SELECT name FROM Account"}
        )
    body = response.json()
    assert set(body) == {"totalSize", "done", "records"}
    (record,) = body["records"]
    assert record["attributes"]["type"] == "Account"
    assert record["attributes"]["url"].startswith("/services/data/v62.0/sobjects/Account/001")
    assert record["Name"] == "Test 1"  # canonical field name, as in the docs' example
