"""Webhook signatures v1, v2 (HubSpot's documented worked examples) and v3, and parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson

from castiel_sync.adapters.hubspot import HubSpotAdapter, signature_v1, signature_v2, v3_uri
from castiel_sync.sdk import WebhookRequest
from castiel_sync.testing import FakeClock
from castiel_sync.testing.emulators.hubspot import HubSpotEmulator

# developers.hubspot.com/docs/faq/v1-request-validation and .../v2-request-validation
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOC_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
    b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
)
DOC_V1 = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
DOC_V2_GET = "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"


def request(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> WebhookRequest:
    return WebhookRequest(method=method, url=url, headers=headers, body=body)


def test_v1_documented_example() -> None:
    assert signature_v1(DOC_SECRET, DOC_BODY) == DOC_V1
    adapter = HubSpotAdapter()
    good = request("https://x.example/hook", DOC_BODY, {"X-HubSpot-Signature": DOC_V1})
    assert adapter.validate_webhook_signature(good, DOC_SECRET)
    tampered = good.model_copy(update={"body": DOC_BODY.replace(b"123", b"124")})
    assert not adapter.validate_webhook_signature(tampered, DOC_SECRET)
    assert not adapter.validate_webhook_signature(good, DOC_SECRET + "x")


def test_v2_documented_get_example() -> None:
    uri = "https://www.example.com/webhook_uri"
    assert signature_v2(DOC_SECRET, "GET", uri, b"") == DOC_V2_GET
    headers = {"X-HubSpot-Signature": DOC_V2_GET, "X-HubSpot-Signature-Version": "v2"}
    adapter = HubSpotAdapter()
    assert adapter.validate_webhook_signature(request(uri, b"", headers, "GET"), DOC_SECRET)
    # v2 signs the URI: another path fails.
    other = request(uri + "2", b"", headers, "GET")
    assert not adapter.validate_webhook_signature(other, DOC_SECRET)
    unknown = {**headers, "X-HubSpot-Signature-Version": "v9"}
    assert not adapter.validate_webhook_signature(request(uri, b"", unknown, "GET"), DOC_SECRET)


def _v3(secret: str, method: str, uri: str, body: bytes, stamp: str) -> str:
    # Written from the docs' recipe independently of the adapter's helper.
    mac = hmac.new(
        secret.encode(), f"{method}{uri}".encode() + body + stamp.encode(), hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode()


def test_v3_valid_tampered_and_stale() -> None:
    clock = FakeClock()
    adapter = HubSpotAdapter().configure(clock=clock)
    stamp = str(int(clock.now().timestamp() * 1000))
    uri = "https://castiel.example/webhooks/hubspot"
    headers = {
        "X-HubSpot-Signature-v3": _v3(DOC_SECRET, "POST", uri, DOC_BODY, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    good = request(uri, DOC_BODY, headers)
    assert adapter.validate_webhook_signature(good, DOC_SECRET)
    assert not adapter.validate_webhook_signature(
        good.model_copy(update={"body": DOC_BODY + b" "}), DOC_SECRET
    )
    clock.advance(299)
    assert adapter.validate_webhook_signature(good, DOC_SECRET)
    clock.advance(2)  # now older than five minutes
    assert not adapter.validate_webhook_signature(good, DOC_SECRET)
    # A v3 header decides: a valid v1 next to a bad v3 does not pass.
    clock.advance(-301)
    mixed = {**headers, "X-HubSpot-Signature-v3": "AAAA", "X-HubSpot-Signature": DOC_V1}
    assert not adapter.validate_webhook_signature(request(uri, DOC_BODY, mixed), DOC_SECRET)
    no_stamp = {"X-HubSpot-Signature-v3": headers["X-HubSpot-Signature-v3"]}
    assert not adapter.validate_webhook_signature(request(uri, DOC_BODY, no_stamp), DOC_SECRET)


def test_v3_decodes_the_listed_characters_of_the_uri() -> None:
    assert v3_uri("https://h.example/a%3Ab%2fc%3F%40%21%24%27%28%29%2A%2C%3B") == (
        "https://h.example/a:b/c?@!$'()*,;"
    )
    # Escapes the docs do not list stay as they are.
    assert v3_uri("https://h.example/a%20b%26c%3d") == "https://h.example/a%20b%26c%3d"
    clock = FakeClock()
    adapter = HubSpotAdapter().configure(clock=clock)
    stamp = str(int(clock.now().timestamp() * 1000))
    signed_uri = "https://castiel.example/webhooks/hubspot?tenant=acme:eu&x=(1)"
    received = "https://castiel.example/webhooks/hubspot?tenant=acme%3Aeu&x=%281%29"
    headers = {
        "X-HubSpot-Signature-v3": _v3(DOC_SECRET, "POST", signed_uri, DOC_BODY, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    assert adapter.validate_webhook_signature(request(received, DOC_BODY, headers), DOC_SECRET)


def test_parse_documented_payload_and_emulator_delivery() -> None:
    (event,) = HubSpotAdapter().parse_webhook(request("https://x/h", DOC_BODY, {}))
    assert (event.entity, event.external_id, event.action) == ("contacts", "123", "created")
    assert event.data is None and event.event_id == "1"
    assert event.modified_at is not None and int(event.modified_at.timestamp()) == 1564113600

    emulator = HubSpotEmulator.with_oauth()
    company = emulator.store["companies"].create({"name": "Acme"})
    deal = emulator.store["deals"].create({"dealname": "Big"})
    emulator.store["deals"].delete(deal.id)
    payload = [
        emulator.webhook_event("companies", company, "updated"),
        emulator.webhook_event("deals", deal, "deleted"),
        {"subscriptionType": "ticket.creation", "objectId": 9},  # not synced: skipped
    ]
    delivery = emulator.build_webhook(payload)
    adapter = HubSpotAdapter().configure(clock=emulator.clock)
    assert adapter.validate_webhook_signature(delivery, "hubspot-client-secret")
    assert orjson.loads(delivery.body)[0]["propertyName"] == "name"
    events = adapter.parse_webhook(delivery)
    assert [(e.entity, e.external_id, e.action) for e in events] == [
        ("companies", company.id, "updated"),
        ("deals", deal.id, "deleted"),
    ]
    # v1 rides along for webhooks-API subscriptions.
    v1_headers = {k: v for k, v in delivery.headers.items() if "v3" not in k}
    v1_only = request(delivery.url, delivery.body, v1_headers)
    assert adapter.validate_webhook_signature(v1_only, "hubspot-client-secret")
    assert adapter.parse_webhook(request("https://x/h", b"not json", {})) == []
