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
from castiel_sync.sdk._registry import (
    ENTRY_POINT_GROUP,
    AdapterNotFoundError,
    available_adapters,
    get_adapter,
)
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
    "ConnectionTestResult",
    "Credentials",
    "ExternalRecord",
    "FetchOptions",
    "FetchResult",
    "FilterCondition",
    "IntegrationAdapter",
    "NotFoundError",
    "NotSupportedError",
    "PermanentError",
    "RateLimitedError",
    "TransientError",
    "WebhookEvent",
    "WebhookRegistration",
    "WebhookRequest",
    "WebhookResponse",
    "available_adapters",
    "get_adapter",
]
