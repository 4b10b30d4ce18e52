"""The emulated OAuth 2 authorization server."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from castiel_sync.testing import CLIENT_SECRET_POST, FakeClock, OAuthEmulator, s256

REDIRECT = "https://castiel.example/oauth/callback"


@pytest.fixture
def server() -> OAuthEmulator:
    server = OAuthEmulator(
        extra_token_fields=lambda grant, client: {
            "instance_url": "https://na1.salesforce.emulator.test",
            "id": f"https://login.emulator.test/id/{client.client_id}",
        }
    )
    server.register_client("cid", "csecret", [REDIRECT])
    server.register_client("post-only", "psecret", [REDIRECT], {CLIENT_SECRET_POST})
    return server


@pytest.fixture
async def http(server: OAuthEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=server.transport(), base_url=server.base_url) as c:
        yield c


async def authorize(
    http: httpx.AsyncClient, verifier: str, *, client_id: str = "cid", **extra: str
) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "scope": "api refresh_token",
        **extra,
    }
    return await http.get("/authorize", params=params)


async def get_code(http: httpx.AsyncClient, verifier: str, client_id: str = "cid") -> str:
    response = await authorize(http, verifier, client_id=client_id)
    assert response.status_code == 302
    location = httpx.URL(response.headers["location"])
    assert str(location).startswith(REDIRECT)
    assert location.params["state"] == "st-1"
    return location.params["code"]


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def exchange(http: httpx.AsyncClient, code: str, verifier: str) -> httpx.Response:
    return await http.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        },
        headers=basic("cid", "csecret"),
    )


async def test_authorization_code_with_pkce(http: httpx.AsyncClient, server: Any) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await get_code(http, verifier)
    response = await exchange(http, code, verifier)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["refresh_token"].startswith("rt_")
    assert body["instance_url"] == "https://na1.salesforce.emulator.test"
    assert body["scope"] == "api refresh_token"
    assert response.headers["cache-control"] == "no-store"
    assert server.access_token_is_valid(body["access_token"])


async def test_wrong_pkce_verifier_rejected(http: httpx.AsyncClient) -> None:
    code = await get_code(http, "the-right-verifier-" + "x" * 30)
    response = await exchange(http, code, "a-wrong-verifier-" + "y" * 30)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_code_is_single_use(http: httpx.AsyncClient) -> None:
    verifier = "v" * 43
    code = await get_code(http, verifier)
    assert (await exchange(http, code, verifier)).status_code == 200
    again = await exchange(http, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_code_expires(http: httpx.AsyncClient, server: OAuthEmulator) -> None:
    verifier = "v" * 43
    code = await get_code(http, verifier)
    server.clock.advance(601)
    assert (await exchange(http, code, verifier)).json()["error"] == "invalid_grant"


async def test_authorize_errors(http: httpx.AsyncClient) -> None:
    unknown = await authorize(http, "v" * 43, client_id="nobody")
    assert unknown.status_code == 400  # shown, never redirected
    bad_redirect = await authorize(http, "v" * 43, redirect_uri="https://evil.example/cb")
    assert bad_redirect.status_code == 400
    plain = await authorize(http, "v" * 43, code_challenge_method="plain")
    assert plain.status_code == 302
    assert httpx.URL(plain.headers["location"]).params["error"] == "invalid_request"
    no_state = await authorize(http, "v" * 43, state="")
    assert httpx.URL(no_state.headers["location"]).params["error"] == "invalid_request"
    no_pkce = await http.get(
        "/authorize",
        params={
            "response_type": "code",
            "client_id": "cid",
            "redirect_uri": REDIRECT,
            "state": "s",
        },
    )
    location = httpx.URL(no_pkce.headers["location"])
    assert location.params["error"] == "invalid_request" and location.params["state"] == "s"


async def test_client_secret_post_and_basic(http: httpx.AsyncClient, server: Any) -> None:
    refresh = server.mint_refresh_token("cid")
    post = await http.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "client_id": "cid",
            "client_secret": "csecret",
        },
    )
    assert post.status_code == 200
    via_basic = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        headers=basic("cid", "csecret"),
    )
    assert via_basic.status_code == 200
    assert [c.auth_method for c in server.token_calls] == [
        "client_secret_post",
        "client_secret_basic",
    ]


async def test_client_auth_failures(http: httpx.AsyncClient, server: Any) -> None:
    refresh = server.mint_refresh_token("cid")
    data = {"grant_type": "refresh_token", "refresh_token": refresh}
    wrong = await http.post("/token", data=data, headers=basic("cid", "nope"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    none = await http.post("/token", data=data)
    assert none.status_code == 401 and none.json()["error"] == "invalid_client"
    both = await http.post(
        "/token", data={**data, "client_secret": "csecret"}, headers=basic("cid", "csecret")
    )
    assert both.json()["error"] == "invalid_request"
    # a client registered for client_secret_post only may not use Basic
    post_only = server.mint_refresh_token("post-only")
    refused = await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": post_only},
        headers=basic("post-only", "psecret"),
    )
    assert refused.json()["error"] == "invalid_client"
    # another client's refresh token
    other = await http.post(
        "/token",
        data={**data, "client_id": "post-only", "client_secret": "psecret"},
    )
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    unsupported = await http.post(
        "/token", data={"grant_type": "password"}, headers=basic("cid", "csecret")
    )
    assert unsupported.json()["error"] == "unsupported_grant_type"


async def refresh_with(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=basic("cid", "csecret"),
    )


async def test_rotating_refresh_tokens(http: httpx.AsyncClient, server: OAuthEmulator) -> None:
    server.rotate_refresh_tokens = True
    first = server.mint_refresh_token("cid")
    response = await refresh_with(http, first)
    second = response.json()["refresh_token"]
    assert second != first
    reused = await refresh_with(http, first)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    third = (await refresh_with(http, second)).json()["refresh_token"]
    assert third not in {first, second}
    assert server.token_call_count("refresh_token") == 3


async def test_non_rotating_refresh_omits_or_repeats_token(
    http: httpx.AsyncClient, server: OAuthEmulator
) -> None:
    token = server.mint_refresh_token("cid")
    body = (await refresh_with(http, token)).json()
    assert "refresh_token" not in body
    server.reissue_refresh_token = True
    assert (await refresh_with(http, token)).json()["refresh_token"] == token
    assert (await refresh_with(http, token)).status_code == 200


async def test_access_token_lifetime_on_the_clock() -> None:
    clock = FakeClock()
    server = OAuthEmulator(clock=clock, access_token_lifetime=60)
    token = server.mint_access_token()
    assert server.access_token_is_valid(token)
    clock.advance(61)
    assert not server.access_token_is_valid(token)
    fresh = server.mint_access_token()
    server.expire_access_tokens()
    assert not server.access_token_is_valid(fresh)
