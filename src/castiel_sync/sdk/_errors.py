"""The adapter error tree. Every failure is classified once, here, and the queue acts on
the class (retry with delay, refresh and retry, or dead-letter).

    AdapterError
    ├── AuthError              credentials rejected; one refresh then retry, else fatal
    ├── RateLimitedError       retryable after ``retry_after`` seconds
    ├── NotFoundError          the record or resource does not exist
    ├── AdapterValidationError the provider rejected our data (fix config or data)
    ├── TransientError         5xx, timeouts, transport errors: retry with backoff
    ├── PermanentError         anything else that retrying cannot fix
    └── NotSupportedError      the provider or adapter lacks this capability

``user_message`` is safe to show a tenant; ``detail`` may carry provider error codes, never
credentials.
"""

from __future__ import annotations


class AdapterError(Exception):
    retryable: bool = False

    def __init__(
        self, user_message: str, *, detail: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.detail = detail
        self.status_code = status_code


class AuthError(AdapterError):
    pass


class RateLimitedError(AdapterError):
    retryable = True

    def __init__(
        self,
        user_message: str = "rate limited by the provider",
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        status_code: int | None = 429,
    ) -> None:
        super().__init__(user_message, detail=detail, status_code=status_code)
        self.retry_after = retry_after


class NotFoundError(AdapterError):
    pass


class AdapterValidationError(AdapterError):
    pass


class TransientError(AdapterError):
    retryable = True

    def __init__(
        self,
        user_message: str = "the provider is temporarily unavailable",
        *,
        retry_after: float | None = None,
        detail: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(user_message, detail=detail, status_code=status_code)
        # A 503's Retry-After, when the provider sent one.
        self.retry_after = retry_after


class PermanentError(AdapterError):
    pass


class NotSupportedError(AdapterError):
    pass
