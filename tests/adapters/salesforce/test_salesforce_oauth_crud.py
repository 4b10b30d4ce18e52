"""The web server OAuth flow against the emulated Salesforce login, and record writes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from castiel_sync.adapters.salesforce import SalesforceAdapter
from castiel_sync.sdk import (
    AdapterValidationError,
    Credentials,
    FetchOptions,
    NotFoundError,
    NotSupportedError,
)
from castiel_sync.testing import OAuthEmulator
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator


async def test_web_server_flow_then_refresh(
    oauth: OAuthEmulator, emulator: SalesforceEmulator
) -> None:
    (client_app,) = oauth.clients.values()  # registered by the conftest fixture
    CLIENT_ID, CLIENT_SECRET = client_app.client_id, client_app.client_secret
    REDIRECT_URI, INSTANCE_URL = client_app.redirect_uris[0], emulator.base_url
    async with httpx.AsyncClient(transport=oauth.transport()) as client:
        authorize = await client.get(
            f"{oauth.base_url}/services/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "state": "s1",
            },
        )
        assert authorize.status_code == 302
        code = parse_qs(urlparse(authorize.headers["location"]).query)["code"][0]
        token = await client.post(
            f"{oauth.base_url}/services/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": REDIRECT_URI,
            },
        )
        body = token.json()
        assert token.status_code == 200
        assert {"access_token", "refresh_token", "instance_url", "id", "token_type",
                "issued_at", "signature"} <= set(body)  # fmt: skip
        assert "expires_in" not in body  # Salesforce states no lifetime
        assert body["token_type"] == "Bearer" and body["instance_url"] == INSTANCE_URL
        assert body["id"].endswith("/id/00D5e000000KQ2eEAG/0055e000003ABCdAAO")
        expected = hmac.new(
            CLIENT_SECRET.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
        ).digest()
        assert base64.b64decode(body["signature"]) == expected

        refreshed = await client.post(
            f"{oauth.base_url}/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        again = refreshed.json()
        assert refreshed.status_code == 200 and "refresh_token" not in again  # no rotation
        assert again["access_token"] != body["access_token"]
        oauth.revoke_refresh_token(body["refresh_token"])
        dead = await client.post(
            f"{oauth.base_url}/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        assert dead.status_code == 400
        assert dead.json() == {
            "error": "invalid_grant",
            "error_description": "expired access/refresh token",
        }

    adapter = SalesforceAdapter().configure(transport=emulator.transport())
    await adapter.connect(
        Credentials(access_token=again["access_token"], instance_url=again["instance_url"])
    )
    result = await adapter.test_connection()
    assert result.ok and result.details["api_version"] == "v62.0"
    await adapter.disconnect()


async def test_create_update_delete(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    record_id = await adapter.create_record(
        "Opportunity",
        {"name": "Big deal", "StageName": "Prospecting", "CloseDate": "2024-06-30", "Amount": 5e4},
    )
    assert record_id.startswith("006") and len(record_id) == 18
    post = emulator.requests_to("/services/data/v62.0/sobjects/Opportunity/", "POST")[0]
    assert post.json() == {
        "Name": "Big deal", "StageName": "Prospecting", "CloseDate": "2024-06-30", "Amount": 5e4,
    }  # fmt: skip
    assert post.status == 201
    await adapter.update_record("Opportunity", record_id, {"StageName": "Closed Won"})
    row = emulator.row("Opportunity", record_id)
    assert row["StageName"] == "Closed Won" and row["IsWon"] is True
    patch = emulator.requests_to("/services/data/v62.0/sobjects/Opportunity/", "PATCH")[0]
    assert patch.status == 204
    await adapter.delete_record("Opportunity", record_id)
    assert emulator.requests[-1].status == 204
    assert emulator.row("Opportunity", record_id)["IsDeleted"] is True
    with pytest.raises(NotFoundError):
        await adapter.update_record("Opportunity", record_id, {"StageName": "Lost"})


async def test_writes_are_checked_before_sending(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    with pytest.raises(AdapterValidationError):
        await adapter.create_record("Account", {"Name": "x", "SystemModstamp": "2024-01-01"})
    with pytest.raises(AdapterValidationError):
        await adapter.update_record("Opportunity", "006D000000IomazIAB", {"IsWon": True})
    with pytest.raises(NotSupportedError):
        await adapter.create_record("Task", {"Subject": "inbound only"})
    with pytest.raises(NotFoundError):
        await adapter.delete_record("Account", "../../limits")
    assert emulator.requests_to("/services/data") == []


async def test_custom_fields_pass_through(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    # The emulator's schema has no custom fields, so Salesforce's INVALID_FIELD comes back.
    with pytest.raises(AdapterValidationError) as info:
        await adapter.create_record("Account", {"Name": "x", "Tier__c": "Gold"})
    assert info.value.detail is not None and "INVALID_FIELD" in info.value.detail


async def test_api_version_is_configurable(emulator: SalesforceEmulator) -> None:
    adapter = SalesforceAdapter(api_version="v60.0").configure(transport=emulator.transport())
    await adapter.connect(emulator.credentials())
    emulator.seed("Account", {"Name": "x"})
    await adapter.fetch_records("Account", FetchOptions())
    assert emulator.requests[-1].path == "/services/data/v60.0/query/"
    await adapter.connect(emulator.credentials(api_version="v61.0"))
    await adapter.fetch_records("Account", FetchOptions())
    assert emulator.requests[-1].path == "/services/data/v61.0/query/"
    await adapter.disconnect()
