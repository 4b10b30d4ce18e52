"""Connecting integrations: the OAuth round trip against the emulated OAuth server, API
keys, user-scoped connections and the connection test."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from api_support import CLIENT_ID, PUBLIC_URL, Api
from sqlalchemy import select, update

from castiel_sync.api.auth import Role
from castiel_sync.domain.tenancy import SystemScope
from castiel_sync.sdk import (
    AuthError,
    ConnectionTestResult,
    Credentials,
    FetchOptions,
    FetchResult,
    IntegrationAdapter,
)
from castiel_sync.store.tables import OAuthStateRow
from castiel_sync.testing.oauth import OAuthEmulator
from castiel_sync.vault.orphans import delete_orphaned_verifiers, purge_expired_authorizations

TENANT_SECRET = "tenant-tenanta-salesforce-sales-team-oauth"


async def provider_redirect(server: OAuthEmulator, url: str) -> dict[str, str]:
    """What the user's browser does: open the provider URL, approve, follow back."""
    async with httpx.AsyncClient(transport=server.transport()) as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(PUBLIC_URL + "/oauth/callback?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(api: Api, integration_id: str, headers: dict[str, str], **body: Any) -> str:
    response = await api.client.post(
        f"/integrations/{integration_id}/oauth/authorize", json=body or None, headers=headers
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["authorizationUrl"]
    return url


async def test_oauth_round_trip(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    url = await authorize(api, integration["id"], api.admin_a)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://login.salesforce.com/services/oauth2/authorize?")
    assert query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [PUBLIC_URL + "/oauth/callback"]
    assert query["scope"] == ["api refresh_token"]

    params = await provider_redirect(api.oauth, url)
    callback = await api.client.get("/oauth/callback", params=params)
    assert callback.status_code == 200, callback.text
    body = callback.json()
    assert body["status"] == "connected" and body["scope"] == "tenant"
    assert body["credentialSecretName"] == TENANT_SECRET
    assert api.oauth.token_calls[-1].auth_method == "client_secret_post"
    assert api.oauth.token_calls[-1].status == 200

    stored = json.loads(await api.ctx.vault.get(TENANT_SECRET))
    assert api.oauth.access_token_is_valid(stored["access_token"])
    assert api.oauth.refresh_token_is_valid(stored["refresh_token"])
    assert stored["instance_url"] == "https://acme.my.salesforce.com"
    assert stored["access_token"] not in callback.text
    assert stored["refresh_token"] not in callback.text

    # The state works once.
    replay = await api.client.get("/oauth/callback", params=params)
    assert replay.status_code == 400
    assert "already used" in replay.json()["detail"]

    got = (await api.client.get(f"/integrations/{integration['id']}", headers=api.admin_a)).json()
    assert got["credentialSecretName"] == TENANT_SECRET
    connections = await api.client.get(
        f"/integrations/{integration['id']}/connections", headers=api.admin_a
    )
    [connection] = connections.json()
    assert connection["scope"] == "tenant" and connection["status"] == "active"
    assert connection["tokenExpiresAt"] is not None
    assert stored["access_token"] not in connections.text

    activated = await api.client.post(
        f"/integrations/{integration['id']}/activate", headers=api.admin_a
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["status"] == "active" and activated.json()["syncEnabled"] is True
    audit = (await api.client.get("/audit-log", headers=api.admin_a)).json()
    connect = next(e for e in audit if e["action"] == "integration.credential.connect")
    assert connect["after"]["credentialSecretName"] == TENANT_SECRET
    assert connect["actorUserId"] == "alice"
    assert await api.ctx.vault.list("pkce-") == []  # the verifier is gone


async def test_pkce_verifier_is_checked_by_the_token_endpoint(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    url = await authorize(api, integration["id"], api.admin_a)
    params = await provider_redirect(api.oauth, url)
    # Swap the stored verifier: the code was bound to the original one's challenge.
    [name] = await api.ctx.vault.list("pkce-")
    stash = json.loads(await api.ctx.vault.get(name))
    stash["code_verifier"] = "x" * 64
    await api.ctx.vault.put(name, json.dumps(stash))
    response = await api.client.get("/oauth/callback", params=params)
    assert response.status_code == 400
    assert "invalid_grant" in response.json()["detail"]
    assert api.oauth.token_calls[-1].error == "invalid_grant"
    assert await api.ctx.vault.list("tenant-") == []
    got = (await api.client.get(f"/integrations/{integration['id']}", headers=api.admin_a)).json()
    assert got["credentialSecretName"] is None


async def test_callback_refusals(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    unknown = await api.client.get("/oauth/callback", params={"state": "nope", "code": "c"})
    assert unknown.status_code == 400
    url = await authorize(api, integration["id"], api.admin_a)
    state = parse_qs(urlsplit(url).query)["state"][0]
    denied = await api.client.get(
        "/oauth/callback", params={"state": state, "error": "access_denied"}
    )
    assert denied.status_code == 400 and "access_denied" in denied.json()["detail"]
    again = await api.client.get("/oauth/callback", params={"state": state, "code": "c"})
    assert again.status_code == 400  # the refusal used the state up


async def test_an_expired_authorization_is_refused_and_purged(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    url = await authorize(api, integration["id"], api.admin_a)
    params = await provider_redirect(api.oauth, url)
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with api.ctx.store.transaction() as session:  # the user came back too late
        await session.execute(update(OAuthStateRow).values(expires_at=past))
    assert len(await api.ctx.vault.list("pkce-")) == 1
    late = await api.client.get("/oauth/callback", params=params)
    assert late.status_code == 400 and "expired" in late.json()["detail"]
    assert api.oauth.token_calls == []
    assert await api.ctx.vault.list("tenant-") == []
    store, vault = api.ctx.store, api.ctx.vault
    assert await purge_expired_authorizations(store, vault, SystemScope("tests")) == 1
    assert await vault.list("pkce-") == []
    async with store.transaction() as session:
        assert await session.scalar(select(OAuthStateRow.state)) is None


async def test_deleting_an_integration_deletes_its_pending_authorizations(api: Api) -> None:
    await api.set_oauth_client()
    mine = await api.create_integration()
    theirs = await api.create_integration(api.admin_b)
    await authorize(api, mine["id"], api.admin_a)
    await authorize(api, theirs["id"], api.admin_b)
    assert len(await api.ctx.vault.list("pkce-")) == 2
    crossed = await api.client.delete(f"/integrations/{mine['id']}", headers=api.admin_b)
    assert crossed.status_code == 404
    assert len(await api.ctx.vault.list("pkce-")) == 2
    deleted = await api.client.delete(f"/integrations/{mine['id']}", headers=api.admin_a)
    assert deleted.status_code == 204
    async with api.ctx.store.transaction() as session:
        [(tenant, verifier)] = await session.execute(
            select(OAuthStateRow.tenant_id, OAuthStateRow.verifier_secret_name)
        )
    assert tenant == "tenantb" and await api.ctx.vault.list("pkce-") == [verifier]


async def test_authorize_without_an_oauth_client_says_who_can_fix_it(api: Api) -> None:
    integration = await api.create_integration()
    response = await api.client.post(
        f"/integrations/{integration['id']}/oauth/authorize", headers=api.admin_a
    )
    assert response.status_code == 409
    assert "PUT /providers/salesforce/oauth-client" in response.json()["detail"]


async def test_user_scoped_connection(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    carol = api.auth("tenanta", Role.USER, user="carol")
    forbidden = await api.client.post(
        f"/integrations/{integration['id']}/oauth/authorize",
        json={"scope": "tenant"},
        headers=carol,
    )
    assert forbidden.status_code == 403
    url = await authorize(api, integration["id"], carol, scope="user")
    callback = await api.client.get(
        "/oauth/callback", params=await provider_redirect(api.oauth, url)
    )
    assert callback.status_code == 200, callback.text
    name = "tenant-tenanta-user-carol-salesforce-sales-team-oauth"
    assert callback.json()["credentialSecretName"] == name
    assert json.loads(await api.ctx.vault.get(name))["access_token"]
    got = (await api.client.get(f"/integrations/{integration['id']}", headers=api.admin_a)).json()
    assert got["credentialSecretName"] is None  # a personal connection is not the tenant's
    mine = await api.client.get(f"/integrations/{integration['id']}/connections", headers=carol)
    assert [(c["scope"], c["userId"]) for c in mine.json()] == [("user", "carol")]
    dave = api.auth("tenanta", Role.USER, user="dave")
    theirs = await api.client.get(f"/integrations/{integration['id']}/connections", headers=dave)
    assert theirs.json() == []


class EmulatorAdapter(IntegrationAdapter):
    """Just enough adapter to test connections: valid when the emulator says so."""

    provider_id: ClassVar[str] = "salesforce"
    server: ClassVar[OAuthEmulator]

    async def connect(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def disconnect(self) -> None:
        pass

    async def test_connection(self) -> ConnectionTestResult:
        token = self.credentials.access_token
        if token is None or not self.server.access_token_is_valid(token.get_secret_value()):
            raise AuthError("the access token was rejected")
        return ConnectionTestResult(ok=True, message="connected", details={"org": "acme"})

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        return FetchResult()


async def test_test_connection(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    path = f"/integrations/{integration['id']}/test-connection"
    missing = await api.client.post(path, headers=api.admin_a)
    assert missing.status_code == 409
    assert "no adapter is installed for salesforce" in missing.json()["detail"]

    EmulatorAdapter.server = api.oauth
    api.adapters["salesforce"] = EmulatorAdapter
    no_credential = await api.client.post(path, headers=api.admin_a)
    assert no_credential.status_code == 409 and "credential" in no_credential.json()["detail"]

    url = await authorize(api, integration["id"], api.admin_a)
    await api.client.get("/oauth/callback", params=await provider_redirect(api.oauth, url))
    ok = await api.client.post(path, headers=api.admin_a)
    assert ok.json() == {"ok": True, "message": "connected", "details": {"org": "acme"}}
    api.oauth.expire_access_tokens()
    expired = await api.client.post(path, headers=api.admin_a)
    assert expired.status_code == 200
    assert expired.json()["ok"] is False
    assert expired.json()["message"] == "the access token was rejected"


async def test_api_key_entry(key_api: Api) -> None:
    api = key_api
    integration = await api.create_integration(provider="gong", instance="calls")
    path = f"/integrations/{integration['id']}"
    oauth = await api.client.post(f"{path}/oauth/authorize", headers=api.admin_a)
    assert oauth.status_code == 409 and "api-key" in oauth.json()["detail"]
    carol = api.auth("tenanta", Role.USER, user="carol")
    denied = await api.client.put(
        f"{path}/credentials/api-key", json={"apiKey": "k"}, headers=carol
    )
    assert denied.status_code == 403
    response = await api.client.put(
        f"{path}/credentials/api-key",
        json={"apiKey": "gong-key-7Hc2"},
        headers=api.admin_a,
    )
    assert response.status_code == 204, response.text
    name = "tenant-tenanta-gong-calls-apikey"
    assert json.loads(await api.ctx.vault.get(name)) == {"api_key": "gong-key-7Hc2"}
    got = (await api.client.get(path, headers=api.admin_a)).json()
    assert got["credentialSecretName"] == name
    activated = await api.client.post(f"{path}/activate", headers=api.admin_a)
    assert activated.status_code == 200
    audit = (await api.client.get("/audit-log", headers=api.admin_a)).text
    assert "gong-key-7Hc2" not in audit


async def test_a_vault_sweep_during_an_authorization_keeps_its_verifier(api: Api) -> None:
    await api.set_oauth_client()
    integration = await api.create_integration()
    url = await authorize(api, integration["id"], api.admin_a)
    await api.ctx.vault.put("pkce-left-by-a-crash", '{"code_verifier": "v"}')
    params = await provider_redirect(api.oauth, url)
    swept = await delete_orphaned_verifiers(api.ctx.store, api.ctx.vault)
    assert swept == ["pkce-left-by-a-crash"]  # the pending authorization's verifier stays
    response = await api.client.get("/oauth/callback", params=params)
    assert response.status_code == 200, response.text
    assert await api.ctx.vault.list("pkce-") == []
    assert await api.ctx.vault.list("tenant-") == [TENANT_SECRET]
