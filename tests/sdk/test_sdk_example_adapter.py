"""The reference Example CRM adapter passes the conformance suite, plus its own checks."""

from __future__ import annotations

from castiel_sync.domain.filters import FilterCondition
from castiel_sync.sdk import FetchOptions
from castiel_sync.testing.conformance import AdapterConformance
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator


class TestExampleCrmConformance(AdapterConformance):
    adapter_class = ExampleCrmAdapter
    emulator_factory = ExampleCrmEmulator
    entity = "contacts"


async def connected() -> tuple[ExampleCrmAdapter, ExampleCrmEmulator]:
    emulator = ExampleCrmEmulator()
    adapter = ExampleCrmAdapter().configure(transport=emulator.transport(), clock=emulator.clock)
    await adapter.connect(emulator.credentials())
    return adapter, emulator


async def test_quota_headers_tracked() -> None:
    adapter, _ = await connected()
    await adapter.test_connection()
    assert adapter.rate_limit_state == {"limit": 1000, "remaining": 999}


async def test_eq_filters_are_sent_and_applied() -> None:
    adapter, emulator = await connected()
    emulator.store["contacts"].create({"name": "a", "city": "Oslo"})
    emulator.store["contacts"].create({"name": "b", "city": "Rome"})
    result = await adapter.fetch_records(
        "contacts", FetchOptions(filters=[FilterCondition(field="city", op="eq", value="Rome")])
    )
    assert [r.data["name"] for r in result.records] == ["b"]


async def test_stale_webhook_timestamp_refused() -> None:
    adapter, emulator = await connected()
    record = emulator.store["contacts"].create({"name": "a"})
    delivery = emulator.build_webhook(emulator.webhook_payload("contacts", record, "updated"))
    assert adapter.validate_webhook_signature(delivery, emulator.webhook_secret)
    emulator.clock.advance(301)
    assert not adapter.validate_webhook_signature(delivery, emulator.webhook_secret)
    (event,) = adapter.parse_webhook(delivery)
    assert (event.entity, event.external_id, event.action) == ("contacts", record.id, "updated")
