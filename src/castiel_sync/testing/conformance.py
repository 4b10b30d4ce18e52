"""The adapter conformance suite: one class any adapter (a third party's too) runs against
its emulator with one line::

    from castiel_sync.testing.conformance import AdapterConformance

    class TestAcmeConformance(AdapterConformance):
        adapter_class = AcmeAdapter          # or a provider id: found through get_adapter()
        emulator_factory = AcmeEmulator      # a class or function -> ProviderEmulator,
                                             # or "package.module:Name"
        entity = "contacts"

pytest collects the inherited tests. They seed the emulator's store (entity
``emulator_entity``, default ``entity``) with ``sample_record(n)`` and check:

- connect + ``test_connection`` succeed; bad credentials give ``ok=False`` and
  ``AuthError`` from a fetch, with the token in neither;
- a full fetch pages through everything with no duplicates, no page above ``limit``;
- an incremental fetch (``since``) returns exactly the records changed after it, and the
  returned high-water mark loses nothing;
- deletions surface as ``deleted=True`` (``supports_deletions``);
- create/update/delete round-trip through the emulator, missing ids give
  ``NotFoundError`` (when the adapter overrides them);
- a burst of 429s, 5xx errors and a dropped connection are absorbed;
- an access token expiring mid-fetch is refreshed exactly once;
- a signed webhook delivery is accepted, a tampered body or wrong secret refused, and the
  delivery parses to an event for the record (when adapter and emulator do webhooks).

Adapters on :class:`HttpAdapter` are wired to the emulator for you (``transport``,
``clock``, ``token_refresher``); others override :meth:`AdapterConformance.wire`.
Override ``sample_record``, ``changed_fields``, ``credentials`` or ``assert_stored`` where
a provider's data differs.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from castiel_sync.sdk import (
    AuthError,
    Credentials,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    IntegrationAdapter,
    NotFoundError,
    WebhookRequest,
    get_adapter,
)
from castiel_sync.testing._kit import EntityStore, ProviderEmulator, StoredRecord, send_webhook

MAX_PAGES = 200


class RefreshCounter:
    """The host's token refresher, as the suite plays it: new credentials from the
    emulator, counted."""

    def __init__(self, make: Callable[[], Credentials]) -> None:
        self.make = make
        self.calls = 0

    async def __call__(self) -> Credentials:
        self.calls += 1
        return self.make()


def _static(cls: type, name: str) -> Any:
    """A class attribute as written (a function stays a function, not a bound method)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            return value.__func__ if isinstance(value, staticmethod | classmethod) else value
    raise AttributeError(f"{cls.__name__} must set {name!r} (see AdapterConformance)")


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _overrides(adapter: IntegrationAdapter, name: str) -> bool:
    return getattr(type(adapter), name) is not getattr(IntegrationAdapter, name)


class AdapterConformance:
    """Inherit in a ``Test*`` class and set the three attributes. See the module docstring."""

    adapter_class: ClassVar[type[IntegrationAdapter] | str]
    emulator_factory: ClassVar[Callable[[], ProviderEmulator] | str]
    entity: ClassVar[str]
    emulator_entity: ClassVar[str | None] = None
    page_size: ClassVar[int] = 3
    records_to_seed: ClassVar[int] = 10
    supports_deletions: ClassVar[bool] = True
    webhook_secret: ClassVar[str] = "conformance-webhook-secret"  # noqa: S105 - test value

    # -- hooks ---------------------------------------------------------------------------

    def sample_record(self, n: int) -> dict[str, Any]:
        """Provider-native fields of a record to seed or create."""
        return {"name": f"Conformance record {n}"}

    def changed_fields(self, n: int) -> dict[str, Any]:
        return {"name": f"Changed record {n}"}

    def credentials(self, emulator: ProviderEmulator) -> Credentials:
        return emulator.credentials()

    def bad_credentials(self, emulator: ProviderEmulator) -> Credentials:
        return Credentials(
            access_token="conformance-invalid-token-0042",  # noqa: S106 - deliberately wrong
            instance_url=emulator.base_url,
        )

    def wire(
        self,
        adapter: IntegrationAdapter,
        emulator: ProviderEmulator,
        refresher: RefreshCounter | None,
    ) -> None:
        """Point ``adapter`` at ``emulator``. Override for adapters not on HttpAdapter."""
        if not isinstance(adapter, HttpAdapter):
            raise TypeError(
                f"{type(adapter).__name__} is not an HttpAdapter: override wire() to point it "
                "at the emulator"
            )
        adapter.configure(transport=emulator.transport(), clock=emulator.clock)
        adapter.token_refresher = refresher

    def assert_stored(self, stored: dict[str, Any], expected: dict[str, Any]) -> None:
        """That the emulator holds ``expected`` (default: a subset of the stored data)."""
        assert {k: stored.get(k) for k in expected} == expected

    # -- plumbing ------------------------------------------------------------------------

    def resolve_adapter_class(self) -> type[IntegrationAdapter]:
        ref = _static(type(self), "adapter_class")
        if isinstance(ref, str):
            return _load(ref) if ":" in ref else get_adapter(ref)
        return ref  # type: ignore[no-any-return]

    def make_emulator(self) -> ProviderEmulator:
        factory = _static(type(self), "emulator_factory")
        if isinstance(factory, str):
            factory = _load(factory)
        emulator = factory()
        assert isinstance(emulator, ProviderEmulator)
        emulator.webhook_secret = self.webhook_secret
        return emulator  # type: ignore[no-any-return]

    def make_adapter(
        self, emulator: ProviderEmulator, refresher: RefreshCounter | None = None
    ) -> IntegrationAdapter:
        adapter = self.resolve_adapter_class()()
        self.wire(adapter, emulator, refresher)
        return adapter

    def store(self, emulator: ProviderEmulator) -> EntityStore:
        return emulator.store[self.emulator_entity or self.entity]

    def seed(self, emulator: ProviderEmulator, count: int) -> list[StoredRecord]:
        """``count`` records; every other one shares its predecessor's timestamp, so
        cursors must break ties."""
        store = self.store(emulator)
        records = []
        for n in range(count):
            if n % 2 == 0:
                emulator.clock.advance(1)
            records.append(store.create(self.sample_record(n)))
        emulator.clock.advance(1)
        return records

    async def fetch_all(
        self, adapter: IntegrationAdapter, **options: Any
    ) -> tuple[list[ExternalRecord], list[FetchResult]]:
        pages: list[FetchResult] = []
        cursor = None
        for _ in range(MAX_PAGES):
            result = await adapter.fetch_records(
                self.entity, FetchOptions(cursor=cursor, limit=self.page_size, **options)
            )
            pages.append(result)
            if not result.has_more:
                break
            assert result.next_cursor, "has_more without a next_cursor"
            cursor = result.next_cursor
        else:
            pytest.fail(f"fetch did not finish within {MAX_PAGES} pages")
        return [r for page in pages for r in page.records], pages

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture
    def emulator(self) -> ProviderEmulator:
        return self.make_emulator()

    @pytest.fixture
    def refresher(self, emulator: ProviderEmulator) -> RefreshCounter:
        return RefreshCounter(lambda: self.credentials(emulator))

    @pytest.fixture
    async def adapter(
        self, emulator: ProviderEmulator, refresher: RefreshCounter
    ) -> AsyncIterator[IntegrationAdapter]:
        adapter = self.make_adapter(emulator, refresher)
        await adapter.connect(self.credentials(emulator))
        yield adapter
        await adapter.disconnect()

    # -- the suite -----------------------------------------------------------------------

    async def test_connect_and_test_connection(self, adapter: IntegrationAdapter) -> None:
        result = await adapter.test_connection()
        assert result.ok, result.message

    async def test_bad_credentials_fail_cleanly(self, emulator: ProviderEmulator) -> None:
        bad = self.bad_credentials(emulator)
        secret = bad.access_token.get_secret_value() if bad.access_token else "\0"
        adapter = self.make_adapter(emulator, None)
        await adapter.connect(bad)
        try:
            result = await adapter.test_connection()
            assert not result.ok
            assert secret not in result.model_dump_json()
            with pytest.raises(AuthError) as info:
                await adapter.fetch_records(self.entity, FetchOptions(limit=self.page_size))
            error = info.value
            assert secret not in f"{error} {error.user_message} {error.detail}"
        finally:
            await adapter.disconnect()

    async def test_full_fetch_pages_through_everything(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        seeded = self.seed(emulator, self.records_to_seed)
        records, pages = await self.fetch_all(adapter)
        ids = [r.external_id for r in records]
        assert len(ids) == len(set(ids)), "a record came twice"
        assert set(ids) == {r.id for r in seeded}
        assert all(len(page.records) <= self.page_size for page in pages)
        assert len(pages) >= math.ceil(len(seeded) / self.page_size)
        assert not any(r.deleted for r in records)

    async def test_incremental_since_returns_exactly_the_changes(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        seeded = self.seed(emulator, self.records_to_seed)
        _, pages = await self.fetch_all(adapter)
        marks = [p.high_water_mark for p in pages if p.high_water_mark is not None]
        assert marks, "a full fetch returned no high-water mark"
        high_water: datetime = max(marks)
        since = emulator.clock.advance(1)
        emulator.clock.advance(1)
        store = self.store(emulator)
        store.update(seeded[1].id, self.changed_fields(1))
        store.update(seeded[3].id, self.changed_fields(3))
        created = store.create(self.sample_record(1000))
        changed = {seeded[1].id, seeded[3].id, created.id}

        records, _ = await self.fetch_all(adapter, since=since)
        ids = [r.external_id for r in records]
        assert sorted(ids) == sorted(changed)
        by_id = {r.external_id: r for r in records}
        for key, value in self.changed_fields(1).items():
            assert by_id[seeded[1].id].data.get(key) == value

        # Resuming from the previous run's high-water mark loses nothing.
        records, _ = await self.fetch_all(adapter, since=high_water)
        assert changed <= {r.external_id for r in records}

    async def test_deletions_surface(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        if not self.supports_deletions:
            pytest.skip("the adapter declares no deletion support")
        seeded = self.seed(emulator, 4)
        since = emulator.clock.advance(1)
        emulator.clock.advance(1)
        self.store(emulator).delete(seeded[2].id)
        records, _ = await self.fetch_all(adapter, since=since, include_deleted=True)
        tombstones = [r for r in records if r.external_id == seeded[2].id]
        assert tombstones and all(r.deleted for r in tombstones)
        assert not any(r.deleted for r in records if r.external_id != seeded[2].id)
        full, _ = await self.fetch_all(adapter)
        assert all(r.deleted for r in full if r.external_id == seeded[2].id)

    async def test_create_update_delete_round_trip(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        if not _overrides(adapter, "create_record"):
            pytest.skip("the adapter does not create records")
        store = self.store(emulator)
        data = self.sample_record(7)
        record_id = await adapter.create_record(self.entity, data)
        stored = store.get(record_id)
        assert stored is not None, "created record not found in the emulator"
        self.assert_stored(stored.data, data)
        if _overrides(adapter, "fetch_record"):
            fetched = await adapter.fetch_record(self.entity, record_id)
            assert fetched is not None and fetched.external_id == record_id
        if _overrides(adapter, "update_record"):
            changes = self.changed_fields(7)
            await adapter.update_record(self.entity, record_id, changes)
            updated = store.get(record_id)
            assert updated is not None
            self.assert_stored(updated.data, changes)
            with pytest.raises(NotFoundError):
                await adapter.update_record(self.entity, "conformance-missing-id", changes)
        if _overrides(adapter, "delete_record"):
            await adapter.delete_record(self.entity, record_id)
            assert store.get(record_id) is None
            with pytest.raises(NotFoundError):
                await adapter.delete_record(self.entity, record_id)

    async def test_rate_limit_burst_absorbed(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        seeded = self.seed(emulator, 2)
        emulator.faults.rate_limit(times=3, retry_after=2)
        sleeps_before = len(emulator.clock.sleeps)
        result = await adapter.fetch_records(self.entity, FetchOptions(limit=self.page_size))
        assert {r.external_id for r in result.records} == {r.id for r in seeded}
        assert [r.fault for r in emulator.requests].count("rate_limit") == 3
        if getattr(adapter, "clock", None) is emulator.clock:
            waits = emulator.clock.sleeps[sleeps_before:]
            assert len(waits) >= 3 and sum(waits) >= 6, "Retry-After was not honoured"

    async def test_server_errors_retried(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        seeded = self.seed(emulator, 2)
        emulator.faults.server_error(times=1, status=500)
        emulator.faults.server_error(times=1, status=503)
        emulator.faults.disconnect(times=1)
        result = await adapter.fetch_records(self.entity, FetchOptions(limit=self.page_size))
        assert {r.external_id for r in result.records} == {r.id for r in seeded}
        faults = [r.fault for r in emulator.requests]
        assert faults.count("server_error") == 2 and faults.count("disconnect") == 1

    async def test_expired_token_refreshed_once_mid_fetch(
        self,
        adapter: IntegrationAdapter,
        emulator: ProviderEmulator,
        refresher: RefreshCounter,
    ) -> None:
        seeded = self.seed(emulator, self.page_size * 2 + 1)
        first = await adapter.fetch_records(self.entity, FetchOptions(limit=self.page_size))
        assert first.has_more
        emulator.expire_all_tokens()
        records = list(first.records)
        cursor = first.next_cursor
        while cursor is not None:
            page = await adapter.fetch_records(
                self.entity, FetchOptions(cursor=cursor, limit=self.page_size)
            )
            records.extend(page.records)
            cursor = page.next_cursor if page.has_more else None
        assert refresher.calls == 1
        assert emulator.statuses().count(401) == 1
        ids = [r.external_id for r in records]
        assert len(ids) == len(set(ids)) and set(ids) == {r.id for r in seeded}

    async def test_webhook_signature(self, emulator: ProviderEmulator) -> None:
        adapter = self.make_adapter(emulator, None)
        if not _overrides(adapter, "validate_webhook_signature"):
            pytest.skip("the adapter does not verify webhooks")
        record = self.seed(emulator, 1)[0]
        payload = emulator.webhook_payload(self.entity, record, "updated")
        if payload is None:
            pytest.skip("the emulator does not send webhooks")
        received: list[WebhookRequest] = []

        async def receive(request: Request) -> Response:
            received.append(
                WebhookRequest(
                    method=request.method,
                    url=str(request.url),
                    headers=request.headers.items(),  # type: ignore[arg-type]
                    body=await request.body(),
                )
            )
            return Response(status_code=202)

        app = Starlette(routes=[Route("/webhooks/in", receive, methods=["POST"])])
        delivery = emulator.build_webhook(payload, url="https://castiel.example/webhooks/in")
        assert (await send_webhook(app, delivery)).status_code == 202
        (request,) = received
        assert adapter.validate_webhook_signature(request, self.webhook_secret)
        body = request.body
        tampered = body.replace(record.id.encode(), b"x" * len(record.id), 1)
        if tampered == body:
            tampered = body + b" "
        assert not adapter.validate_webhook_signature(
            request.model_copy(update={"body": tampered}), self.webhook_secret
        )
        assert not adapter.validate_webhook_signature(request, self.webhook_secret + "-wrong")
        events = adapter.parse_webhook(request)
        assert any(e.external_id == record.id for e in events)
