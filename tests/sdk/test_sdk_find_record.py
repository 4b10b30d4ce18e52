"""HttpAdapter.find_record: a filtered fetch of one record, only where the fetch filters."""

from __future__ import annotations

import pytest

from castiel_sync.sdk import (
    ExternalRecord,
    FetchOptions,
    FetchResult,
    FilterCondition,
    HttpAdapter,
    IntegrationAdapter,
    NotSupportedError,
)


class Filtering(HttpAdapter):
    provider_id = "filtering"
    find_by_fetch = True

    def __init__(self, records: list[ExternalRecord]) -> None:
        super().__init__()
        self.records = records
        self.asked: list[tuple[str, FetchOptions]] = []

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        self.asked.append((entity, options))
        return FetchResult(records=self.records[: options.limit])


class Unfiltered(Filtering):
    """A fetch that ignores filters: a look-up through it would match any record."""

    provider_id = "unfiltered"
    find_by_fetch = False


async def test_find_record_fetches_one_record_with_eq_filters() -> None:
    adapter = Filtering([ExternalRecord(external_id="a1"), ExternalRecord(external_id="a2")])
    found = await adapter.find_record("contacts", {"email": "x@y.test", "age": 3})
    assert found is not None and found.external_id == "a1"
    [(entity, options)] = adapter.asked
    assert entity == "contacts"
    assert options.limit == 1
    assert options.filters == [
        FilterCondition(field="email", op="eq", value="x@y.test"),
        FilterCondition(field="age", op="eq", value=3),
    ]


async def test_find_record_none_when_nothing_matches() -> None:
    assert await Filtering([]).find_record("contacts", {"email": "x@y.test"}) is None


async def test_find_record_not_supported_unless_the_fetch_filters() -> None:
    adapter = Unfiltered([ExternalRecord(external_id="a1")])
    with pytest.raises(NotSupportedError):
        await adapter.find_record("contacts", {"email": "x@y.test"})
    assert adapter.asked == []


def test_the_shipped_adapters_find_through_their_fetch() -> None:
    from castiel_sync.adapters.dynamics365 import Dynamics365Adapter
    from castiel_sync.adapters.hubspot import HubSpotAdapter
    from castiel_sync.adapters.salesforce import SalesforceAdapter

    for cls in (Dynamics365Adapter, HubSpotAdapter, SalesforceAdapter):
        assert cls.find_by_fetch
        assert cls.find_record is HttpAdapter.find_record
    assert HttpAdapter.find_by_fetch is False


class NotHttp(IntegrationAdapter):
    provider_id = "not_http"

    async def connect(self, credentials: object) -> None: ...

    async def disconnect(self) -> None: ...

    async def test_connection(self) -> object: ...

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        return FetchResult(records=[ExternalRecord(external_id="a1")])


async def test_a_non_http_adapter_cannot_look_records_up() -> None:
    with pytest.raises(NotSupportedError):
        await NotHttp().find_record("contacts", {"email": "x@y.test"})
