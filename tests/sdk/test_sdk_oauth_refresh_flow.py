"""The pieces together: an adapter whose host refreshes through the emulated OAuth server
(rotating refresh tokens) while the provider emulator expires access tokens on its clock."""

from __future__ import annotations

import httpx

from castiel_sync.sdk import Credentials, FetchOptions
from castiel_sync.testing import FakeClock, OAuthEmulator
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator


async def test_token_expiry_mid_sync_refreshes_through_oauth_with_rotation() -> None:
    clock = FakeClock()
    oauth = OAuthEmulator(clock=clock, access_token_lifetime=60, rotate_refresh_tokens=True)
    oauth.register_client("cid", "csecret", ["https://castiel.example/cb"])
    emulator = ExampleCrmEmulator(oauth=oauth)
    for n in range(7):
        emulator.store["contacts"].create({"name": f"c{n}"})

    # What the host keeps in its vault.
    vault = {
        "access_token": oauth.mint_access_token(client_id="cid"),
        "refresh_token": oauth.mint_refresh_token("cid"),
    }
    used_refresh_tokens: list[str] = []

    async def refresher() -> Credentials:
        used_refresh_tokens.append(vault["refresh_token"])
        async with httpx.AsyncClient(transport=oauth.transport()) as client:
            response = await client.post(
                oauth.token_url,
                data={"grant_type": "refresh_token", "refresh_token": vault["refresh_token"]},
                auth=("cid", "csecret"),
            )
        response.raise_for_status()
        vault.update(response.json())
        return Credentials(access_token=vault["access_token"], instance_url=emulator.base_url)

    adapter = ExampleCrmAdapter().configure(
        transport=emulator.transport(), clock=clock, token_refresher=refresher
    )
    await adapter.connect(
        Credentials(access_token=vault["access_token"], instance_url=emulator.base_url)
    )
    page = await adapter.fetch_records("contacts", FetchOptions(limit=3))
    seen = [r.external_id for r in page.records]
    while page.has_more:
        clock.advance(61)  # every page finds the access token expired
        page = await adapter.fetch_records(
            "contacts", FetchOptions(limit=3, cursor=page.next_cursor)
        )
        seen += [r.external_id for r in page.records]

    assert len(seen) == len(set(seen)) == 7
    assert oauth.token_call_count("refresh_token") == 2
    assert len(set(used_refresh_tokens)) == 2  # each refresh used the rotated token
    assert not oauth.refresh_token_is_valid(used_refresh_tokens[0])
    assert emulator.statuses().count(401) == 2
