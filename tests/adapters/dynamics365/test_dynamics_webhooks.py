"""Dataverse webhook authentication (WebhookKey, HttpHeader, HttpQueryString) and the
RemoteExecutionContext body, with the documented example payload as a test vector."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from castiel_sync.adapters.dynamics365 import Dynamics365Adapter, parse_wcf_date
from castiel_sync.sdk import AdapterValidationError, WebhookRequest
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator

# The example body of use-webhooks.md ("Update" of a contact, PostOperation, async),
# trimmed of its ParentContext, re-indented, otherwise verbatim.
DOC_EXAMPLE = rb"""{
  "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
  "CorrelationId": "b374239d-4233-41a9-8b17-a86cb4f737b5",
  "Depth": 1,
  "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
  "InputParameters": [{
      "key": "Target",
      "value": {
          "__type": "Entity:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
          "Attributes": [{
              "key": "firstname",
              "value": "James"
          }, {
              "key": "contactid",
              "value": "6d81597f-0f9f-e711-8122-000d3aa2331c"
          }, {
              "key": "fullname",
              "value": "James Glynn (sample)"
          }, {
              "key": "yomifullname",
              "value": "James Glynn (sample)"
          }, {
              "key": "modifiedon",
              "value": "\/Date(1506384247000)\/"
          }, {
              "key": "modifiedby",
              "value": {
                  "__type": "EntityReference:http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts",
                  "Id": "75c2dd85-e89e-e711-8122-000d3aa2331c",
                  "KeyAttributes": [],
                  "LogicalName": "systemuser",
                  "Name": null,
                  "RowVersion": null
              }
          }, {
              "key": "modifiedonbehalfby",
              "value": null
          }],
          "EntityState": null,
          "FormattedValues": [],
          "Id": "6d81597f-0f9f-e711-8122-000d3aa2331c",
          "KeyAttributes": [],
          "LogicalName": "contact",
          "RelatedEntities": [],
          "RowVersion": null
      }
  }],
  "IsExecutingOffline": false,
  "IsInTransaction": false,
  "IsOfflinePlayback": false,
  "IsolationMode": 1,
  "MessageName": "Update",
  "Mode": 1,
  "OperationCreatedOn": "\/Date(1506409448000-0700)\/",
  "OperationId": "4af10637-4ea2-e711-8122-000d3aa2331c",
  "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
  "OrganizationName": "OrgName",
  "OutputParameters": [],
  "OwningExtension": {
      "Id": "75417616-4ea2-e711-8122-000d3aa2331c",
      "KeyAttributes": [],
      "LogicalName": "sdkmessageprocessingstep",
      "Name": null,
      "RowVersion": null
  },
  "ParentContext": null,
  "PostEntityImages": [{
      "key": "AsynchronousStepPrimaryName",
      "value": {
          "Attributes": [{
              "key": "fullname",
              "value": "James Glynn (sample)"
          }, {
              "key": "contactid",
              "value": "6d81597f-0f9f-e711-8122-000d3aa2331c"
          }],
          "EntityState": null,
          "FormattedValues": [],
          "Id": "6d81597f-0f9f-e711-8122-000d3aa2331c",
          "KeyAttributes": [],
          "LogicalName": "contact",
          "RelatedEntities": [],
          "RowVersion": null
      }
  }],
  "PreEntityImages": [],
  "PrimaryEntityId": "6d81597f-0f9f-e711-8122-000d3aa2331c",
  "PrimaryEntityName": "contact",
  "RequestId": null,
  "SecondaryEntityName": "none",
  "SharedVariables": [],
  "Stage": 40,
  "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c"
}"""


def delivery(url: str, body: bytes = DOC_EXAMPLE, **headers: str) -> WebhookRequest:
    return WebhookRequest(method="POST", url=url, headers=headers, body=body)


def test_documented_example_parses() -> None:
    (event,) = Dynamics365Adapter().parse_webhook(delivery("https://c.example/hook"))
    assert event.entity == "contact"
    assert event.external_id == "6d81597f-0f9f-e711-8122-000d3aa2331c"
    assert event.action == "updated"
    assert event.event_id == "4af10637-4ea2-e711-8122-000d3aa2331c"
    # The milliseconds are UTC; "-0700" is only the sender's zone.
    assert event.modified_at == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
    # An Update's Target holds only changed columns: the engine fetches the whole row.
    assert event.data is None


def test_wcf_dates() -> None:
    assert parse_wcf_date("/Date(1506384247000)/") == datetime(2017, 9, 26, 0, 4, 7, tzinfo=UTC)
    assert parse_wcf_date("\\/Date(0+0000)\\/") == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_wcf_date("2017-09-26") is None


def test_create_carries_the_target_attributes() -> None:
    body = orjson.loads(DOC_EXAMPLE)
    body["MessageName"] = "Create"
    (event,) = Dynamics365Adapter().parse_webhook(
        delivery("https://c.example/hook", orjson.dumps(body))
    )
    assert event.action == "created" and event.data is not None
    assert event.data["firstname"] == "James"
    assert event.data["modifiedon"] == "2017-09-26T00:04:07Z"
    assert event.data["modifiedby"] == "75c2dd85-e89e-e711-8122-000d3aa2331c"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"MessageName": "Update"}'])
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(AdapterValidationError):
        Dynamics365Adapter().parse_webhook(delivery("https://c.example/hook", body))


@pytest.mark.parametrize(
    ("secret", "url", "headers", "ok"),
    [
        # WebhookKey: ?code=<value> (register-web-hook.md)
        ("k3y", "https://c.example/hook?code=k3y", {}, True),
        ("WebhookKey:k3y", "https://c.example/hook?code=k3y", {}, True),
        ("k3y", "https://c.example/hook?code=k3Y", {}, False),
        ("k3y", "https://c.example/hook", {}, False),
        ("k3y", "https://c.example/hook?code=k3y&code=k3y", {}, False),
        ("k3y", "https://c.example/hook", {"code": "k3y"}, False),
        # HttpHeader: every registered header
        (
            "HttpHeader:x-api-key=abc&x-tenant=t1",
            "https://c.example/hook",
            {"x-api-key": "abc", "x-tenant": "t1"},
            True,
        ),
        (
            "HttpHeader:x-api-key=abc&x-tenant=t1",
            "https://c.example/hook",
            {"x-api-key": "abc"},
            False,
        ),
        ("HttpHeader:x-api-key=abc", "https://c.example/hook?x-api-key=abc", {}, False),
        # HttpQueryString: every registered parameter
        (
            "HttpQueryString:Key1=Value1&Key2=Value2",
            "https://c.example/hook?Key1=Value1&Key2=Value2",
            {},
            True,
        ),
        (
            "HttpQueryString:Key1=Value1&Key2=Value2",
            "https://c.example/hook?Key1=Value1",
            {},
            False,
        ),
        ("", "https://c.example/hook?code=", {}, False),
    ],
)
def test_authentication_variants(secret: str, url: str, headers: dict[str, str], ok: bool) -> None:
    assert Dynamics365Adapter().validate_webhook_signature(delivery(url, **headers), secret) is ok


@pytest.mark.parametrize(
    "secret", ["plain-key", "HttpHeader:x-castiel-key=s3cret", "HttpQueryString:token=s3cret"]
)
async def test_emulator_deliveries_authenticate(secret: str, emulator: Dynamics365Emulator) -> None:
    record = emulator.store["account"].create({"name": "Hooked"})
    emulator.webhook_secret = secret
    request = emulator.build_webhook(emulator.webhook_payload("account", record, "created"))
    adapter = Dynamics365Adapter()
    assert adapter.validate_webhook_signature(request, secret)
    assert not adapter.validate_webhook_signature(request, secret + "x")
    assert request.headers["x-ms-dynamics-entity-name"] == "account"
    assert request.headers["x-ms-dynamics-request-name"] == "Create"
    (event,) = adapter.parse_webhook(request)
    assert (event.external_id, event.action) == (record.id, "created")
    assert event.data is not None and event.data["name"] == "Hooked"
    assert adapter.handle_webhook_handshake(request, secret) is None


async def test_delete_context_has_an_entity_reference(emulator: Dynamics365Emulator) -> None:
    record = emulator.store["contact"].create({"lastname": "Gone"})
    emulator.store["contact"].delete(record.id)
    payload = emulator.webhook_payload("contact", record, "deleted")
    (event,) = Dynamics365Adapter().parse_webhook(emulator.build_webhook(payload))
    assert (event.entity, event.action, event.data) == ("contact", "deleted", None)
