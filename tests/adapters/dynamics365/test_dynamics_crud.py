"""Create (id from OData-EntityId), update (PATCH + If-Match), delete, fetch_record."""

from __future__ import annotations

import pytest

from castiel_sync.adapters.dynamics365 import (
    ENTITIES,
    ConcurrencyConflictError,
    Dynamics365Adapter,
    entity_id_from_header,
)
from castiel_sync.sdk import AdapterValidationError, NotFoundError, PermanentError
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator


def test_entity_id_parsed_from_documented_header() -> None:
    # The create-entity-web-api.md example response header.
    header = "[Organization URI]/api/data/v9.0/accounts(7eb682f1-ca75-e511-80d4-00155d2a68d1)"
    assert entity_id_from_header(header, ENTITIES["account"]) == (
        "7eb682f1-ca75-e511-80d4-00155d2a68d1"
    )
    with pytest.raises(PermanentError):
        entity_id_from_header(header, ENTITIES["contact"])
    with pytest.raises(PermanentError):
        entity_id_from_header(None, ENTITIES["account"])


async def test_create_reads_the_id_from_odata_entityid(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    record_id = await adapter.create_record("contact", {"firstname": "Ada", "lastname": "Byron"})
    request = emulator.requests[-1]
    assert (request.method, request.path, request.status) == (
        "POST",
        "/api/data/v9.2/contacts",
        204,
    )
    assert request.json() == {"firstname": "Ada", "lastname": "Byron"}
    stored = emulator.store["contact"].get(record_id)
    assert stored is not None and stored.data["lastname"] == "Byron"
    fetched = await adapter.fetch_record("contact", record_id)
    assert fetched is not None and fetched.data["fullname"] == "Ada Byron"


async def test_create_rejects_read_only_and_unknown_columns(adapter: Dynamics365Adapter) -> None:
    with pytest.raises(AdapterValidationError):
        await adapter.create_record("contact", {"fullname": "Ada Byron"})
    with pytest.raises(AdapterValidationError):
        await adapter.create_record("account", {"name": "x", "bogus": 1})


async def test_update_sends_if_match_star_and_never_creates(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    record = emulator.store["account"].create({"name": "Before"})
    await adapter.update_record("account", record.id, {"name": "After"})
    request = emulator.requests[-1]
    assert (request.method, request.headers["if-match"], request.status) == ("PATCH", "*", 204)
    assert emulator.store["account"].get(record.id).data["name"] == "After"  # type: ignore[union-attr]

    missing = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(NotFoundError):
        await adapter.update_record("account", missing, {"name": "Ghost"})
    assert emulator.store["account"].get(missing) is None


async def test_emulator_patch_without_if_match_is_an_upsert(
    emulator: Dynamics365Emulator,
) -> None:
    new_id = "00000000-0000-0000-0000-000000000002"
    async with emulator.client() as client:
        response = await client.patch(
            f"/api/data/v9.2/accounts({new_id})",
            json={"name": "Upserted"},
            headers={"Authorization": f"Bearer {emulator.issue_token()}"},
        )
    assert response.status_code == 204
    assert (
        response.headers["OData-EntityId"]
        == f"{emulator.base_url}/api/data/v9.2/accounts({new_id})"
    )
    assert emulator.store["account"].get(new_id) is not None


async def test_etag_mismatch_is_412_and_a_conflict(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    record = emulator.store["account"].create({"name": "v1"})
    fetched = await adapter.fetch_record("account", record.id)
    assert fetched is not None
    etag = fetched.data["@odata.etag"]
    emulator.store["account"].update(record.id, {"name": "changed elsewhere"})
    with pytest.raises(ConcurrencyConflictError) as info:
        await adapter.update_record("account", record.id, {"name": "mine", "@odata.etag": etag})
    assert info.value.status_code == 412
    assert "doesn't match the RowVersion" in (info.value.detail or "")
    assert emulator.requests[-1].headers["if-match"] == etag
    # Not retried: a conditional PATCH is sent once.
    assert len(emulator.requests_to("/api/data/v9.2/accounts(", "PATCH")) == 1

    fresh = await adapter.fetch_record("account", record.id)
    assert fresh is not None
    await adapter.update_record(
        "account", record.id, {"name": "mine", "@odata.etag": fresh.data["@odata.etag"]}
    )
    assert emulator.store["account"].get(record.id).data["name"] == "mine"  # type: ignore[union-attr]


async def test_delete_then_missing(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    record = emulator.store["opportunity"].create({"name": "Deal"})
    await adapter.delete_record("opportunity", record.id)
    assert emulator.requests[-1].status == 204
    assert emulator.store["opportunity"].get(record.id) is None
    with pytest.raises(NotFoundError) as info:
        await adapter.delete_record("opportunity", record.id)
    assert "0x80040217" in (info.value.detail or "")
    assert await adapter.fetch_record("opportunity", record.id) is None
    with pytest.raises(NotFoundError):
        await adapter.delete_record("opportunity", "not-a-guid")


async def test_create_with_return_representation_is_201(emulator: Dynamics365Emulator) -> None:
    async with emulator.client() as client:
        response = await client.post(
            "/api/data/v9.2/accounts?$select=name",
            json={"name": "Sample Account"},
            headers={
                "Authorization": f"Bearer {emulator.issue_token()}",
                "Prefer": "return=representation",
            },
        )
    assert response.status_code == 201
    assert response.headers["Preference-Applied"] == "return=representation"
    body = response.json()
    assert body["name"] == "Sample Account" and body["@odata.etag"].startswith('W/"')
    assert body["@odata.context"].endswith("$metadata#accounts(name)/$entity")
