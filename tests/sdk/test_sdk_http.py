"""HttpAdapter: retries, Retry-After, refresh on 401, classification, rate limiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from castiel_sync.sdk import (
    AdapterValidationError,
    AuthError,
    ConnectionTestResult,
    Credentials,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NotFoundError,
    PermanentError,
    RateLimit,
    RateLimitedError,
    RetryPolicy,
    TokenBucket,
    TransientError,
    parse_retry_after,
)
from castiel_sync.testing import FakeClock

SECRET_TOKEN = "tok-very-secret-123"
NEW_TOKEN = "tok-fresh-456"


class Demo(HttpAdapter):
    provider_id = "demo"
    default_base_url = "https://api.demo.test"
    test_connection_path = "/me"
    retry_policy = RetryPolicy(max_attempts=5, initial_delay=1.0, max_delay=8.0, jitter=False)

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        raise NotImplementedError


Script = list[httpx.Response | Exception]


class Scripted:
    """A transport that answers from a script, recording what it was sent."""

    def __init__(self, script: Script | Callable[[httpx.Request], httpx.Response]) -> None:
        self.script = script
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if callable(self.script):
            return self.script(request)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    @property
    def auths(self) -> list[str | None]:
        return [r.headers.get("authorization") for r in self.requests]


async def make(
    script: Script | Callable[[httpx.Request], httpx.Response],
    *,
    refresher: Any = None,
    adapter_class: type[Demo] = Demo,
    **creds: Any,
) -> tuple[Demo, Scripted, FakeClock]:
    scripted = Scripted(script)
    clock = FakeClock()
    adapter = adapter_class().configure(
        transport=httpx.MockTransport(scripted), clock=clock, token_refresher=refresher
    )
    await adapter.connect(Credentials(access_token=SECRET_TOKEN, **creds))
    return adapter, scripted, clock


def ok(body: Any = None, **kw: Any) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"ok": True}, **kw)


async def test_base_url_timeout_and_bearer_header() -> None:
    adapter, t, _ = await make([ok()])
    assert adapter.client.timeout.connect == 10.0
    await adapter.request("GET", "/x")
    assert str(t.requests[0].url) == "https://api.demo.test/x"
    assert t.auths == [f"Bearer {SECRET_TOKEN}"]


async def test_instance_url_from_credentials_wins() -> None:
    adapter, t, _ = await make([ok()], instance_url="https://eu1.demo.test")
    await adapter.request("GET", "/x")
    assert t.requests[0].url.host == "eu1.demo.test"


async def test_5xx_retried_with_growing_backoff() -> None:
    adapter, t, clock = await make(
        [httpx.Response(500), httpx.Response(502), httpx.Response(500), ok()]
    )
    response = await adapter.request("GET", "/x")
    assert response.status_code == 200
    assert len(t.requests) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]


async def test_backoff_is_capped_and_attempts_bounded() -> None:
    adapter, t, clock = await make(lambda r: httpx.Response(503))
    with pytest.raises(TransientError) as info:
        await adapter.request("GET", "/x")
    assert len(t.requests) == 5
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert info.value.status_code == 503
    assert info.value.retryable


def test_full_jitter_stays_under_the_cap() -> None:
    import random

    policy = RetryPolicy(initial_delay=1.0, max_delay=10.0)
    rng = random.Random(7)
    for attempt in range(1, 8):
        cap = min(10.0, 2.0 ** (attempt - 1))
        delays = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(0.0 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jittered, not fixed


async def test_transport_errors_retried_then_transient() -> None:
    adapter, t, clock = await make([httpx.ConnectError("boom"), httpx.ReadTimeout("slow"), ok()])
    assert (await adapter.request("GET", "/x")).status_code == 200
    assert clock.sleeps == [1.0, 2.0]

    adapter, t, _ = await make(lambda r: (_ for _ in ()).throw(httpx.ConnectError("down")))
    with pytest.raises(TransientError) as info:
        await adapter.request("GET", "/x")
    assert len(t.requests) == 5
    assert "ConnectError" in (info.value.detail or "")


async def test_post_not_retried_on_5xx_unless_asked() -> None:
    adapter, t, _ = await make([httpx.Response(500), ok()])
    with pytest.raises(TransientError):
        await adapter.request("POST", "/x", json={})
    assert len(t.requests) == 1

    adapter, t, _ = await make([httpx.Response(500), ok()])
    assert (await adapter.request("POST", "/x", json={}, retry=True)).status_code == 200
    assert len(t.requests) == 2


async def test_429_retried_for_post_and_retry_after_wins_over_backoff() -> None:
    adapter, _, clock = await make(
        [
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(429, headers={"Retry-After": "0.25"}),
            ok(),
        ]
    )
    assert (await adapter.request("POST", "/x", json={})).status_code == 200
    assert clock.sleeps == [7.0, 0.25]


async def test_429_without_retry_after_backs_off() -> None:
    adapter, _, clock = await make([httpx.Response(429), httpx.Response(429), ok()])
    await adapter.request("GET", "/x")
    assert clock.sleeps == [1.0, 2.0]


async def test_retry_after_http_date_is_honoured() -> None:
    clock = FakeClock()
    when = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)
    adapter, _, clock = await make([httpx.Response(429, headers={"Retry-After": when}), ok()])
    await adapter.request("GET", "/x")
    assert clock.sleeps == [30.0]


async def test_503_retry_after_honoured() -> None:
    adapter, _, clock = await make([httpx.Response(503, headers={"Retry-After": "3"}), ok()])
    await adapter.request("GET", "/x")
    assert clock.sleeps == [3.0]


async def test_retry_after_beyond_cap_goes_to_the_queue() -> None:
    adapter, t, clock = await make([httpx.Response(429, headers={"Retry-After": "3600"}), ok()])
    with pytest.raises(RateLimitedError) as info:
        await adapter.request("GET", "/x")
    assert info.value.retry_after == 3600.0
    assert clock.sleeps == []
    assert len(t.requests) == 1


async def test_rate_limited_after_bounded_attempts() -> None:
    adapter, t, _ = await make(lambda r: httpx.Response(429, headers={"Retry-After": "1"}))
    with pytest.raises(RateLimitedError) as info:
        await adapter.request("GET", "/x")
    assert len(t.requests) == 5
    assert info.value.retry_after == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        ("Mon, 01 Jan 2024 00:01:00 GMT", 60.0),
        ("Sun, 31 Dec 2023 23:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, FakeClock().now()) == expected


async def test_401_refreshes_once_and_retries_with_new_token() -> None:
    calls = 0

    async def refresher() -> Credentials:
        nonlocal calls
        calls += 1
        return Credentials(access_token=NEW_TOKEN)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == f"Bearer {NEW_TOKEN}":
            return ok()
        return httpx.Response(401, json={"error": "expired"})

    adapter, t, _ = await make(answer, refresher=refresher)
    assert (await adapter.request("GET", "/x")).status_code == 200
    assert calls == 1
    assert t.auths == [f"Bearer {SECRET_TOKEN}", f"Bearer {NEW_TOKEN}"]
    assert adapter.credentials is not None
    assert adapter.credentials.access_token is not None
    assert adapter.credentials.access_token.get_secret_value() == NEW_TOKEN


async def test_401_after_refresh_is_auth_error_without_second_refresh() -> None:
    calls = 0

    async def refresher() -> Credentials:
        nonlocal calls
        calls += 1
        return Credentials(access_token=NEW_TOKEN)

    adapter, t, _ = await make(lambda r: httpx.Response(401), refresher=refresher)
    with pytest.raises(AuthError):
        await adapter.request("GET", "/x")
    assert calls == 1
    assert len(t.requests) == 2


async def test_refresh_failure_is_auth_error_without_token() -> None:
    async def refresher() -> Credentials:
        raise RuntimeError(f"invalid_grant for {SECRET_TOKEN}")

    adapter, t, _ = await make(lambda r: httpx.Response(401), refresher=refresher)
    with pytest.raises(AuthError) as info:
        await adapter.request("GET", "/x")
    assert len(t.requests) == 1
    text = f"{info.value} {info.value.detail} {info.value.__cause__} {info.value.__context__}"
    assert SECRET_TOKEN not in text
    assert info.value.__cause__ is None


async def test_401_without_refresher_is_auth_error() -> None:
    adapter, t, _ = await make(lambda r: httpx.Response(401))
    with pytest.raises(AuthError):
        await adapter.request("GET", "/x")
    assert len(t.requests) == 1


async def test_error_detail_redacts_credentials() -> None:
    body = {"error": f"token {SECRET_TOKEN} is not allowed here"}
    adapter, _, _ = await make([httpx.Response(400, json=body)])
    with pytest.raises(AdapterValidationError) as info:
        await adapter.request("GET", "/x?access_token=" + SECRET_TOKEN)
    assert SECRET_TOKEN not in str(info.value)
    assert SECRET_TOKEN not in (info.value.detail or "")
    assert "[redacted]" in (info.value.detail or "")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (204, None),
        (304, None),
        (400, AdapterValidationError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (405, PermanentError),
        (408, TransientError),
        (409, AdapterValidationError),
        (410, NotFoundError),
        (422, AdapterValidationError),
        (429, RateLimitedError),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (418, PermanentError),
    ],
)
def test_classification_table(status: int, error: type | None) -> None:
    adapter = Demo()
    response = httpx.Response(
        status,
        headers={"Retry-After": "2.5"},
        request=httpx.Request("GET", "https://api.demo.test/x"),
    )
    result = adapter.classify(response)
    if error is None:
        assert result is None
    else:
        assert type(result) is error
        assert result is not None and result.status_code == status
    if status == 429:
        assert isinstance(result, RateLimitedError) and result.retry_after == 2.5


async def test_classify_is_overridable() -> None:
    class Quirky(Demo):
        def classify(self, response: httpx.Response) -> Any:
            if response.status_code == 200 and response.json().get("error") == "LIMIT":
                return RateLimitedError("quirky limit", retry_after=4)
            return super().classify(response)

    adapter, _, clock = await make(
        [ok({"error": "LIMIT"}), ok({"error": None})], adapter_class=Quirky
    )
    await adapter.request("GET", "/x")
    assert clock.sleeps == [4]


async def test_quota_headers_tracked_and_hook_overridable() -> None:
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42"}
    adapter, _, _ = await make([ok(headers=headers)])
    await adapter.request("GET", "/x")
    assert adapter.rate_limit_state == {"limit": 100, "remaining": 42}

    class Sf(Demo):
        def track_rate_limit(self, response: httpx.Response) -> None:
            used, _, limit = response.headers["Sforce-Limit-Info"].partition("=")[2].partition("/")
            self.rate_limit_state.update(used=int(used), limit=int(limit))

    adapter, _, _ = await make(
        [ok(headers={"Sforce-Limit-Info": "api-usage=18/5000"})], adapter_class=Sf
    )
    await adapter.request("GET", "/x")
    assert adapter.rate_limit_state == {"used": 18, "limit": 5000}


async def test_token_bucket_spaces_requests_on_the_clock() -> None:
    clock = FakeClock()
    bucket = TokenBucket(RateLimit(requests_per_second=2, burst=2), clock)
    for _ in range(6):
        await bucket.acquire()
    # two free (the burst), then one every half second
    assert clock.sleeps == pytest.approx([0.5, 0.5, 0.5, 0.5])


async def test_token_bucket_terminates_when_float_rounding_leaves_a_hair_short() -> None:
    """At large clock readings, waiting exactly the deficit can leave the refill a hair
    under one token; the bucket must still hand out the token instead of waiting forever."""
    clock = FakeClock()
    clock.advance(1700)  # a reading at which 1/7 s refills lose a few ulps
    bucket = TokenBucket(RateLimit(requests_per_second=7, burst=1), clock)
    for _ in range(50):
        await asyncio.wait_for(bucket.acquire(), timeout=1)
    assert len(clock.sleeps) == 49
    assert all(s == pytest.approx(1 / 7, rel=1e-3) for s in clock.sleeps)


async def test_adapter_uses_its_rate_limit() -> None:
    adapter, _, clock = await make(lambda r: ok())
    adapter.rate_limit = RateLimit(requests_per_second=10, burst=1)
    await adapter.connect(Credentials(access_token=SECRET_TOKEN))
    for _ in range(3):
        await adapter.request("GET", "/x")
    assert clock.sleeps == pytest.approx([0.1, 0.1])


def test_rate_limit_from_catalog_shapes() -> None:
    assert RateLimit.from_catalog(None) is None
    assert RateLimit.from_catalog({"requests_per_second": 5, "burst": 10}) == RateLimit(5.0, 10)
    per_minute = RateLimit.from_catalog({"requests_per_minute": 600})
    assert per_minute == RateLimit(10.0, 10)

    assert RateLimit.from_catalog({"requests": 100, "window_seconds": 10}) == RateLimit(10.0, 100)
    daily = RateLimit.from_catalog({"requests": 86400, "window_seconds": 86400})
    assert daily == RateLimit(1.0, 60)
    assert RateLimit.from_catalog({"requests": None, "window_seconds": None}) is None

    class Spec:
        requests_per_second = None
        requests_per_minute = 120
        burst = 4

    assert RateLimit.from_catalog(Spec()) == RateLimit(2.0, 4)


async def test_test_connection_reports_failure_cleanly() -> None:
    adapter, _, _ = await make([ok()])
    assert (await adapter.test_connection()).ok
    adapter, _, _ = await make([httpx.Response(401, json={"msg": SECRET_TOKEN})])
    result = await adapter.test_connection()
    assert isinstance(result, ConnectionTestResult)
    assert not result.ok
    assert result.details["status_code"] == 401
    assert SECRET_TOKEN not in result.model_dump_json()


async def test_not_connected_and_no_base_url() -> None:
    with pytest.raises(PermanentError):
        await Demo().request("GET", "/x")

    class Nowhere(Demo):
        default_base_url = None

    with pytest.raises(PermanentError):
        await Nowhere().connect(Credentials(access_token="x"))


async def test_disconnect_closes_the_client() -> None:
    adapter, _, _ = await make([ok()])
    client = adapter.client
    await adapter.disconnect()
    assert client.is_closed
    with pytest.raises(PermanentError):
        _ = adapter.client
