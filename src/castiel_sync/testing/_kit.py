"""The provider emulator kit: a base for ASGI emulators of provider APIs.

A provider emulator subclasses :class:`ProviderEmulator`, declares its routes (Starlette)
and its error format, and gets for free:

- ``store``: an in-memory record store per entity (:class:`RecordStore`) whose timestamps
  come from ``clock``, a :class:`FakeClock` the test advances;
- ``faults``: switches for the next requests (:class:`Faults`): 429 with Retry-After
  (seconds or an HTTP date), 5xx, slow responses, dropped connections, expired tokens;
- bearer-token checking against tokens it (or an attached ``OAuthEmulator``) issued;
  an expired or unknown token gets the subclass's ``expired_token_response()``;
- ``requests``: a log of every request with the status it got, for assertions;
- ``transport()`` for ``httpx.ASGITransport``; the emulator is itself an ASGI app, so
  ``uvicorn.run(emulator)`` serves it on a loopback port for demos and benchmarks;
- :func:`send_webhook` and ``build_webhook`` to deliver a signed webhook (the subclass
  supplies ``sign_webhook``, the provider's own scheme).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from castiel_sync.sdk import Credentials, WebhookRequest

if TYPE_CHECKING:
    from castiel_sync.testing.oauth import OAuthEmulator

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told. ``sleep`` advances it at once and is recorded in
    ``sleeps``, so adapters' retries and emulators' slow responses take no real time."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = start
        self._monotonic = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


@dataclass
class StoredRecord:
    id: str
    data: dict[str, Any]
    created_at: datetime
    modified_at: datetime
    deleted: bool = False


class EntityStore:
    """One entity's records, in insertion order. Deletes are soft (tombstones), so the
    emulator can report them to incremental fetches."""

    def __init__(self, name: str, clock: FakeClock, id_factory: Callable[[], str]) -> None:
        self.name = name
        self.clock = clock
        self._id_factory = id_factory
        self._records: dict[str, StoredRecord] = {}

    def create(self, data: Mapping[str, Any], *, id: str | None = None) -> StoredRecord:
        now = self.clock.now()
        record_id = id or self._id_factory()
        if record_id in self._records and not self._records[record_id].deleted:
            raise KeyError(f"{self.name} {record_id} already exists")
        record = StoredRecord(record_id, dict(data), now, now)
        self._records[record_id] = record
        return record

    def get(self, record_id: str, *, include_deleted: bool = False) -> StoredRecord | None:
        record = self._records.get(record_id)
        if record is None or (record.deleted and not include_deleted):
            return None
        return record

    def update(self, record_id: str, changes: Mapping[str, Any]) -> StoredRecord:
        record = self.get(record_id)
        if record is None:
            raise KeyError(record_id)
        record.data.update(changes)
        record.modified_at = self.clock.now()
        return record

    def delete(self, record_id: str) -> StoredRecord:
        record = self.get(record_id)
        if record is None:
            raise KeyError(record_id)
        record.deleted = True
        record.modified_at = self.clock.now()
        return record

    def all(
        self, *, include_deleted: bool = False, since: datetime | None = None
    ) -> list[StoredRecord]:
        """Records ordered by (modified_at, id): a stable keyset order for cursors."""
        rows = [
            r
            for r in self._records.values()
            if (include_deleted or not r.deleted) and (since is None or r.modified_at >= since)
        ]
        return sorted(rows, key=lambda r: (r.modified_at, r.id))

    def __len__(self) -> int:
        return sum(1 for r in self._records.values() if not r.deleted)

    def __iter__(self) -> Iterator[StoredRecord]:
        return iter(self.all())


class RecordStore:
    """Entity name -> :class:`EntityStore`, created on first use."""

    def __init__(self, clock: FakeClock, id_factory: Callable[[], str] | None = None) -> None:
        self.clock = clock
        counter = itertools.count(1)
        self._id_factory = id_factory or (lambda: f"{next(counter):06d}")
        self._entities: dict[str, EntityStore] = {}

    def __getitem__(self, entity: str) -> EntityStore:
        if entity not in self._entities:
            self._entities[entity] = EntityStore(entity, self.clock, self.id_factory_for(entity))
        return self._entities[entity]

    def id_factory_for(self, entity: str) -> Callable[[], str]:
        """New ids for ``entity``'s records. Override when ids depend on the entity
        (Salesforce ids start with the object's key prefix)."""
        return self._id_factory

    def __contains__(self, entity: object) -> bool:
        return entity in self._entities


@dataclass
class _Fault:
    kind: str
    remaining: int
    options: dict[str, Any]
    # Only requests whose path starts with this are hit (None: every request).
    path_prefix: str | None = None


class Faults:
    """Switches for what the next requests get. Each applies to the next ``times``
    matching requests, in the order the switches were set."""

    def __init__(self) -> None:
        self._queue: list[_Fault] = []
        # Tokens become invalid once this many more authenticated requests succeed.
        self.expire_tokens_after: int | None = None

    def rate_limit(
        self,
        times: int = 1,
        *,
        retry_after: float | str | datetime | None = 1,
        status: int = 429,
        path_prefix: str | None = None,
    ) -> None:
        """429 (or 503) with ``Retry-After``: seconds (``1.5`` keeps its decimals), an HTTP
        date (a ``datetime``, formatted for you), a raw string, or None for no header."""
        self._add("rate_limit", times, path_prefix, retry_after=retry_after, status=status)

    def server_error(
        self, times: int = 1, *, status: int = 500, path_prefix: str | None = None
    ) -> None:
        self._add("server_error", times, path_prefix, status=status)

    def slow(self, times: int = 1, *, seconds: float = 5.0, path_prefix: str | None = None) -> None:
        """Delay the response by ``seconds`` on the emulator's clock (real time only when
        the emulator runs on a real clock)."""
        self._add("slow", times, path_prefix, seconds=seconds)

    def disconnect(self, times: int = 1, *, path_prefix: str | None = None) -> None:
        """Drop the connection: through ``ASGITransport`` the client sees ``httpx.ReadError``."""
        self._add("disconnect", times, path_prefix)

    def expire_tokens(self, after: int = 0) -> None:
        """Invalidate every access token issued so far, after ``after`` more authenticated
        requests (``after=1``: the next page succeeds, the one after gets 401)."""
        self.expire_tokens_after = after

    def clear(self) -> None:
        self._queue.clear()
        self.expire_tokens_after = None

    def _add(self, kind: str, times: int, path_prefix: str | None, **options: Any) -> None:
        self._queue.append(_Fault(kind, times, options, path_prefix))

    def take(self, path: str) -> _Fault | None:
        for fault in self._queue:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._queue.remove(fault)
                return fault
        return None


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: httpx.Headers
    body: bytes
    status: int | None = None
    fault: str | None = None

    @property
    def params(self) -> httpx.QueryParams:
        return httpx.QueryParams(self.query)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _TokenInfo:
    expires_at: datetime | None
    scopes: set[str] = field(default_factory=set)


class ProviderEmulator:
    """Base for an ASGI emulator of one provider's API. See the module docstring.

    Subclasses implement ``routes()`` and, to be faithful, ``error_response`` (the
    provider's error body), and ``sign_webhook`` when the provider signs webhooks.
    """

    name: ClassVar[str] = "provider"
    # Paths served without a bearer token.
    public_paths: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        oauth: OAuthEmulator | None = None,
        base_url: str | None = None,
        webhook_secret: str = "emulator-webhook-secret",  # noqa: S107 - a test fixture value
    ) -> None:
        self.clock = clock or (oauth.clock if oauth is not None else FakeClock())
        self.oauth = oauth
        self.base_url = base_url or f"https://{self.name.replace('_', '-')}.emulator.test"
        self.webhook_secret = webhook_secret
        self.store = RecordStore(self.clock, self.new_id)
        self.faults = Faults()
        self.requests: list[RecordedRequest] = []
        self._tokens: dict[str, _TokenInfo] = {}
        self._revoked_before: datetime | None = None
        self.app = Starlette(routes=self.routes())

    # -- what a subclass declares ----------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    def new_id(self) -> str:
        return uuid.uuid4().hex[:18]

    def error_response(self, status: int, code: str, message: str) -> Response:
        """An error in the provider's own format."""
        return JSONResponse({"error": code, "message": message}, status_code=status)

    def expired_token_response(self) -> Response:
        return self.error_response(401, "invalid_token", "The access token expired")

    def rate_limited_response(self, retry_after: str | None, status: int) -> Response:
        response = self.error_response(status, "rate_limited", "Too many requests")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def server_error_response(self, status: int) -> Response:
        return self.error_response(status, "server_error", "An internal error occurred")

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        """The headers that sign ``body`` as the provider does; empty: no webhooks."""
        return {}

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any | None:
        """The provider's webhook body announcing ``action`` on ``record``; None: no
        webhooks. The conformance suite signs it with ``sign_webhook`` and delivers it."""
        return None

    def authenticate(self, request: Request) -> bool:
        """Whether the request carries a valid access token (Bearer by default)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_is_valid(token)

    # -- tokens --------------------------------------------------------------------------

    def issue_token(self, lifetime: float | None = 3600.0) -> str:
        """A new valid access token (through the attached OAuth emulator when there is one)."""
        if self.oauth is not None:
            return self.oauth.mint_access_token(lifetime=lifetime)
        token = "emu_" + secrets.token_urlsafe(24)
        expires = self.clock.now() + timedelta(seconds=lifetime) if lifetime else None
        self._tokens[token] = _TokenInfo(expires)
        return token

    def token_is_valid(self, token: str) -> bool:
        if self.oauth is not None:
            return self.oauth.access_token_is_valid(token)
        info = self._tokens.get(token)
        return info is not None and (info.expires_at is None or info.expires_at > self.clock.now())

    def expire_all_tokens(self) -> None:
        if self.oauth is not None:
            self.oauth.expire_access_tokens()
        self._tokens.clear()

    def credentials(self, **extra: Any) -> Credentials:
        """Credentials with a fresh token that point at this emulator."""
        return Credentials(access_token=self.issue_token(), instance_url=self.base_url, **extra)

    # -- transport -----------------------------------------------------------------------

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport(), base_url=self.base_url, **kwargs)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        ]

    def statuses(self) -> list[int | None]:
        return [r.status for r in self.requests]

    # -- webhooks ------------------------------------------------------------------------

    def build_webhook(
        self,
        payload: Any,
        *,
        url: str = "https://castiel.example/webhooks/in",
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookRequest:
        """A signed delivery as the receiver would see it, without sending it."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        signed = {
            "content-type": "application/json",
            **self.sign_webhook(body, secret or self.webhook_secret, url),
        }
        return WebhookRequest(
            method="POST", url=url, headers={**signed, **(headers or {})}, body=body
        )

    async def send_webhook(
        self,
        target: str | ASGIApp | httpx.AsyncClient,
        payload: Any,
        *,
        url: str = "https://castiel.example/webhooks/in",
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Sign ``payload`` as the provider does and POST it to ``target``."""
        delivery = self.build_webhook(payload, url=url, secret=secret, headers=headers)
        return await send_webhook(target, delivery)

    # -- ASGI ----------------------------------------------------------------------------

    def requires_auth(self, request: Request) -> bool:
        return not any(request.url.path.startswith(p) for p in self.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        body = await request.body()
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=httpx.Headers(request.headers.raw),
            body=body,
        )
        self.requests.append(record)
        response = await self._before(request, record)
        if response is not None:
            record.status = response.status_code
            await response(scope, receive, send)
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        await self.app(scope, replay, capture)

    async def _before(self, request: Request, record: RecordedRequest) -> Response | None:
        fault = self.faults.take(request.url.path)
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "slow":
                await self.clock.sleep(fault.options["seconds"])
            elif fault.kind == "disconnect":
                record.status = None
                raise httpx.ReadError("the emulator dropped the connection")
            elif fault.kind == "rate_limit":
                return self.rate_limited_response(
                    _retry_after_header(fault.options["retry_after"]), fault.options["status"]
                )
            elif fault.kind == "server_error":
                return self.server_error_response(fault.options["status"])
        if not self.requires_auth(request):
            return None
        if not self.authenticate(request):
            return self.expired_token_response()
        expiring = self.faults.expire_tokens_after
        if expiring is not None:
            if expiring <= 0:
                self.faults.expire_tokens_after = None
                self.expire_all_tokens()
                return self.expired_token_response()
            self.faults.expire_tokens_after = expiring - 1
        return None


def _retry_after_header(value: float | str | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return format_datetime(value.astimezone(UTC), usegmt=True)
    return str(int(value)) if float(value).is_integer() else str(value)


async def send_webhook(
    target: str | ASGIApp | httpx.AsyncClient, delivery: WebhookRequest
) -> httpx.Response:
    """POST ``delivery`` (exact body and headers) to a URL, an ASGI app, or a client."""
    headers = dict(delivery.headers.items())
    if isinstance(target, httpx.AsyncClient):
        return await target.request(
            delivery.method, delivery.url, headers=headers, content=delivery.body
        )
    if isinstance(target, str):
        async with httpx.AsyncClient() as client:
            return await client.request(
                delivery.method, target, headers=headers, content=delivery.body
            )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=target)) as client:
        return await client.request(
            delivery.method, delivery.url, headers=headers, content=delivery.body
        )
