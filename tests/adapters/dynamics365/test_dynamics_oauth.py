"""The emulated Microsoft identity platform: auth code + PKCE with the per-org scope, a new
refresh token on every refresh (the old one not revoked), AADSTS error bodies."""

from __future__ import annotations

import httpx

from castiel_sync.adapters.dynamics365 import AUTHORIZE_URL, TOKEN_URL, scope_for
from castiel_sync.testing import s256
from castiel_sync.testing.emulators.dynamics365 import DataverseOAuth

CLIENT_ID = "51f81489-12ee-4a9e-aaae-a2591f45987d"
SECRET = "castiel-entra-client-secret"
REDIRECT = "https://castiel.example/oauth/callback"


def test_endpoints_and_scope() -> None:
    assert AUTHORIZE_URL.format(tenant="contoso.onmicrosoft.com") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    )
    assert TOKEN_URL.endswith("/oauth2/v2.0/token")
    assert scope_for("https://contoso.crm4.dynamics.com/api/data/v9.2") == (
        "https://contoso.crm4.dynamics.com/.default offline_access"
    )


async def authorize(oauth: DataverseOAuth, client: httpx.AsyncClient, scope: str) -> httpx.URL:
    response = await client.get(
        oauth.authorize_url,
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "st4te",
            "code_challenge": s256("v" * 50),
            "code_challenge_method": "S256",
        },
    )
    assert response.status_code == 302
    return httpx.URL(response.headers["location"])


async def test_code_flow_and_refresh_rotation(oauth: DataverseOAuth) -> None:
    assert oauth.authorize_url.endswith("/contoso.onmicrosoft.com/oauth2/v2.0/authorize")
    async with httpx.AsyncClient(transport=oauth.transport()) as client:
        location = await authorize(oauth, client, f"{oauth.resource}/.default offline_access")
        tokens = (
            await client.post(
                oauth.token_url,
                data={
                    "grant_type": "authorization_code",
                    "code": location.params["code"],
                    "redirect_uri": REDIRECT,
                    "code_verifier": "v" * 50,
                    "client_id": CLIENT_ID,
                    "client_secret": SECRET,
                },
            )
        ).json()
        first_refresh = tokens["refresh_token"]
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": first_refresh,
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
        }
        renewed = (await client.post(oauth.token_url, data=refresh)).json()
        assert renewed["refresh_token"] != first_refresh
        # The identity platform does not revoke the refresh token it replaced.
        again = await client.post(oauth.token_url, data=refresh)
        assert again.status_code == 200


async def test_wrong_scope_is_refused(oauth: DataverseOAuth) -> None:
    async with httpx.AsyncClient(transport=oauth.transport()) as client:
        location = await authorize(oauth, client, "https://other.crm.dynamics.com/.default")
    assert location.params["error"] == "invalid_scope"
    assert location.params["state"] == "st4te"


async def test_dead_refresh_token_error_body(oauth: DataverseOAuth) -> None:
    async with httpx.AsyncClient(transport=oauth.transport()) as client:
        response = await client.post(
            oauth.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": "rt_unknown",
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
            },
        )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert body["error_description"].startswith("AADSTS70008: ")
    assert "\r\nTrace ID: " in body["error_description"]
    assert body["error_codes"] == [70008]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
