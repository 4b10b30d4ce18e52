"""Dataverse webhooks: endpoint authentication and the ``RemoteExecutionContext`` body.

Registration (register-web-hook.md): a webhook service endpoint authenticates with one of

- ``WebhookKey``: a query string ``?code=<value>``;
- ``HttpHeader``: one or more ``Key: Value`` headers;
- ``HttpQueryString``: one or more ``?Key1=Value1&Key2=Value2`` parameters;

and "any request to the endpoint configured should fail when the authentication options
passed in the request do not match. This is the responsibility of the endpoint." There is
no signature over the body: the secret is a shared key.

The integration's webhook secret names the scheme (see :class:`WebhookAuth`)::

    <value>                                  WebhookKey (``code``)
    WebhookKey:<value>
    HttpHeader:<name>=<value>[&<name>=<value>...]      (form-encoded pairs)
    HttpQueryString:<name>=<value>[&<name>=<value>...]

The body (use-webhooks.md) is the JSON serialization of
``Microsoft.Xrm.Sdk.RemoteExecutionContext``: ``MessageName`` (Create, Update, Delete...),
``PrimaryEntityName``, ``PrimaryEntityId``, ``InputParameters`` (a key/value list whose
``Target`` is an ``Entity`` with an ``Attributes`` key/value list, or an
``EntityReference`` for Delete), ``OperationCreatedOn`` as ``/Date(ms[+-hhmm])/``,
``OperationId``, ``CorrelationId``, ``RequestId``. Headers ``x-ms-dynamics-organization``,
``x-ms-dynamics-entity-name``, ``x-ms-dynamics-request-name`` accompany it; past 256 KB
``x-ms-dynamics-msg-size-exceeded`` is set and ``InputParameters`` etc. are dropped.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson

from castiel_sync.sdk import AdapterValidationError, WebhookEvent, WebhookRequest

Scheme = Literal["WebhookKey", "HttpHeader", "HttpQueryString"]
_SCHEMES: tuple[Scheme, ...] = ("WebhookKey", "HttpHeader", "HttpQueryString")
_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")
_ACTIONS: dict[str, Literal["created", "updated", "deleted"]] = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
}


@dataclass(frozen=True)
class WebhookAuth:
    """The registered authentication: its scheme and the key/value pairs it must carry."""

    scheme: Scheme
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, secret: str) -> WebhookAuth:
        scheme, sep, rest = secret.partition(":")
        if not sep or scheme not in _SCHEMES:
            return cls("WebhookKey", (("code", secret),))
        if scheme == "WebhookKey":
            return cls("WebhookKey", (("code", rest),))
        pairs = tuple(parse_qsl(rest, keep_blank_values=True))
        return cls(scheme, pairs)  # type: ignore[arg-type]

    def matches(self, request: WebhookRequest) -> bool:
        """Every registered pair is present with the same value (constant-time compares)."""
        if not self.pairs or any(not name or not value for name, value in self.pairs):
            return False
        ok = True
        query = request.query
        for name, expected in self.pairs:
            if self.scheme == "HttpHeader":
                received = request.headers.get_list(name)
            else:
                received = query.get_list(name)
            # Exactly one value: a repeated parameter or header is not what was registered.
            given = received[0] if len(received) == 1 else ""
            ok &= hmac.compare_digest(given.encode(), expected.encode()) and len(received) == 1
        return ok


def parse_wcf_date(value: Any) -> datetime | None:
    """``/Date(1506409448000-0700)/`` -> an aware UTC datetime. The milliseconds are UTC;
    the offset only says which local zone the sender was in (DataContractJsonSerializer)."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.replace("\\/", "/"))
    if not match:
        return None
    return datetime.fromtimestamp(int(match.group(1)) / 1000, tz=UTC)


def _pairs(items: Any) -> dict[str, Any]:
    """A DataContract key/value list as a dict."""
    if not isinstance(items, list):
        return {}
    return {
        str(item["key"]): item.get("value")
        for item in items
        if isinstance(item, dict) and isinstance(item.get("key"), str)
    }


def attribute_value(value: Any) -> Any:
    """One serialized attribute value as plain JSON: dates to ISO 8601, an EntityReference
    to its id, OptionSetValue and Money to their ``Value``."""
    if isinstance(value, str):
        when = parse_wcf_date(value)
        return when.isoformat().replace("+00:00", "Z") if when else value
    if isinstance(value, dict):
        kind = str(value.get("__type") or "")
        if kind.startswith("EntityReference") or ("LogicalName" in value and "Id" in value):
            return value.get("Id")
        if "Value" in value:
            return value.get("Value")
    return value


def load_context(body: bytes) -> dict[str, Any]:
    try:
        context = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AdapterValidationError(
            "the Dataverse webhook body is not JSON", status_code=400
        ) from None
    if not isinstance(context, dict) or not context.get("PrimaryEntityName"):
        raise AdapterValidationError(
            "the Dataverse webhook body is not a RemoteExecutionContext", status_code=400
        )
    return context


def events(body: bytes) -> list[WebhookEvent]:
    """The change a ``RemoteExecutionContext`` announces, as one event.

    ``data`` is the ``Target`` entity's attributes on Create (the row as created). On
    Update the Target holds only the changed columns, so ``data`` stays None and the
    engine fetches the whole row; on Delete the Target is an EntityReference.
    """
    context = load_context(body)
    entity = str(context["PrimaryEntityName"]).lower()
    message = str(context.get("MessageName") or "")
    action = _ACTIONS.get(message.lower(), "changed")
    target = _pairs(context.get("InputParameters")).get("Target")
    record_id = context.get("PrimaryEntityId")
    if isinstance(target, dict) and not record_id:
        record_id = target.get("Id")
    if not isinstance(record_id, str) or not record_id:
        raise AdapterValidationError(
            "the Dataverse webhook names no record (PrimaryEntityId)", status_code=400
        )
    data: dict[str, Any] | None = None
    attributes = target.get("Attributes") if isinstance(target, dict) else None
    if action == "created" and isinstance(attributes, list):
        data = {key: attribute_value(value) for key, value in _pairs(attributes).items()}
    modified = parse_wcf_date(context.get("OperationCreatedOn"))
    event_id = (
        context.get("OperationId") or context.get("RequestId") or context.get("CorrelationId")
    )
    return [
        WebhookEvent(
            entity=entity,
            external_id=record_id.lower(),
            action=action,
            data=data,
            modified_at=modified,
            event_id=str(event_id) if event_id else None,
        )
    ]
