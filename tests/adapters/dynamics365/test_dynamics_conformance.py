"""The Dynamics 365 adapter passes the SDK conformance suite against its emulator.

Two tests are replaced with their Dataverse form, for documented reasons:

- deletions: Dataverse reports removed rows only through change tracking (the delta link's
  ``$deletedEntity`` entries); a ``modifiedon`` query cannot see a deleted row, so the test
  goes through ``delta_token`` instead of ``since``;
- webhook "signature": Dataverse webhooks carry a shared key (``?code=``, headers or query
  parameters, register-web-hook.md), no signature over the body, so a tampered body cannot
  be detected; the test checks the key instead (right key accepted, wrong or missing key
  refused) and that the delivery parses to the record's event.
"""

from __future__ import annotations

from typing import Any

import pytest

from castiel_sync.sdk import FetchOptions, IntegrationAdapter, WebhookRequest
from castiel_sync.testing._kit import ProviderEmulator
from castiel_sync.testing.conformance import AdapterConformance


class TestDynamicsAccountConformance(AdapterConformance):
    adapter_class = "dynamics365"  # found through the entry point
    emulator_factory = "castiel_sync.testing.emulators.dynamics365:Dynamics365Emulator"
    entity = "account"

    def sample_record(self, n: int) -> dict[str, Any]:
        return {"name": f"Conformance record {n}", "numberofemployees": n}

    def changed_fields(self, n: int) -> dict[str, Any]:
        return {"name": f"Changed record {n}"}

    async def test_deletions_surface(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        seeded = self.seed(emulator, 4)
        _, pages = await self.fetch_all(adapter)
        token = pages[-1].delta_token
        assert token, "the initial tracked read returned no delta link"
        emulator.clock.advance(1)
        self.store(emulator).delete(seeded[2].id)
        result = await adapter.fetch_records(
            self.entity, FetchOptions(delta_token=token, include_deleted=True)
        )
        tombstones = [r for r in result.records if r.external_id == seeded[2].id]
        assert tombstones and all(r.deleted for r in tombstones)
        assert not any(r.deleted for r in result.records if r.external_id != seeded[2].id)
        full, _ = await self.fetch_all(adapter)
        assert seeded[2].id not in {r.external_id for r in full}

    async def test_webhook_signature(self, emulator: ProviderEmulator) -> None:
        adapter = self.make_adapter(emulator, None)
        record = self.seed(emulator, 1)[0]
        payload = emulator.webhook_payload(self.entity, record, "updated")
        delivery = emulator.build_webhook(payload, url="https://castiel.example/webhooks/in")
        assert delivery.query.get("code") == self.webhook_secret
        assert adapter.validate_webhook_signature(delivery, self.webhook_secret)
        assert not adapter.validate_webhook_signature(delivery, self.webhook_secret + "-wrong")
        keyless = WebhookRequest(
            method="POST",
            url="https://castiel.example/webhooks/in",
            headers=delivery.headers,
            body=delivery.body,
        )
        assert not adapter.validate_webhook_signature(keyless, self.webhook_secret)
        (event,) = adapter.parse_webhook(delivery)
        assert (event.entity, event.external_id, event.action) == (
            "account",
            record.id,
            "updated",
        )


@pytest.mark.parametrize("entity", ["contact", "opportunity"])
def test_other_tables_declared(entity: str) -> None:
    from castiel_sync.adapters.dynamics365 import ENTITIES

    assert ENTITIES[entity].writable
