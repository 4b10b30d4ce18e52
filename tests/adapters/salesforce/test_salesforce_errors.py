"""Salesforce error bodies map onto the SDK error tree; limits, 429s and an expiring
session mid-fetch are handled as the docs describe."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from castiel_sync.adapters.salesforce import SalesforceAdapter
from castiel_sync.sdk import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    FetchOptions,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.testing import FakeClock, OAuthEmulator
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator

# (status, errorCode, message, expected error class): bodies as Salesforce sends them,
# [{"message", "errorCode", "fields"?}] (REST API Developer Guide, errorcodes.htm).
ERROR_TABLE = [
    (401, "INVALID_SESSION_ID", "Session expired or invalid", AuthError),
    (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", RateLimitedError),
    (403, "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights", AuthError),
    (404, "NOT_FOUND", "The requested resource does not exist", NotFoundError),
    (404, "ENTITY_IS_DELETED", "entity is deleted", NotFoundError),
    (400, "MALFORMED_QUERY", "unexpected token: OR", AdapterValidationError),
    (400, "INVALID_FIELD", "The Id field should not be specified in the sobject data.",
     AdapterValidationError),
    (400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]",
     AdapterValidationError),
    (400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record",
     TransientError),
    (500, "UNKNOWN_EXCEPTION", "An unexpected error occurred.", TransientError),
    (503, "SERVER_UNAVAILABLE", "Server temporarily unavailable", TransientError),
    (300, "MULTIPLE_CHOICES", "Multiple records", None),
    (405, "METHOD_NOT_ALLOWED", "HTTP Method 'PUT' not allowed", PermanentError),
]  # fmt: skip


@pytest.mark.parametrize(("status", "code", "message", "expected"), ERROR_TABLE)
def test_error_bodies_map_to_the_sdk_tree(
    status: int, code: str, message: str, expected: type[AdapterError] | None
) -> None:
    adapter = SalesforceAdapter()
    body = [{"message": message, "errorCode": code}]
    response = httpx.Response(
        status, json=body, request=httpx.Request("GET", "https://x.test/services/data/v62.0/")
    )
    error = adapter.classify(response)
    if expected is None:
        assert error is None
        return
    assert type(error) is expected
    assert error is not None and error.status_code == status
    assert error.detail is not None and str(body[0]["errorCode"]) in error.detail


def test_daily_limit_waits_an_hour_and_a_retry_after_is_honoured() -> None:
    adapter = SalesforceAdapter()
    request = httpx.Request("GET", "https://x.test/")
    daily = adapter.classify(
        httpx.Response(
            403,
            json=[
                {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
            ],
            request=request,
        )
    )
    assert isinstance(daily, RateLimitedError) and daily.retry_after == 3600
    burst = adapter.classify(
        httpx.Response(
            429,
            headers={"Retry-After": "1.5"},
            json=[{"message": "slow down", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
            request=request,
        )
    )
    assert isinstance(burst, RateLimitedError) and burst.retry_after == 1.5


async def test_org_api_limit_is_tracked_then_enforced(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    emulator.seed("Account", {"Name": "x"})
    emulator.api_limit = 3
    await adapter.fetch_records("Account", FetchOptions())
    assert adapter.rate_limit_state["api_usage"] == {"used": 1, "limit": 3}
    assert adapter.rate_limit_state["remaining"] == 2
    await adapter.fetch_records("Account", FetchOptions())
    await adapter.fetch_records("Account", FetchOptions())
    with pytest.raises(RateLimitedError) as info:
        await adapter.fetch_records("Account", FetchOptions())
    # Past the in-process retry bound: handed to the queue, never slept through here.
    assert info.value.retry_after == 3600 and info.value.status_code == 403
    assert clock.sleeps == []
    assert emulator.requests[-1].status == 403
    assert adapter.rate_limit_state["remaining"] == 0


async def test_a_burst_of_429s_is_waited_out(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    record_id = emulator.seed("Account", {"Name": "x"})
    emulator.faults.rate_limit(times=2, retry_after=3)
    result = await adapter.fetch_records("Account", FetchOptions())
    assert [r.external_id for r in result.records] == [record_id]
    assert clock.sleeps == [3, 3]


async def test_session_expiring_mid_fetch_is_refreshed_and_the_fetch_continues(
    adapter: SalesforceAdapter,
    emulator: SalesforceEmulator,
    oauth: OAuthEmulator,
    refresher: Any,
) -> None:
    ids = {emulator.seed("Contact", {"LastName": f"P{n}"}) for n in range(450)}
    first = await adapter.fetch_records("Contact", FetchOptions(limit=200))
    # The next request (the nextRecordsUrl page) meets an expired session.
    emulator.faults.expire_tokens(after=0)
    second = await adapter.fetch_records(
        "Contact", FetchOptions(limit=200, cursor=first.next_cursor)
    )
    third = await adapter.fetch_records(
        "Contact", FetchOptions(limit=200, cursor=second.next_cursor)
    )
    assert not third.has_more
    got = [r.external_id for page in (first, second, third) for r in page.records]
    assert set(got) == ids and len(got) == 450
    assert refresher.calls == 1
    assert oauth.token_call_count("refresh_token") == 1
    statuses = emulator.statuses()
    assert statuses.count(401) == 1
    expired = next(r for r in emulator.requests if r.status == 401)
    retried = emulator.requests[emulator.requests.index(expired) + 1]
    assert retried.path == expired.path and retried.status == 200
    # The refresh kept the refresh token (Salesforce sent none back) and a new access token.
    assert refresher.credentials.refresh_token is not None
    assert adapter.credentials is refresher.credentials


async def test_a_dead_refresh_token_surfaces_as_auth_error(
    adapter: SalesforceAdapter,
    emulator: SalesforceEmulator,
    oauth: OAuthEmulator,
    refresher: Any,
) -> None:
    emulator.seed("Account", {"Name": "x"})
    assert refresher.credentials.refresh_token is not None
    oauth.revoke_refresh_token(refresher.credentials.refresh_token.get_secret_value())
    emulator.expire_all_tokens()
    with pytest.raises(AuthError) as info:
        await adapter.fetch_records("Account", FetchOptions())
    assert "refreshed" in info.value.user_message


async def test_bad_requests_raise_validation_errors(adapter: SalesforceAdapter) -> None:
    with pytest.raises(AdapterValidationError):
        await adapter.create_record("Account", {"Description": "no name"})
    with pytest.raises(AdapterValidationError):
        await adapter.fetch_records("Account", FetchOptions(cursor="not-a-cursor"))
    with pytest.raises(AdapterValidationError):
        await adapter.fetch_records(
            "Account", FetchOptions(cursor="/services/data/v62.0/query/../../sobjects")
        )
