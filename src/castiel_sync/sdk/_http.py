"""``HttpAdapter``: the shared HTTP work of every REST adapter, done once.

A concrete adapter declares its defaults and implements only what its API makes irregular::

    class AcmeAdapter(HttpAdapter):
        provider_id = "acme"
        default_base_url = "https://api.acme.example"
        test_connection_path = "/v1/me"
        default_rate_limit = RateLimit(requests_per_second=10, burst=20)

        async def fetch_records(self, entity, options):
            paginator = CursorParamPaginator("cursor", "next_cursor", start=options.cursor)
            response, next_cursor = await self.fetch_page(f"/v1/{entity}", paginator)
            ...

What the base does for every request (:meth:`HttpAdapter.request`):

- an ``httpx.AsyncClient`` made on ``connect()``, with timeouts; its base URL is
  ``Credentials.instance_url`` or the class's ``default_base_url``;
- a per-connection token bucket (``rate_limit``, from the catalog's defaults);
- the provider's quota headers recorded in ``rate_limit_state`` (hook: ``track_rate_limit``);
- every failure classified once into the SDK error tree (hook: ``classify``);
- on 401, exactly one token refresh through the host's ``token_refresher``, then one retry;
  a second 401 or a failed refresh raises :class:`AuthError`;
- retries with exponential backoff and full jitter on 5xx and transport errors (idempotent
  methods only, unless ``retry=True``); 429 (any method: the provider refused the request)
  and 503 wait the ``Retry-After`` they name (delta-seconds with decimals, or an HTTP
  date). A Retry-After longer than ``RetryPolicy.max_retry_after`` is not slept through:
  the :class:`RateLimitedError` goes up with its ``retry_after`` so the queue reschedules.

Hosts and tests wire an adapter, which is constructed with no arguments, through
attributes set before ``connect()`` (or :meth:`HttpAdapter.configure`):

- ``transport``: an ``httpx.AsyncBaseTransport``; ``httpx.ASGITransport(app=emulator)``
  points the adapter at an in-process emulator;
- ``token_refresher``: ``async () -> Credentials``, the host's refresh (vault + OAuth);
- ``clock``: anything with ``now()``, ``monotonic()`` and ``async sleep(s)``; tests pass
  ``castiel_sync.testing.FakeClock`` so retries never really sleep;
- ``rate_limit``: a :class:`RateLimit` (``RateLimit.from_catalog(spec.rate_limit)``).

Tokens never appear in exception messages or logs: errors carry the status, the provider's
error body (with any credential value redacted) and the URL without its query string.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol, Self

import httpx

from castiel_sync.domain.filters import FilterCondition
from castiel_sync.sdk._adapter import IntegrationAdapter
from castiel_sync.sdk._errors import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from castiel_sync.sdk._paginate import BasePaginator
from castiel_sync.sdk._types import (
    ConnectionTestResult,
    Credentials,
    ExternalRecord,
    FetchOptions,
)

logger = logging.getLogger("castiel_sync.sdk.http")

TokenRefresher = Callable[[], Awaitable[Credentials]]

_MAX_DETAIL = 500


class Clock(Protocol):
    """Time as the adapter sees it. Tests swap in ``castiel_sync.testing.FakeClock``."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``max_attempts`` tries in all, backoff ``initial * multiplier**n``
    capped at ``max_delay``, drawn uniformly from ``[0, cap]`` (full jitter)."""

    max_attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    # Longest Retry-After slept through in-process; longer ones go up to the queue.
    max_retry_after: float = 60.0
    jitter: bool = True
    idempotent_methods: frozenset[str] = field(
        default_factory=lambda: frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
    )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay after failed try number ``attempt`` (1-based)."""
        cap = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        if not self.jitter:
            return cap
        return (rng or random).uniform(0.0, cap)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``requests_per_second`` sustained, bursts up to ``burst``."""

    requests_per_second: float
    burst: int = 1

    @classmethod
    def from_catalog(cls, value: Any) -> RateLimit | None:
        """From a catalog entry's ``rate_limit`` (a model or a mapping) or None.

        Understands the catalog's ``requests`` per ``window_seconds`` (burst: the whole
        window's allowance for windows up to a minute, else a minute's worth), and
        ``requests_per_second`` / ``_minute`` / ``_hour`` with ``burst``. None when the
        entry names no numbers (the limit depends on the tenant's plan).
        """
        if value is None or isinstance(value, RateLimit):
            return value

        def get(name: str) -> Any:
            if isinstance(value, Mapping):
                return value.get(name)
            return getattr(value, name, None)

        requests, window = get("requests"), get("window_seconds")
        if requests and window:
            per_second = float(requests) / float(window)
            burst = (
                int(requests) if window <= 60 else min(int(requests), math.ceil(per_second * 60))
            )
            return cls(requests_per_second=per_second, burst=max(1, burst))
        rate: float | None = None
        for name, per in (
            ("requests_per_second", 1.0),
            ("requests_per_minute", 60.0),
            ("requests_per_hour", 3600.0),
        ):
            if get(name):
                rate = float(get(name)) / per
                break
        if not rate:
            return None
        burst = get("burst")
        return cls(requests_per_second=rate, burst=int(burst) if burst else max(1, int(rate)))


class TokenBucket:
    """The per-connection limiter. Waits through the adapter's clock."""

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        if limit.requests_per_second <= 0 or limit.burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = limit.requests_per_second
        self.capacity = float(limit.burst)
        self.clock = clock
        self._tokens = self.capacity
        self._last = clock.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await self.clock.sleep((1.0 - self._tokens) / self.rate)
                self._refill()
                # The wait covered the deficit. With large clock readings, float rounding
                # can leave the refill a hair short; waiting again would never end.
                self._tokens = max(self._tokens, 1.0)
            self._tokens -= 1.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (decimals accepted) or
    an HTTP date (RFC 9110 §10.2.3). None when absent or unreadable; never negative."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def safe_url(url: httpx.URL | str) -> str:
    """A URL fit for logs and errors: no query string, no user info."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(query=None, fragment=None, username=None, password=None))


class HttpAdapter(IntegrationAdapter):
    """Base for adapters that speak HTTP. See the module docstring."""

    default_base_url: ClassVar[str | None] = None
    timeout: ClassVar[httpx.Timeout] = httpx.Timeout(30.0, connect=10.0)
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    default_rate_limit: ClassVar[RateLimit | None] = None
    # GET here proves the credentials work (``test_connection``).
    test_connection_path: ClassVar[str | None] = None
    default_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}
    # Quota headers read by the default ``track_rate_limit``: state key -> header names.
    rate_limit_headers: ClassVar[dict[str, tuple[str, ...]]] = {
        "limit": ("X-RateLimit-Limit", "RateLimit-Limit"),
        "remaining": ("X-RateLimit-Remaining", "RateLimit-Remaining"),
        "reset": ("X-RateLimit-Reset", "RateLimit-Reset"),
    }
    # True when ``fetch_records`` applies ``eq`` pull filters: ``find_record`` then looks
    # records up through it. Leave it False when the fetch ignores filters (a look-up
    # would "find" any record); ``find_record`` then stays NotSupported.
    find_by_fetch: ClassVar[bool] = False

    def __init__(self) -> None:
        self.transport: httpx.AsyncBaseTransport | None = None
        self.token_refresher: TokenRefresher | None = None
        self.clock: Clock = SystemClock()
        self.rate_limit: RateLimit | None = type(self).default_rate_limit
        self.rng = random.Random()  # noqa: S311 - jitter only
        self.rate_limit_state: dict[str, Any] = {}
        self.credentials: Credentials | None = None
        self._client: httpx.AsyncClient | None = None
        self._limiter: TokenBucket | None = None

    # -- wiring ------------------------------------------------------------------------

    def configure(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        token_refresher: TokenRefresher | None = None,
        clock: Clock | None = None,
        rate_limit: RateLimit | None = None,
    ) -> Self:
        """Set the host's wiring (the arguments given); call before ``connect()``."""
        if transport is not None:
            self.transport = transport
        if token_refresher is not None:
            self.token_refresher = token_refresher
        if clock is not None:
            self.clock = clock
        if rate_limit is not None:
            self.rate_limit = rate_limit
        return self

    @property
    def display_name(self) -> str:
        return getattr(self, "provider_id", None) or type(self).__name__

    def base_url_for(self, credentials: Credentials) -> str:
        base = credentials.instance_url or self.default_base_url
        if not base:
            raise PermanentError(
                f"no API address is configured for {self.display_name}",
                detail="Credentials.instance_url is empty and the adapter has no default",
            )
        return base

    def auth_headers(self, credentials: Credentials) -> dict[str, str]:
        """Headers that authenticate a request. Override for API-key schemes."""
        if credentials.access_token is not None:
            token = credentials.access_token.get_secret_value()
            return {"Authorization": f"{credentials.token_type or 'Bearer'} {token}"}
        if credentials.api_key is not None:
            return {"Authorization": f"Bearer {credentials.api_key.get_secret_value()}"}
        return {}

    async def connect(self, credentials: Credentials) -> None:
        if self._client is not None:
            await self._client.aclose()
        self.credentials = credentials
        self.rate_limit_state = {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url_for(credentials),
            timeout=self.timeout,
            transport=self.transport,
            headers=self.default_headers,
        )
        self._limiter = TokenBucket(self.rate_limit, self.clock) if self.rate_limit else None

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None
        self._limiter = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise PermanentError(f"the {self.display_name} adapter is not connected")
        return self._client

    async def test_connection(self) -> ConnectionTestResult:
        """GET ``test_connection_path``; failures come back as ``ok=False``, not raised."""
        try:
            await self.request("GET", self.test_connection_path or "/")
        except AdapterError as exc:
            return ConnectionTestResult(
                ok=False,
                message=exc.user_message,
                details={"error": type(exc).__name__, "status_code": exc.status_code},
            )
        return ConnectionTestResult(ok=True, message=f"connected to {self.display_name}")

    async def find_record(self, entity: str, match: dict[str, Any]) -> ExternalRecord | None:
        """The first record whose fields equal ``match`` (see ``find_by_fetch``). Uses the
        adapter's own filtered fetch, so names and literals are validated and escaped."""
        if not self.find_by_fetch:
            return await super().find_record(entity, match)
        filters = [FilterCondition(field=k, op="eq", value=v) for k, v in match.items()]
        page = await self.fetch_records(entity, FetchOptions(filters=filters, limit=1))
        return page.records[0] if page.records else None

    # -- hooks -------------------------------------------------------------------------

    def retry_after(self, response: httpx.Response) -> float | None:
        """Seconds the provider asks us to wait. Override for provider-specific headers."""
        return parse_retry_after(response.headers.get("Retry-After"), self.clock.now())

    def track_rate_limit(self, response: httpx.Response) -> None:
        """Record the provider's quota headers in ``rate_limit_state``."""
        for key, names in self.rate_limit_headers.items():
            for name in names:
                value = response.headers.get(name)
                if value is not None:
                    self.rate_limit_state[key] = _number(value)
                    break

    @staticmethod
    def json_body(response: httpx.Response) -> Any:
        """The decoded JSON body, or None when it is empty or not JSON: for reading a
        provider's error body, which may be anything, without raising."""
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            return None

    def error_detail(self, response: httpx.Response) -> str | None:
        """Internal detail for an error: the provider's error body, shortened and redacted."""
        try:
            text = response.text
        except (UnicodeDecodeError, httpx.ResponseNotRead):
            return None
        return self.redact(text[:_MAX_DETAIL]) or None

    def classify(self, response: httpx.Response) -> AdapterError | None:
        """The one place a response becomes an error (None: a success). Override to read a
        provider's error body (e.g. Salesforce ``errorCode``) and call ``super()``."""
        status = response.status_code
        if status < 400:
            return None
        name = self.display_name
        detail = self.error_detail(response)
        kw: dict[str, Any] = {"detail": detail, "status_code": status}
        if status == 401:
            return AuthError(f"{name} rejected the credentials", **kw)
        if status == 403:
            return AuthError(f"{name} denied access to this resource", **kw)
        if status in (404, 410):
            return NotFoundError(f"{name} has no such resource", **kw)
        if status in (400, 409, 422):
            return AdapterValidationError(f"{name} rejected the request as invalid", **kw)
        if status == 429:
            return RateLimitedError(
                f"{name} is rate limiting requests", retry_after=self.retry_after(response), **kw
            )
        if status == 408 or status >= 500:
            return TransientError(
                f"{name} is temporarily unavailable", retry_after=self.retry_after(response), **kw
            )
        return PermanentError(f"{name} refused the request", **kw)

    def needs_token_refresh(self, response: httpx.Response, error: AdapterError) -> bool:
        """Whether ``error`` means an expired access token (default: any 401)."""
        return isinstance(error, AuthError) and response.status_code == 401

    def redact(self, text: str) -> str:
        """``text`` with every credential value of this connection replaced."""
        creds = self.credentials
        if creds is None:
            return text
        for secret in (creds.access_token, creds.refresh_token, creds.api_key):
            value = secret.get_secret_value() if secret is not None else ""
            if len(value) >= 4:
                text = text.replace(value, "[redacted]")
        return text

    # -- requests ----------------------------------------------------------------------

    async def request(
        self, method: str, url: str, *, retry: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request through limiter, refresh, retry and classification.

        ``retry`` overrides whether 5xx and transport errors are retried (default: only
        for idempotent methods). Returns a successful response; raises ``AdapterError``.
        """
        method = method.upper()
        policy = self.retry_policy
        may_retry = method in policy.idempotent_methods if retry is None else retry
        user_headers = dict(kwargs.pop("headers", None) or {})
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            if self._limiter is not None:
                await self._limiter.acquire()
            headers = {**self.auth_headers(self._require_credentials()), **user_headers}
            try:
                response = await self.client.request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                where = f"{method} {safe_url(self.client.base_url.join(url))}"
                logger.info("transport error %s on %s (try %d)", type(exc).__name__, where, attempt)
                if may_retry and attempt < policy.max_attempts:
                    await self.clock.sleep(policy.backoff(attempt, self.rng))
                    continue
                raise TransientError(
                    f"could not reach {self.display_name}",
                    detail=f"{type(exc).__name__} on {where}",
                ) from None
            logger.debug(
                "%s %s -> %d", method, safe_url(response.request.url), response.status_code
            )
            self.track_rate_limit(response)
            error = self.classify(response)
            if error is None:
                return response
            if not refreshed and self.needs_token_refresh(response, error):
                if self.token_refresher is None:
                    raise error
                refreshed = True
                await self._refresh_token()
                attempt -= 1  # the rejected try does not use up a retry
                continue
            delay = self._retry_delay(error, attempt, may_retry)
            if delay is None:
                raise error
            logger.info(
                "%s from %s %s; retrying in %.2fs",
                response.status_code,
                method,
                safe_url(response.request.url),
                delay,
            )
            await self.clock.sleep(delay)

    async def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        """``request`` and decode the JSON body; None for an empty body (204)."""
        response = await self.request(method, url, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def fetch_page(
        self,
        url: str,
        paginator: BasePaginator,
        *,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, str | None]:
        """One page at ``paginator.current``; returns it and the next position (or None).
        Build the paginator with ``start=options.cursor`` so a repeated cursor is caught."""
        page_url, page_params = paginator.prepare(url, dict(params or {}))
        response = await self.request(method, page_url, params=page_params or None, **kwargs)
        return response, paginator.advance(response)

    async def iter_pages(
        self,
        method: str,
        url: str,
        paginator: BasePaginator,
        *,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Every page from ``paginator.current`` to the end."""
        while True:
            response, position = await self.fetch_page(
                url, paginator, method=method, params=params, **kwargs
            )
            yield response
            if position is None:
                return

    # -- internals ---------------------------------------------------------------------

    def _require_credentials(self) -> Credentials:
        if self.credentials is None:
            raise PermanentError(f"the {self.display_name} adapter is not connected")
        return self.credentials

    async def _refresh_token(self) -> None:
        assert self.token_refresher is not None
        failure: str | None = None
        try:
            credentials = await self.token_refresher()
        except AdapterError as exc:
            failure = f"{type(exc).__name__}: {self.redact(exc.user_message)}"
        except Exception as exc:
            failure = type(exc).__name__
        if failure is not None:
            # Raised outside the handler so the refresher's exception, which may quote a
            # token, is neither chained nor kept as context.
            raise AuthError(
                f"the {self.display_name} access token could not be refreshed",
                detail=failure,
                status_code=401,
            )
        self.credentials = credentials
        if credentials.instance_url and self._client is not None:
            # Through base_url_for, as connect() does: an adapter may normalise the address
            # (Dataverse takes the Web API endpoint and keeps the org URL).
            self._client.base_url = httpx.URL(self.base_url_for(credentials))

    def _retry_delay(self, error: AdapterError, attempt: int, may_retry: bool) -> float | None:
        policy = self.retry_policy
        if attempt >= policy.max_attempts:
            return None
        if isinstance(error, RateLimitedError):
            pass  # refused, not processed: safe to resend whatever the method
        elif not (isinstance(error, TransientError) and may_retry):
            return None
        wait = getattr(error, "retry_after", None)
        if wait is None:
            return policy.backoff(attempt, self.rng)
        return None if wait > policy.max_retry_after else wait
