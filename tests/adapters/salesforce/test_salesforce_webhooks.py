"""Outbound Messages (SOAP, org id check, the WSDL's ack) and relayed Change Data Capture
events (Standard Webhooks signatures)."""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from castiel_sync.adapters.salesforce import ACK_BODY, SalesforceAdapter
from castiel_sync.sdk import AdapterValidationError, WebhookRequest
from castiel_sync.testing import FakeClock
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator

ORG = "00D5e000000KQ2eEAG"

# Shaped exactly by the outbound messaging WSDL (notifications: OrganizationId, ActionId,
# SessionId nillable, EnterpriseUrl, PartnerUrl, Notification{Id, sObject xsi:type}); the
# field values follow the docs' Account examples. Salesforce's pages give the WSDL, not a
# captured message, so this is the closest documented vector.
WSDL_VECTOR = b"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D5e000000KQ2eEAG</OrganizationId>
   <ActionId>04k5e000000CaRkAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/62.0/00D5e000000KQ2e</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/62.0/00D5e000000KQ2e</PartnerUrl>
   <Notification>
    <Id>04l5e00000Gx7QzAAJ</Id>
    <sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>001D000000IqhSLIAZ</sf:Id>
     <sf:Name>Express Logistics and Transport</sf:Name>
     <sf:NumberOfEmployees>120</sf:NumberOfEmployees>
     <sf:Website xsi:nil="true"/>
     <sf:SystemModstamp>2013-05-20T20:49:32.000Z</sf:SystemModstamp>
    </sObject>
   </Notification>
   <Notification>
    <Id>04l5e00000Gx7R0AAJ</Id>
    <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>006D000000IomazIAB</sf:Id>
     <sf:IsWon>false</sf:IsWon>
     <sf:Amount>5000.0</sf:Amount>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"""


def soap(body: bytes) -> WebhookRequest:
    return WebhookRequest(
        method="POST",
        url="https://castiel.example/webhooks/salesforce",
        headers={"content-type": "text/xml; charset=utf-8", "soapaction": '""'},
        body=body,
    )


def test_outbound_message_parses_to_events() -> None:
    adapter = SalesforceAdapter()
    request = soap(WSDL_VECTOR)
    assert adapter.validate_webhook_signature(request, ORG)
    assert adapter.validate_webhook_signature(request, ORG[:15])  # the 15-character form
    account, opportunity = adapter.parse_webhook(request)
    assert (account.entity, account.external_id, account.action) == (
        "Account",
        "001D000000IqhSLIAZ",
        "changed",
    )
    assert account.event_id == "04l5e00000Gx7QzAAJ"
    assert account.data == {
        "Id": "001D000000IqhSLIAZ",
        "Name": "Express Logistics and Transport",
        "NumberOfEmployees": 120,
        "Website": None,
        "SystemModstamp": "2013-05-20T20:49:32.000Z",
    }
    assert account.modified_at is not None and account.modified_at.year == 2013
    assert opportunity.entity == "Opportunity"
    assert opportunity.data == {"Id": "006D000000IomazIAB", "IsWon": False, "Amount": 5000.0}


def test_ack_is_the_wsdl_notifications_response() -> None:
    response = SalesforceAdapter().webhook_ack(soap(WSDL_VECTOR))
    assert response is not None and response.status_code == 200
    assert response.media_type == "text/xml"
    assert (
        response.body
        == ACK_BODY
        == (
            b'<?xml version="1.0" encoding="UTF-8"?>'
            b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            b"<soapenv:Body>"
            b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
            b"<Ack>true</Ack>"
            b"</notificationsResponse>"
            b"</soapenv:Body>"
            b"</soapenv:Envelope>"
        )
    )


def test_a_message_from_another_org_is_refused() -> None:
    adapter = SalesforceAdapter()
    request = soap(WSDL_VECTOR)
    other = "00D5e000000ZZZZEAG"
    assert not adapter.validate_webhook_signature(request, other)
    rejection = adapter.webhook_rejection(request, other)
    assert rejection is not None and rejection.status_code == 403
    assert adapter.webhook_rejection(request, ORG) is None


@pytest.mark.parametrize(
    "body",
    [
        b"<soapenv:Envelope",  # not well-formed
        b"<html><body>hi</body></html>",  # not SOAP
        WSDL_VECTOR.replace(b"00D5e000000KQ2eEAG", b"not-an-org-id"),
        WSDL_VECTOR.replace(b"<sf:Id>001D000000IqhSLIAZ</sf:Id>", b""),
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 '
        b'"&lol;&lol;&lol;&lol;">]><soapenv:Envelope xmlns:soapenv='
        b'"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>&lol2;</soapenv:Body>'
        b"</soapenv:Envelope>",  # entity expansion
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<x>&xxe;</x>",  # external entity
    ],
)
def test_malformed_or_hostile_xml_gets_a_clear_400(body: bytes) -> None:
    adapter = SalesforceAdapter()
    request = soap(body)
    assert not adapter.validate_webhook_signature(request, ORG)
    with pytest.raises(AdapterValidationError) as info:
        adapter.parse_webhook(request)
    assert info.value.status_code == 400
    rejection = adapter.webhook_rejection(request, ORG)
    assert rejection is not None and rejection.status_code == 400


async def test_emulator_delivery_is_acknowledged_by_a_listener_built_on_the_adapter(
    emulator: SalesforceEmulator,
) -> None:
    adapter = SalesforceAdapter()
    account = emulator.seed("Account", {"Name": "Bob's <BBQ> & Grill"})
    seen = []

    async def listener(request: Request) -> Response:
        delivery = WebhookRequest(
            method="POST", url=str(request.url), headers=request.headers, body=await request.body()
        )
        rejection = adapter.webhook_rejection(delivery, emulator.org_id)
        if rejection is not None:
            return Response(rejection.body, status_code=rejection.status_code)
        seen.extend(adapter.parse_webhook(delivery))
        ack = adapter.webhook_ack(delivery)
        assert ack is not None
        return Response(ack.body, status_code=ack.status_code, media_type=ack.media_type)

    app = Starlette(routes=[Route("/webhooks/salesforce", listener, methods=["POST"])])
    result = await emulator.send_outbound_message(
        app, "Account", [account], fields=["Id", "Name", "SystemModstamp", "Website"]
    )
    assert result.status == 200 and result.acknowledged
    (event,) = seen
    assert event.external_id == account and event.data is not None
    assert event.data["Name"] == "Bob's <BBQ> & Grill" and event.data["Website"] is None
    # A foreign org's message is refused, and so not acknowledged (Salesforce retries).
    foreign = await emulator.send_outbound_message(
        app, "Account", [account], org_id="00D5e000000ZZZZEAG"
    )
    assert foreign.status == 403 and not foreign.acknowledged


# -- relayed Change Data Capture ------------------------------------------------------------


def test_relayed_change_event_signature_accepted_and_tampering_refused(
    emulator: SalesforceEmulator, clock: FakeClock
) -> None:
    adapter = SalesforceAdapter().configure(clock=clock)
    record_id = emulator.seed("Contact", {"LastName": "Young"})
    built_at = clock.now()
    event = emulator.change_event("Contact", [record_id], "UPDATE", changed_fields={"Title": "CTO"})
    request = emulator.build_webhook(event)
    secret = emulator.webhook_secret
    assert adapter.validate_webhook_signature(request, secret)
    assert adapter.validate_webhook_signature(
        request, json.dumps({"organizationId": ORG, "relaySecret": secret})
    )
    tampered = request.model_copy(update={"body": request.body.replace(b"CTO", b"CEO")})
    assert not adapter.validate_webhook_signature(tampered, secret)
    assert not adapter.validate_webhook_signature(request, "whsec_" + "A" * 32)
    assert not adapter.validate_webhook_signature(request, ORG)  # no relay key configured
    unsigned = request.model_copy(
        update={"headers": {"content-type": "application/json", "webhook-signature": ""}}
    )
    assert not adapter.validate_webhook_signature(unsigned, secret)
    clock.advance(301)  # outside Standard Webhooks' five-minute window
    assert not adapter.validate_webhook_signature(request, secret)

    (parsed,) = adapter.parse_webhook(request)
    assert (parsed.entity, parsed.external_id, parsed.action) == ("Contact", record_id, "updated")
    assert parsed.data is None  # an UPDATE carries only changed fields: the engine fetches
    assert parsed.modified_at == built_at  # commitTimestamp, epoch milliseconds


@pytest.mark.parametrize(
    ("change_type", "action"),
    [("CREATE", "created"), ("UPDATE", "updated"), ("DELETE", "deleted"),
     ("UNDELETE", "changed"), ("GAP_UPDATE", "changed")],
)  # fmt: skip
def test_change_types_map_to_actions(change_type: str, action: str) -> None:
    body = {
        "ChangeEventHeader": {
            "entityName": "Account",
            "recordIds": ["001D000000IqhSLIAZ", "001D000000IomazIAB", "001*"],
            "changeType": change_type,
            "commitTimestamp": 1_700_000_000_000,
            "transactionKey": "0002d0d6-6d7b-1d5e-8d6d-5f6d0b0f1d4a",
            "sequenceNumber": 1,
        },
        "Name": "Acme",
    }
    request = WebhookRequest(
        method="POST",
        url="https://castiel.example/webhooks/salesforce",
        headers={"content-type": "application/json", "webhook-signature": "v1,x"},
        body=json.dumps(body).encode(),
    )
    events = SalesforceAdapter().parse_webhook(request)
    # Merged events name every record; the wildcard of a field-type conversion names none.
    assert [e.external_id for e in events] == ["001D000000IqhSLIAZ", "001D000000IomazIAB"]
    assert {e.action for e in events} == {action}
    assert events[0].event_id != events[1].event_id
    assert events[0].modified_at is not None and events[0].modified_at.year == 2023


def test_a_change_event_without_its_header_is_refused() -> None:
    request = WebhookRequest(
        method="POST",
        url="https://castiel.example/webhooks/salesforce",
        headers={"content-type": "application/json", "webhook-signature": "v1,x"},
        body=b'{"data": {"payload": {"Name": "x"}}}',
    )
    with pytest.raises(AdapterValidationError):
        SalesforceAdapter().parse_webhook(request)


def test_no_handshake() -> None:
    assert SalesforceAdapter().handle_webhook_handshake(soap(WSDL_VECTOR), ORG) is None
