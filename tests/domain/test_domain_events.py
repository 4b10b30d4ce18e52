from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from castiel_sync.domain import events
from castiel_sync.domain.events import (
    DEAD_LETTER_QUEUE,
    EVENT_TYPES,
    ROUTES,
    CloudEvent,
    EventValidationError,
)

AT = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_routes_are_exactly_the_design_table() -> None:
    assert dict(ROUTES) == {
        "Castiel.Integration.WebhookReceived": "sync-inbound-webhook",
        "Castiel.Integration.SyncScheduled": "sync-inbound-scheduled",
        "Castiel.Integration.SyncRequested": "sync-inbound-scheduled",
        "Castiel.Integration.WriteBackRequested": "sync-outbound",
    }
    assert DEAD_LETTER_QUEUE == "sync-deadletter"
    assert DEAD_LETTER_QUEUE not in ROUTES.values()
    with pytest.raises(TypeError):
        ROUTES["x"] = "y"  # type: ignore[index]


def test_the_bus_router_uses_this_table() -> None:
    from castiel_sync.bus.router import routing_table

    assert dict(routing_table()) == dict(ROUTES)


def every_event() -> list[CloudEvent]:
    common: dict[str, Any] = {"tenant_id": "t1", "time": AT}
    integration = {**common, "integration_id": "i1"}
    return [
        events.webhook_received(**integration, provider="salesforce", delivery_id="d1"),
        events.sync_scheduled(**integration, due_at=AT, entity="Account"),
        events.sync_requested(**integration, sync_type="full", requested_by="u1"),
        events.write_back_requested(
            **integration,
            shard_id="s1",
            shard_type="c_company",
            shard_version=3,
            entity="Account",
            operation="update",
            external_id="001",
        ),
        events.token_refresh_failed(**integration, connection_id="c1", reason="invalid_grant"),
        events.shard_created(
            **common, shard_id="s1", shard_type="c_company", version=1, integration_id="i1"
        ),
        events.shard_updated(
            **common, shard_id="s1", shard_type="c_company", version=2, changed_fields=["name"]
        ),
        events.shard_deleted(**common, shard_id="s1", shard_type="c_company", version=3),
    ]


def test_every_constructor_makes_a_valid_envelope() -> None:
    made = every_event()
    assert {e.type for e in made} == EVENT_TYPES
    for event in made:
        assert event.specversion == "1.0"
        assert event.datacontenttype == "application/json"
        assert event.data["tenantId"] == "t1"
        assert "integrationId" in event.data
        assert event.source.startswith("/castiel-sync/tenants/t1/")
        assert event.id


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e.type)
def test_json_round_trip(event: CloudEvent) -> None:
    raw = event.to_json()
    assert CloudEvent.from_json(raw) == event
    assert CloudEvent.from_json(raw.decode()) == event
    document = orjson.loads(raw)
    assert document["time"] == "2024-01-02T03:04:05Z"
    assert "subject" not in document or document["subject"]


def test_wire_shape_of_a_write_back() -> None:
    event = every_event()[3]
    assert orjson.loads(event.to_json()) == {
        "specversion": "1.0",
        "id": "write-back:i1:s1:3:update",
        "source": "/castiel-sync/tenants/t1/integrations/i1",
        "type": "Castiel.Integration.WriteBackRequested",
        "subject": "s1",
        "time": "2024-01-02T03:04:05Z",
        "datacontenttype": "application/json",
        "data": {
            "tenantId": "t1",
            "integrationId": "i1",
            "shardId": "s1",
            "shardType": "c_company",
            "shardVersion": 3,
            "entity": "Account",
            "operation": "update",
            "externalId": "001",
        },
    }
    assert event.queue == "sync-outbound"
    assert event.session_key == "i1"


def test_queue_and_session_key_per_type() -> None:
    by_type = {e.type: e for e in every_event()}
    assert by_type[events.WEBHOOK_RECEIVED].queue == "sync-inbound-webhook"
    assert by_type[events.SYNC_REQUESTED].session_key is None
    assert by_type[events.TOKEN_REFRESH_FAILED].queue is None
    assert by_type[events.SHARD_UPDATED].queue is None
    assert by_type[events.SHARD_UPDATED].integration_id is None
    assert by_type[events.SHARD_CREATED].integration_id == "i1"


def test_stable_ids_where_the_same_fact_can_be_emitted_twice() -> None:
    first = events.sync_scheduled(tenant_id="t", integration_id="i", due_at=AT)
    again = events.sync_scheduled(
        tenant_id="t", integration_id="i", due_at=AT.astimezone(timezone(timedelta(hours=2)))
    )
    assert first.id == again.id == "sync-scheduled:i:*:2024-01-02T03:04:05Z"
    one = events.sync_requested(tenant_id="t", integration_id="i")
    two = events.sync_requested(tenant_id="t", integration_id="i")
    assert one.id != two.id  # two clicks on Sync Now are two requests


def test_extension_attributes_survive_and_are_checked() -> None:
    raw = {**every_event()[0].to_dict(), "traceparent": "00-abc-def-01"}
    event = CloudEvent.from_dict(raw)
    assert event.to_dict()["traceparent"] == "00-abc-def-01"
    assert CloudEvent.from_json(event.to_json()) == event
    with pytest.raises(EventValidationError, match="extension"):
        CloudEvent.from_dict({**raw, "Bad-Name": "x"})


GOOD = every_event()[1].to_dict()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (orjson.dumps({**GOOD, "specversion": "0.3"}), "specversion"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "source"}), "source"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "type"}), "type"),
        (orjson.dumps({**GOOD, "id": ""}), "id"),
        (orjson.dumps({**GOOD, "time": "yesterday"}), "time"),
        (orjson.dumps({**GOOD, "time": "2024-01-02T03:04:05"}), "offset"),
        (orjson.dumps({**GOOD, "datacontenttype": "text/xml"}), "datacontenttype"),
        (orjson.dumps({**GOOD, "data": "text"}), "data"),
        (orjson.dumps({**GOOD, "data": {"integrationId": "i"}}), "tenantId"),
        (orjson.dumps({**GOOD, "data": {"tenantId": "t"}}), "integrationId"),
        (orjson.dumps({**GOOD, "data": {"tenantId": "t", "integrationId": None}}), "integrationId"),
    ],
)
def test_malformed_envelopes_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(EventValidationError, match=problem):
        CloudEvent.from_json(raw)


def test_defaults_id_and_time() -> None:
    event = CloudEvent(
        source="/x", type="Custom.Type", data={"tenantId": "t", "integrationId": None}
    )
    assert event.id and event.time.tzinfo is not None
    assert event.queue is None
