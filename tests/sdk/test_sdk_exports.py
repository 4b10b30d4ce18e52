"""The public surface of castiel_sync.sdk and castiel_sync.testing is pinned."""

from __future__ import annotations

import castiel_sync.sdk as sdk
import castiel_sync.testing as testing

SDK_NAMES = {
    "ENTRY_POINT_GROUP", "MAX_FETCH_LIMIT", "AdapterError", "AdapterNotFoundError",
    "AdapterValidationError", "AuthError", "BasePaginator", "Clock", "ConnectionTestResult",
    "Credentials", "CursorParamPaginator", "ExternalRecord", "FetchOptions", "FetchResult",
    "FilterCondition", "HttpAdapter", "IntegrationAdapter", "LinkHeaderPaginator",
    "NextUrlPaginator", "NotFoundError", "NotSupportedError", "PaginationLoopError",
    "PermanentError", "RateLimit", "RateLimitedError", "RetryPolicy", "SystemClock",
    "TokenBucket", "TokenRefresher", "TransientError", "WebhookEvent", "WebhookRegistration",
    "WebhookRequest", "WebhookResponse", "available_adapters", "get_adapter", "json_path",
    "parse_retry_after", "parse_timestamp",
}  # fmt: skip

TESTING_NAMES = {
    "CLIENT_SECRET_BASIC", "CLIENT_SECRET_POST", "EntityStore", "FakeClock", "Faults",
    "OAuthClient", "OAuthEmulator", "ProviderEmulator", "RecordStore", "RecordedRequest",
    "StoredRecord", "TokenCall", "s256", "send_webhook",
}  # fmt: skip


def test_sdk_exports() -> None:
    assert SDK_NAMES <= set(sdk.__all__)  # additions are fine; removals break adapters
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None


def test_testing_exports() -> None:
    assert TESTING_NAMES <= set(testing.__all__)
    for name in testing.__all__:
        assert getattr(testing, name) is not None
