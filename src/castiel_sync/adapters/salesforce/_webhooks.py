"""Inbound notifications from Salesforce: Outbound Messages and relayed Change Data Capture.

**Outbound Messages** are SOAP 1.1 ``notifications()`` calls whose body follows the
outbound messaging WSDL: ``OrganizationId``, ``ActionId``, ``SessionId`` (nillable),
``EnterpriseUrl``, ``PartnerUrl`` and up to 100 ``Notification`` elements, each an ``Id``
and an ``sObject`` with ``xsi:type="sf:<Object>"`` and the chosen fields in
``urn:sobject.enterprise.soap.sforce.com``. The listener answers with
``notificationsResponse``/``Ack`` ``true``, or Salesforce resends
(https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/
sforce_api_om_outboundmessaging_wsdl.htm). There is no signature: the docs' security
considerations ask the listener to check that each message carries *its* organization id
(sforce_api_om_outboundmessaging_security.htm), so the integration's webhook secret holds
the org id. The body is untrusted XML and is parsed with ``defusedxml`` (no entities, no
DTDs, no external references).

**Change Data Capture** events reach us through a relay (a Pub/Sub API subscriber) that
POSTs each event signed with Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; verified with the ``standardwebhooks`` library). The body is the
event as Salesforce documents it: ``{"data": {"schema", "payload": {"ChangeEventHeader":
{...}, fields...}, "event": {"replayId"}}, "channel"}`` or the bare payload
(https://developer.salesforce.com/docs/atlas.en-us.change_data_capture.meta/
change_data_capture/cdc_event_fields_header.htm).

The webhook secret is either one value (an org id ``00D...``, or else the relay's Standard
Webhooks key, ``whsec_...``) or, for an integration that receives both, a JSON object
``{"organizationId": "00D...", "relaySecret": "whsec_..."}``.
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from castiel_sync.adapters.salesforce._entities import EntitySpec, entity_for_sobject
from castiel_sync.sdk import (
    AdapterValidationError,
    WebhookEvent,
    WebhookRequest,
    WebhookResponse,
    parse_timestamp,
)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# The acknowledgement the outbound messaging WSDL defines (notificationsResponse/Ack).
ACK_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{OUTBOUND_NS}">'
    "<Ack>true</Ack>"
    "</notificationsResponse>"
    "</soapenv:Body>"
    "</soapenv:Envelope>"
).encode()
ACK_MEDIA_TYPE = "text/xml"

_ORG_ID = re.compile(r"00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?")
_MAX_BODY = 5 * 1024 * 1024
_CDC_ACTIONS = {
    "CREATE": "created",
    "UPDATE": "updated",
    "DELETE": "deleted",
    "UNDELETE": "changed",
}


@dataclass(frozen=True)
class WebhookSecret:
    organization_id: str | None = None
    relay_secret: str | None = None

    @classmethod
    def parse(cls, secret: str) -> WebhookSecret:
        text = (secret or "").strip()
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                return cls()
            if not isinstance(data, dict):
                return cls()
            org, relay = data.get("organizationId"), data.get("relaySecret")
            return cls(
                organization_id=org if isinstance(org, str) else None,
                relay_secret=relay if isinstance(relay, str) else None,
            )
        if _ORG_ID.fullmatch(text):
            return cls(organization_id=text)
        return cls(relay_secret=text or None)


def is_outbound_message(request: WebhookRequest) -> bool:
    content_type = request.headers.get("content-type", "").lower()
    if "xml" in content_type:
        return True
    return request.body.lstrip()[:1] == b"<"


def is_relayed_event(request: WebhookRequest) -> bool:
    return "webhook-signature" in request.headers


def same_org(expected: str, received: str) -> bool:
    """Org ids are compared on their case-sensitive 15-character form (an 18-character id
    is the 15-character one plus a case-insensitive checksum)."""
    if not _ORG_ID.fullmatch(expected) or not _ORG_ID.fullmatch(received):
        return False
    return hmac.compare_digest(expected[:15].encode(), received[:15].encode())


# -- outbound messages -------------------------------------------------------------------


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str | None
    notifications: list[tuple[str, str, dict[str, Any]]]  # (notification id, type, fields)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(parent: Element, ns: str, name: str) -> Element | None:
    return parent.find(f"{{{ns}}}{name}")


def parse_outbound_xml(body: bytes) -> OutboundMessage:
    """The notifications in an Outbound Message; AdapterValidationError (400) when malformed."""
    if len(body) > _MAX_BODY:
        raise AdapterValidationError("the outbound message is too large", status_code=413)
    try:
        root = SafeET.fromstring(body)
    except DefusedXmlException:
        raise AdapterValidationError(
            "the outbound message uses forbidden XML constructs", status_code=400
        ) from None
    except SafeET.ParseError as exc:
        raise AdapterValidationError(
            "the outbound message is not well-formed XML", detail=str(exc), status_code=400
        ) from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise AdapterValidationError("the outbound message is not a SOAP envelope", status_code=400)
    soap_body = _child(root, SOAP_ENV, "Body")
    notifications = None if soap_body is None else _child(soap_body, OUTBOUND_NS, "notifications")
    if notifications is None:
        raise AdapterValidationError(
            "the SOAP body holds no outbound messaging notifications", status_code=400
        )
    org = _child(notifications, OUTBOUND_NS, "OrganizationId")
    org_id = (org.text or "").strip() if org is not None else ""
    if not _ORG_ID.fullmatch(org_id):
        raise AdapterValidationError(
            "the outbound message has no valid OrganizationId", status_code=400
        )
    action = _child(notifications, OUTBOUND_NS, "ActionId")
    items: list[tuple[str, str, dict[str, Any]]] = []
    for note in notifications.findall(f"{{{OUTBOUND_NS}}}Notification"):
        note_id = _child(note, OUTBOUND_NS, "Id")
        sobject = _child(note, OUTBOUND_NS, "sObject")
        if note_id is None or sobject is None:
            raise AdapterValidationError("a Notification lacks its Id or sObject", status_code=400)
        xsi_type = sobject.get(f"{{{XSI_NS}}}type") or ""
        type_name = xsi_type.rsplit(":", 1)[-1]
        fields: dict[str, Any] = {}
        for element in sobject:
            if not element.tag.startswith(f"{{{SOBJECT_NS}}}"):
                continue
            nil = element.get(f"{{{XSI_NS}}}nil") == "true"
            fields[_local(element.tag)] = None if nil else (element.text or "")
        if not type_name or not fields.get("Id"):
            raise AdapterValidationError(
                "a Notification's sObject lacks its type or Id", status_code=400
            )
        items.append(((note_id.text or "").strip(), type_name, fields))
    if not items:
        raise AdapterValidationError("the outbound message has no Notification", status_code=400)
    return OutboundMessage(
        organization_id=org_id,
        action_id=(action.text or "").strip() if action is not None else None,
        notifications=items,
    )


def _typed(spec: EntitySpec | None, fields: dict[str, Any]) -> dict[str, Any]:
    """XML text values typed by the entity's declaration (booleans and numbers)."""
    if spec is None:
        return fields
    types = spec.all_fields
    out: dict[str, Any] = {}
    for name, value in fields.items():
        kind = types.get(name)
        if value is None or kind is None:
            out[name] = value
        elif kind == "boolean":
            out[name] = value.strip().lower() == "true"
        elif kind == "int":
            try:
                out[name] = int(value)
            except ValueError:
                out[name] = value
        elif kind in ("double", "currency", "percent"):
            try:
                out[name] = float(value)
            except ValueError:
                out[name] = value
        else:
            out[name] = value
    return out


def outbound_events(message: OutboundMessage) -> list[WebhookEvent]:
    events: list[WebhookEvent] = []
    for note_id, type_name, fields in message.notifications:
        spec = entity_for_sobject(type_name)
        data = _typed(spec, fields)
        events.append(
            WebhookEvent(
                entity=spec.name if spec else type_name,
                external_id=str(fields["Id"]),
                # An outbound message does not say whether the record was created or
                # changed; it carries the fields the admin chose, not necessarily all.
                action="changed",
                data=data,
                modified_at=parse_timestamp(fields.get("SystemModstamp"))
                or parse_timestamp(fields.get("LastModifiedDate")),
                event_id=note_id or None,
            )
        )
    return events


def ack_response() -> WebhookResponse:
    return WebhookResponse(status_code=200, body=ACK_BODY, media_type=ACK_MEDIA_TYPE)


# -- relayed change events -------------------------------------------------------------


RELAY_TOLERANCE = timedelta(minutes=5)


def verify_relay(request: WebhookRequest, relay_secret: str, now: datetime) -> bool:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` among the
    space-separated signatures, and a timestamp within five minutes of ``now``.

    The signature comes from the ``standardwebhooks`` library; the timestamp is checked
    here against the adapter's clock (the library reads the wall clock itself).
    """
    headers = request.headers
    msg_id = headers.get("webhook-id")
    raw_stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not raw_stamp or not signatures or not raw_stamp.isdigit():
        return False
    sent = datetime.fromtimestamp(int(raw_stamp), tz=UTC)
    if abs(now - sent) > RELAY_TOLERANCE:
        return False
    try:
        body = request.body.decode()
        expected = Webhook(relay_secret).sign(msg_id, sent, body)
    except (WebhookVerificationError, ValueError, TypeError):
        return False
    return any(
        hmac.compare_digest(expected.encode(), candidate.encode())
        for candidate in signatures.split(" ")
        if candidate.startswith("v1,")
    )


def change_event_payload(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AdapterValidationError("the change event is not JSON", status_code=400) from None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if isinstance(data, dict) and isinstance(data.get("payload"), dict):
        data = data["payload"]
    if not isinstance(data, dict) or not isinstance(data.get("ChangeEventHeader"), dict):
        raise AdapterValidationError("the change event has no ChangeEventHeader", status_code=400)
    return data


def change_events(body: bytes) -> list[WebhookEvent]:
    payload = change_event_payload(body)
    header = payload["ChangeEventHeader"]
    entity_name = header.get("entityName")
    change_type = str(header.get("changeType") or "")
    record_ids = header.get("recordIds")
    if not isinstance(entity_name, str) or not isinstance(record_ids, list):
        raise AdapterValidationError(
            "the ChangeEventHeader lacks entityName or recordIds", status_code=400
        )
    spec = entity_for_sobject(entity_name)
    # GAP_* events carry no field values (changeType is prefixed GAP_): the engine
    # fetches the record. A wildcard id ("001*") names no record.
    action = _CDC_ACTIONS.get(change_type, "changed")
    stamp = header.get("commitTimestamp")
    modified_at = (
        datetime.fromtimestamp(stamp / 1000, tz=UTC) if isinstance(stamp, int | float) else None
    )
    base_id = header.get("transactionKey")
    sequence = header.get("sequenceNumber")
    events: list[WebhookEvent] = []
    for record_id in record_ids:
        if not isinstance(record_id, str) or record_id.endswith("*"):
            continue
        event_id = f"{base_id}:{sequence}:{record_id}" if base_id else None
        events.append(
            WebhookEvent(
                entity=spec.name if spec else entity_name,
                external_id=record_id,
                action=action,  # type: ignore[arg-type]
                # CDC carries only the changed fields of an update; the engine fetches.
                data=None,
                modified_at=modified_at,
                event_id=event_id,
            )
        )
    return events
