"""Filters (and injection attempts), deletions, batches, the error mapping, 429 policies,
token expiry mid-fetch, and HubSpot's OAuth token rules, against the emulator."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from castiel_sync.adapters.hubspot import HubSpotAdapter, render_filter
from castiel_sync.sdk import (
    AdapterValidationError,
    AuthError,
    Credentials,
    FetchOptions,
    FilterCondition,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.testing.emulators.hubspot import HubSpotEmulator


async def fetch_all(adapter: HubSpotAdapter, entity: str, cursor=None, **options) -> list:
    records = []
    while True:
        page = await adapter.fetch_records(entity, FetchOptions(cursor=cursor, **options))
        records += page.records
        if not page.has_more:
            return records
        cursor = page.next_cursor


# -- filters -------------------------------------------------------------------------


def test_filters_render_typed_values() -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    assert render_filter(FilterCondition(field="properties.amount", op="gte", value=1000)) == {
        "propertyName": "amount",
        "operator": "GTE",
        "value": "1000",
    }
    assert render_filter(FilterCondition(field="closedate", op="lt", value=when))["value"] == (
        "1714521600000"
    )
    assert render_filter(FilterCondition(field="dealstage", op="in", value=["a", "b"])) == {
        "propertyName": "dealstage",
        "operator": "IN",
        "values": ["a", "b"],
    }
    assert render_filter(FilterCondition(field="email", op="is_null", value=True)) == {
        "propertyName": "email",
        "operator": "NOT_HAS_PROPERTY",
    }
    assert render_filter(FilterCondition(field="name", op="starts_with", value="Ac"))["value"] == (
        "Ac*"
    )


@pytest.mark.parametrize(
    "condition",
    [
        FilterCondition(field="name", op="eq", value={"operator": "HAS_PROPERTY"}),
        FilterCondition(field="name", op="eq", value=["x"]),
        FilterCondition(field="name", op="contains", value="*"),
        FilterCondition(field="name", op="starts_with", value="a b"),
        FilterCondition(field="name", op="eq", value="x\u0000y"),
        FilterCondition(field="name", op="gt", value=float("nan")),
        FilterCondition(field="a.b", op="eq", value="x"),
        FilterCondition(field="name", op="in", value=[]),
    ],
)
def test_injection_attempts_are_refused(condition: FilterCondition) -> None:
    with pytest.raises(AdapterValidationError):
        render_filter(condition)


async def test_pull_filters_reach_the_search(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    store = hubspot.store["deals"]
    big = store.create({"dealname": "Big", "amount": "5000", "dealstage": "won"})
    store.create({"dealname": "Small", "amount": "50", "dealstage": "won"})
    store.create({"dealname": "Lost", "amount": "9000", "dealstage": "lost"})
    filters = [
        FilterCondition(field="properties.amount", op="gte", value=1000),
        FilterCondition(field="dealstage", op="eq", value="won"),
    ]
    records = await fetch_all(adapter, "deals", filters=filters)
    assert [r.external_id for r in records] == [big.id]
    # A literal that looks like a wildcard or JSON stays a literal.
    odd = [FilterCondition(field="dealname", op="eq", value='Big"} OR {"x')]
    assert await fetch_all(adapter, "deals", filters=odd) == []
    with pytest.raises(AdapterValidationError):  # the emulator knows no such property
        await fetch_all(adapter, "deals", filters=[FilterCondition(field="nope", op="eq", value=1)])


# -- deletions, single records, batches ------------------------------------------------


async def test_archived_records_are_deletions(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    store = hubspot.store["contacts"]
    keep = store.create({"email": "keep@example.com"})
    gone = store.create({"email": "gone@example.com"})
    old_gone = store.create({"email": "old@example.com"})
    store.delete(old_gone.id)
    since = hubspot.clock.advance(5)
    await adapter.delete_record("contacts", gone.id)
    records = await fetch_all(adapter, "contacts", since=since, include_deleted=True)
    assert [(r.external_id, r.deleted) for r in records] == [(gone.id, True)]
    assert records[0].data["archived"] is True and records[0].modified_at >= since
    full = await fetch_all(adapter, "contacts", include_deleted=True)
    assert {(r.external_id, r.deleted) for r in full} == {
        (keep.id, False),
        (gone.id, True),
        (old_gone.id, True),
    }
    assert await adapter.fetch_record("contacts", gone.id) is None
    with pytest.raises(NotFoundError):
        await adapter.delete_record("contacts", gone.id)
    with pytest.raises(NotFoundError):
        await adapter.update_record("contacts", "../../x", {"email": "e"})


async def test_create_update_with_mapped_shape(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    record_id = await adapter.create_record(
        "deals", {"properties": {"dealname": "D", "amount": 10}}
    )
    await adapter.update_record("deals", record_id, {"properties": {"amount": 12.5}})
    stored = hubspot.store["deals"].get(record_id)
    assert stored is not None and stored.data == {"dealname": "D", "amount": "12.5"}
    create = hubspot.requests_to("/crm/v3/objects/deals", "POST")[0]
    assert create.status == 201 and create.json() == {"properties": {"dealname": "D", "amount": 10}}
    patch = hubspot.requests_to(f"/crm/v3/objects/deals/{record_id}", "PATCH")[0]
    assert patch.status == 200
    with pytest.raises(AdapterValidationError):  # a read-only property
        await adapter.update_record("deals", record_id, {"hs_lastmodifieddate": "x"})
    with pytest.raises(AdapterValidationError):  # not a property name
        await adapter.create_record("deals", {"bad name": "x"})


async def test_batches_of_one_hundred(adapter: HubSpotAdapter, hubspot: HubSpotEmulator) -> None:
    rows = [{"name": f"Co {n}"} for n in range(250)]
    ids = await adapter.batch_create("companies", rows)
    assert len(ids) == 250 and len(set(ids)) == 250
    creates = hubspot.requests_to("/crm/v3/objects/companies/batch/create")
    assert [len(r.json()["inputs"]) for r in creates] == [100, 100, 50]
    assert {r.status for r in creates} == {201}
    await adapter.batch_update("companies", {rid: {"industry": "Tech"} for rid in ids[:120]})
    assert hubspot.store["companies"].get(ids[119]).data["industry"] == "Tech"  # type: ignore[union-attr]
    read = await adapter.batch_read("companies", [*ids[:150], "999999"])
    assert {r.external_id for r in read} == set(ids[:150])
    assert 207 in {r.status for r in hubspot.requests_to("/crm/v3/objects/companies/batch/read")}
    with pytest.raises(NotFoundError):
        await adapter.batch_update("companies", {"999999": {"name": "x"}})


# -- errors, rate limits, tokens --------------------------------------------------------


def _response(status: int, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(
        status,
        json=body or {"status": "error", "message": "m", "correlationId": "c", "category": "X"},
        headers=headers,
        request=httpx.Request("GET", "https://api.hubapi.com/crm/v3/objects/contacts"),
    )


@pytest.mark.parametrize(
    ("status", "category", "error"),
    [
        (401, "INVALID_AUTHENTICATION", AuthError),
        (403, "MISSING_SCOPES", AuthError),
        (404, "OBJECT_NOT_FOUND", NotFoundError),
        (400, "VALIDATION_ERROR", AdapterValidationError),
        (409, "CONFLICT", AdapterValidationError),
        (423, "LOCKED", TransientError),
        (477, "MIGRATION_IN_PROGRESS", TransientError),
        (500, "INTERNAL_ERROR", TransientError),
        (502, "BAD_GATEWAY", TransientError),
        (405, "METHOD_NOT_ALLOWED", PermanentError),
    ],
)
def test_error_mapping(status: int, category: str, error: type) -> None:
    adapter = HubSpotAdapter()
    body = {"status": "error", "message": "m", "correlationId": "abc", "category": category}
    classified = adapter.classify(_response(status, body))
    assert type(classified) is error
    assert classified is not None and "abc" in (classified.detail or "")


@pytest.mark.parametrize(
    ("policy", "headers", "wait"),
    [
        ("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, 10.0),
        ("SECONDLY", {}, 1.0),
        ("DAILY", {}, 3600.0),
    ],
)
def test_429_policies(policy: str, headers: dict, wait: float) -> None:
    body = {"status": "error", "errorType": "RATE_LIMIT", "policyName": policy, "message": "m"}
    error = HubSpotAdapter().classify(_response(429, body, headers))
    assert isinstance(error, RateLimitedError) and error.retry_after == wait


async def test_429_burst_waits_on_the_fake_clock_and_tracks_headers(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator
) -> None:
    hubspot.store["companies"].create({"name": "A"})
    hubspot.faults.rate_limit(times=2, retry_after=None)
    before = len(hubspot.clock.sleeps)
    page = await adapter.fetch_records("companies", FetchOptions())
    assert len(page.records) == 1
    assert hubspot.clock.sleeps[before:] == [10.0, 10.0]  # TEN_SECONDLY_ROLLING interval
    assert adapter.rate_limit_state["limit"] == 100
    assert adapter.rate_limit_state["interval_ms"] == 10000
    assert adapter.rate_limit_state["daily_remaining"] < 500_000
    # A DAILY policy is not slept through: the queue reschedules.
    hubspot.next_policies.append("DAILY")
    hubspot.faults.rate_limit(times=1, retry_after=None)
    with pytest.raises(RateLimitedError) as info:
        await adapter.fetch_records("companies", FetchOptions())
    assert info.value.retry_after == 3600.0


async def test_enforced_ten_secondly_window(hubspot: HubSpotEmulator) -> None:
    hubspot.enforce_rate_limits = True
    token = hubspot.issue_token()
    async with hubspot.client(headers={"Authorization": f"Bearer {token}"}) as client:
        statuses = [(await client.get("/crm/v3/objects/deals")).status_code for _ in range(101)]
        hubspot.clock.advance(10)
        later = await client.get("/crm/v3/objects/deals")
    assert statuses[:100] == [200] * 100 and statuses[100] == 429
    assert later.status_code == 200


async def test_token_expiring_mid_incremental_fetch(
    adapter: HubSpotAdapter, hubspot: HubSpotEmulator, refresher
) -> None:
    since = hubspot.clock.advance(1)
    ids = [hubspot.store["companies"].create({"name": f"C{n}"}).id for n in range(450)]
    first = await adapter.fetch_records("companies", FetchOptions(since=since))
    hubspot.clock.advance(1801)  # HubSpot access tokens live 30 minutes
    rest = await fetch_all(adapter, "companies", since=since, cursor=first.next_cursor)
    assert refresher.calls == 1
    assert sorted(r.external_id for r in [*first.records, *rest]) == sorted(ids)
    assert hubspot.statuses().count(401) == 1


async def test_oauth_token_rules(hubspot: HubSpotEmulator) -> None:
    oauth = hubspot.oauth
    assert oauth is not None and oauth.token_url.endswith("/oauth/v1/token")
    refresh = oauth.mint_refresh_token("hubspot-client-id")
    form = {
        "grant_type": "refresh_token",
        "client_id": "hubspot-client-id",
        "client_secret": "hubspot-client-secret",
        "refresh_token": refresh,
    }
    async with hubspot.client() as client:
        first = await client.post("/oauth/v1/token", data=form)
        again = await client.post("/oauth/v1/token", data=form)
        basic = await client.post(
            "/oauth/v1/token",
            data={k: v for k, v in form.items() if k != "client_secret"},
            auth=("hubspot-client-id", "hubspot-client-secret"),
        )
    assert first.status_code == 200 and first.json()["expires_in"] == 1800
    assert first.json()["refresh_token"] == refresh  # not rotated
    assert again.status_code == 200
    assert basic.status_code == 401  # client credentials go in the body
    adapter = HubSpotAdapter().configure(transport=hubspot.transport(), clock=hubspot.clock)
    await adapter.connect(
        Credentials(access_token=first.json()["access_token"], instance_url=hubspot.base_url)
    )
    assert (await adapter.test_connection()).ok
    await adapter.disconnect()
