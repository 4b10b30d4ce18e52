"""The HubSpot adapter passes the SDK conformance suite against its emulator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from castiel_sync.sdk import IntegrationAdapter
from castiel_sync.testing._kit import ProviderEmulator
from castiel_sync.testing.conformance import AdapterConformance


class TestHubSpotCompaniesConformance(AdapterConformance):
    adapter_class = "hubspot"  # found through the entry point
    emulator_factory = "castiel_sync.testing.emulators.hubspot:HubSpotEmulator"
    entity = "companies"

    def sample_record(self, n: int) -> dict[str, Any]:
        return {"name": f"Conformance record {n}", "domain": f"c{n}.example"}

    def changed_fields(self, n: int) -> dict[str, Any]:
        return {"name": f"Changed record {n}"}

    async def test_incremental_since_returns_exactly_the_changes(
        self, adapter: IntegrationAdapter, emulator: ProviderEmulator
    ) -> None:
        # The suite's version reads ``data[key]``; HubSpot records nest their values
        # under ``properties`` (the catalog maps ``properties.name``), so check there.
        seeded = self.seed(emulator, self.records_to_seed)
        _, pages = await self.fetch_all(adapter)
        high_water: datetime = max(p.high_water_mark for p in pages if p.high_water_mark)
        since = emulator.clock.advance(1)
        emulator.clock.advance(1)
        store = self.store(emulator)
        store.update(seeded[1].id, self.changed_fields(1))
        store.update(seeded[3].id, self.changed_fields(3))
        created = store.create(self.sample_record(1000))
        changed = {seeded[1].id, seeded[3].id, created.id}
        records, _ = await self.fetch_all(adapter, since=since)
        assert sorted(r.external_id for r in records) == sorted(changed)
        by_id = {r.external_id: r for r in records}
        for key, value in self.changed_fields(1).items():
            assert by_id[seeded[1].id].data["properties"][key] == value
        records, _ = await self.fetch_all(adapter, since=high_water)
        assert changed <= {r.external_id for r in records}


class TestHubSpotContactsConformance(TestHubSpotCompaniesConformance):
    entity = "contacts"

    def sample_record(self, n: int) -> dict[str, Any]:
        return {"firstname": f"Ada {n}", "email": f"ada{n}@example.com"}

    def changed_fields(self, n: int) -> dict[str, Any]:
        return {"firstname": f"Grace {n}"}
