"""The adapter SDK: the stable contract third parties build adapters on (DESIGN.md §4)."""

from castiel_sync.domain.filters import FilterCondition
from castiel_sync.sdk._adapter import IntegrationAdapter
from castiel_sync.sdk._errors import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    NotFoundError,
    NotSupportedError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.sdk._http import (
    Clock,
    HttpAdapter,
    RateLimit,
    RetryPolicy,
    SystemClock,
    TokenBucket,
    TokenRefresher,
    parse_retry_after,
)
from castiel_sync.sdk._paginate import (
    BasePaginator,
    CursorParamPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    PaginationLoopError,
    json_path,
)
from castiel_sync.sdk._registry import (
    ENTRY_POINT_GROUP,
    AdapterNotFoundError,
    available_adapters,
    get_adapter,
)
from castiel_sync.sdk._timestamps import parse_timestamp
from castiel_sync.sdk._types import (
    MAX_FETCH_LIMIT,
    ConnectionTestResult,
    Credentials,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    WebhookEvent,
    WebhookRegistration,
    WebhookRequest,
    WebhookResponse,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_FETCH_LIMIT",
    "AdapterError",
    "AdapterNotFoundError",
    "AdapterValidationError",
    "AuthError",
    "BasePaginator",
    "Clock",
    "ConnectionTestResult",
    "Credentials",
    "CursorParamPaginator",
    "ExternalRecord",
    "FetchOptions",
    "FetchResult",
    "FilterCondition",
    "HttpAdapter",
    "IntegrationAdapter",
    "LinkHeaderPaginator",
    "NextUrlPaginator",
    "NotFoundError",
    "NotSupportedError",
    "PaginationLoopError",
    "PermanentError",
    "RateLimit",
    "RateLimitedError",
    "RetryPolicy",
    "SystemClock",
    "TokenBucket",
    "TokenRefresher",
    "TransientError",
    "WebhookEvent",
    "WebhookRegistration",
    "WebhookRequest",
    "WebhookResponse",
    "available_adapters",
    "get_adapter",
    "json_path",
    "parse_retry_after",
    "parse_timestamp",
]
