"""HubSpot webhook signatures (v1, v2, v3) and payload parsing.

Request validation (developers.hubspot.com/docs/api/webhooks/validating-requests and
.../faq/v1-request-validation, .../faq/v2-request-validation):

- v1: ``X-HubSpot-Signature`` = hex SHA-256 of ``client_secret + body``; sent with
  ``X-HubSpot-Signature-Version: v1`` for webhooks-API subscriptions.
- v2: hex SHA-256 of ``client_secret + method + URI + body``; the URI exactly as
  requested, protocol and query included.
- v3: ``X-HubSpot-Signature-v3`` = base64 HMAC-SHA256 keyed with the client secret over
  ``method + URI + body + timestamp`` (``X-HubSpot-Request-Timestamp``, epoch ms);
  reject a timestamp older than five minutes; decode the URL-encoded characters the docs
  list in the URI before signing (changelog "Introducing version 3 of Webhook signatures").

Payload: a JSON array of events ``{eventId, subscriptionId, portalId, appId, occurredAt,
subscriptionType, attemptNumber, objectId, changeSource, propertyName?, propertyValue?}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from castiel_sync.adapters.hubspot._entities import entity_for_webhook_object
from castiel_sync.sdk import WebhookEvent, WebhookRequest

SIGNATURE_HEADER = "X-HubSpot-Signature"
VERSION_HEADER = "X-HubSpot-Signature-Version"
SIGNATURE_V3_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
MAX_AGE_MS = 5 * 60 * 1000

# The v3 rule's table of encoded characters to decode in the request URI (and only
# these: other escapes stay as received).
_V3_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}

_ACTIONS: dict[str, Literal["created", "updated", "deleted", "changed"]] = {
    "creation": "created",
    "propertyChange": "updated",
    "deletion": "deleted",
    "privacyDeletion": "deleted",
    "restore": "created",
    "merge": "changed",
    "associationChange": "changed",
}


def v3_uri(uri: str) -> str:
    """``uri`` with the characters the v3 rule lists decoded (hex digits either case)."""
    out: list[str] = []
    i = 0
    while i < len(uri):
        chunk = uri[i : i + 3].upper()
        if uri[i] == "%" and chunk in _V3_DECODE:
            out.append(_V3_DECODE[chunk])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def signature_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def signature_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(
        secret.encode() + method.upper().encode() + uri.encode() + body
    ).hexdigest()


def signature_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.upper().encode() + v3_uri(uri).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(request: WebhookRequest, secret: str, now: datetime) -> bool:
    """Whether ``request`` carries a valid signature: v3 when present, else the version
    ``X-HubSpot-Signature-Version`` names (v1 when absent)."""
    if not secret:
        return False
    headers = request.headers
    v3 = headers.get(SIGNATURE_V3_HEADER)
    if v3 is not None:
        stamp = headers.get(TIMESTAMP_HEADER, "")
        if not stamp.isdigit():
            return False
        age = now.timestamp() * 1000 - int(stamp)
        if abs(age) > MAX_AGE_MS:
            return False
        expected = signature_v3(secret, request.method, request.url, request.body, stamp)
        return hmac.compare_digest(expected.encode(), v3.strip().encode())
    given = headers.get(SIGNATURE_HEADER)
    if given is None:
        return False
    version = headers.get(VERSION_HEADER, "v1").strip().lower()
    if version == "v1":
        expected = signature_v1(secret, request.body)
    elif version == "v2":
        expected = signature_v2(secret, request.method, request.url, request.body)
    else:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def _millis(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    return None


def parse(body: bytes) -> list[WebhookEvent]:
    """The events of a delivery; unknown object types and malformed items are skipped."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list):
        return []
    events = []
    for item in payload:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("subscriptionType") or "")
        obj, _, change = kind.partition(".")
        spec = entity_for_webhook_object(obj)
        object_id = item.get("objectId")
        if spec is None or object_id in (None, "") or isinstance(object_id, bool | dict | list):
            continue
        event_id = item.get("eventId")
        events.append(
            WebhookEvent(
                entity=spec.name,
                external_id=str(object_id),
                action=_ACTIONS.get(change, "changed"),
                # HubSpot sends ids and the changed property only: the engine fetches.
                data=None,
                modified_at=_millis(item.get("occurredAt")),
                event_id=None if event_id is None else str(event_id),
            )
        )
    return events
