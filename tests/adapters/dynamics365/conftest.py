"""Fixtures: a Dataverse emulator and its Microsoft identity platform on one fake clock,
and a Dynamics 365 adapter wired to it in-process (no network, no real sleeping)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from castiel_sync.adapters.dynamics365 import Dynamics365Adapter
from castiel_sync.sdk import Credentials
from castiel_sync.testing import FakeClock
from castiel_sync.testing.emulators.dynamics365 import (
    DataverseOAuth,
    Dynamics365Emulator,
    dataverse_oauth,
)

TENANT = "contoso.onmicrosoft.com"
ORG_URL = "https://contoso.crm.dynamics.emulator.test"
CLIENT_ID = "51f81489-12ee-4a9e-aaae-a2591f45987d"
CLIENT_SECRET = "castiel-entra-client-secret"
REDIRECT_URI = "https://castiel.example/oauth/callback"
SCOPE = f"{ORG_URL}/.default offline_access"


class Refresher:
    """The host's refresh as the identity platform documents it: grant_type=refresh_token
    with client_secret_post; each response carries a new refresh token, stored at once."""

    def __init__(self, oauth: DataverseOAuth, credentials: Credentials) -> None:
        self.oauth = oauth
        self.credentials = credentials
        self.calls = 0

    async def __call__(self) -> Credentials:
        self.calls += 1
        assert self.credentials.refresh_token is not None
        async with httpx.AsyncClient(transport=self.oauth.transport()) as client:
            response = await client.post(
                self.oauth.token_url,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": self.credentials.refresh_token.get_secret_value(),
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scope": SCOPE,
                },
            )
        response.raise_for_status()
        body = response.json()
        self.credentials = Credentials(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            instance_url=ORG_URL,
        )
        return self.credentials


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def oauth(clock: FakeClock) -> DataverseOAuth:
    server = dataverse_oauth(clock=clock, tenant=TENANT, resource=ORG_URL)
    server.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    return server


@pytest.fixture
def emulator(clock: FakeClock, oauth: DataverseOAuth) -> Dynamics365Emulator:
    return Dynamics365Emulator(clock=clock, oauth=oauth, base_url=ORG_URL, tenant=TENANT)


@pytest.fixture
def credentials(oauth: DataverseOAuth) -> Credentials:
    return Credentials(
        access_token=oauth.mint_access_token(client_id=CLIENT_ID),
        refresh_token=oauth.mint_refresh_token(CLIENT_ID, SCOPE),
        instance_url=ORG_URL,
    )


@pytest.fixture
def refresher(oauth: DataverseOAuth, credentials: Credentials) -> Refresher:
    return Refresher(oauth, credentials)


@pytest.fixture
async def adapter(
    emulator: Dynamics365Emulator,
    clock: FakeClock,
    credentials: Credentials,
    refresher: Refresher,
) -> AsyncIterator[Dynamics365Adapter]:
    adapter = Dynamics365Adapter().configure(
        transport=emulator.transport(), clock=clock, token_refresher=refresher
    )
    await adapter.connect(credentials)
    yield adapter
    await adapter.disconnect()
