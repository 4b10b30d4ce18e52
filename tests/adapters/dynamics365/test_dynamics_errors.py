"""Dataverse error bodies mapped to the SDK error tree; service protection 429s honoured
with Retry-After (on the fake clock); rate headers tracked; a token expiring mid-fetch."""

from __future__ import annotations

import httpx
import pytest

from castiel_sync.adapters.dynamics365 import ChangeTrackingNotEnabledError, Dynamics365Adapter
from castiel_sync.sdk import (
    AdapterValidationError,
    AuthError,
    FetchOptions,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.testing import FakeClock
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator


def response(status: int, code: str, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": {"code": code, "message": message}},
        headers=headers,
        request=httpx.Request("GET", "https://org.crm.dynamics.com/api/data/v9.2/accounts"),
    )


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        # perform-conditional-operations-using-web-api.md examples
        (
            404,
            "",
            "account With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist",
            NotFoundError,
        ),
        (412, "", "A record with matching key values already exists.", AdapterValidationError),
        (
            412,
            "",
            "The version of the existing record doesn't match the RowVersion property provided.",
            AdapterValidationError,
        ),
        # compose-http-requests-handle-errors.md plug-in example
        (400, "0x80040265", "Example Error Message.", AdapterValidationError),
        (404, "0x80040217", "contact With Id = x Does Not Exist", NotFoundError),
        (
            412,
            "0x80040237",
            "Operation failed due to a SQL integrity violation.",
            AdapterValidationError,
        ),
        (403, "0x80040220", "Principal user is missing prvReadAccount privilege", AuthError),
        (
            400,
            "0x80072491",
            "Entity account isn't enabled for change tracking.",
            ChangeTrackingNotEnabledError,
        ),
        (401, "", "", AuthError),
        (405, "0x80040217", "Invalid operation", NotFoundError),
        (503, "", "Service Unavailable", TransientError),
        (501, "", "Not Implemented", TransientError),
        (418, "", "teapot", PermanentError),
    ],
)
def test_error_bodies_map_to_the_error_tree(
    status: int, code: str, message: str, expected: type[Exception]
) -> None:
    error = Dynamics365Adapter().classify(response(status, code, message))
    assert isinstance(error, expected)
    assert error.status_code == status


@pytest.mark.parametrize(
    ("code", "limit"),
    [
        ("0x80072322", "number of requests"),
        ("0x80072321", "combined execution time"),
        ("0x80072326", "concurrent requests"),
    ],
)
def test_service_protection_codes(code: str, limit: str) -> None:
    adapter = Dynamics365Adapter()
    error = adapter.classify(response(429, code, "limit", **{"Retry-After": "37"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 37.0 and limit in error.user_message


@pytest.mark.parametrize("kind", ["requests", "execution_time", "concurrent"])
async def test_service_protection_429s_wait_retry_after(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator, clock: FakeClock, kind: str
) -> None:
    emulator.store["account"].create({"name": "A"})
    emulator.throttle_kind = kind
    emulator.faults.rate_limit(times=2, retry_after=45)
    result = await adapter.fetch_records("account", FetchOptions())
    assert len(result.records) == 1
    assert clock.sleeps[-2:] == [45.0, 45.0]  # waited on the fake clock, never really
    assert [r.status for r in emulator.requests] == [429, 429, 200]


async def test_long_retry_after_goes_to_the_queue(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator, clock: FakeClock
) -> None:
    emulator.faults.rate_limit(times=1, retry_after=900)
    with pytest.raises(RateLimitedError) as info:
        await adapter.fetch_records("account", FetchOptions())
    assert info.value.retry_after == 900.0
    assert "0x80072322" in (info.value.detail or "")
    assert 900.0 not in clock.sleeps


async def test_rate_headers_are_tracked(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    await adapter.fetch_records("account", FetchOptions())
    await adapter.fetch_records("account", FetchOptions())
    assert adapter.rate_limit_state["burst_remaining"] == emulator.burst_remaining == 5998
    assert adapter.rate_limit_state["remaining"] == 5998
    assert adapter.rate_limit_state["time_remaining"] == pytest.approx(1_199_975.0)


async def test_token_expiring_mid_fetch_is_refreshed_once(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator, refresher: object
) -> None:
    for n in range(5):
        emulator.store["account"].create({"name": f"A{n}"})
    first = await adapter.fetch_records("account", FetchOptions(limit=2))
    emulator.faults.expire_tokens(after=1)
    second = await adapter.fetch_records("account", FetchOptions(limit=2, cursor=first.next_cursor))
    third = await adapter.fetch_records("account", FetchOptions(limit=2, cursor=second.next_cursor))
    assert len(first.records + second.records + third.records) == 5
    assert third.delta_token is not None
    assert refresher.calls == 1  # type: ignore[attr-defined]
    assert emulator.statuses().count(401) == 1
    unauthorized = next(r for r in emulator.requests if r.status == 401)
    assert unauthorized.params.get("$skiptoken")  # it failed on a nextLink page...
    retried = emulator.requests[emulator.requests.index(unauthorized) + 1]
    assert retried.query == unauthorized.query  # ...and the same page was asked again
    # The refreshed credentials carry the new refresh token the identity platform issued.
    assert adapter.credentials is not None and adapter.credentials.refresh_token is not None


async def test_emulator_401_is_a_bearer_challenge(emulator: Dynamics365Emulator) -> None:
    async with emulator.client() as client:
        reply = await client.get(
            "/api/data/v9.2/accounts", headers={"Authorization": "Bearer nope"}
        )
    assert reply.status_code == 401 and reply.content == b""
    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")
