"""Fixtures: a Salesforce emulator with its OAuth server on one fake clock, and an adapter
wired to it in-process (no network, no real sleeping)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from castiel_sync.adapters.salesforce import SalesforceAdapter
from castiel_sync.sdk import Credentials
from castiel_sync.testing import FakeClock, OAuthEmulator
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator, salesforce_oauth

CLIENT_ID = "3MVG9castiel.consumer.key"
CLIENT_SECRET = "castiel-consumer-secret"
REDIRECT_URI = "https://castiel.example/oauth/callback"
INSTANCE_URL = "https://acme.my.salesforce.emulator.test"


class Refresher:
    """The host's refresh as Salesforce documents it: grant_type=refresh_token; the
    response may omit refresh_token (no rotation), then the old one stays valid."""

    def __init__(self, oauth: OAuthEmulator, credentials: Credentials) -> None:
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
                },
            )
        response.raise_for_status()
        body = response.json()
        self.credentials = Credentials(
            access_token=body["access_token"],
            refresh_token=body.get("refresh_token")
            or self.credentials.refresh_token.get_secret_value(),
            instance_url=body["instance_url"],
        )
        return self.credentials


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def oauth(clock: FakeClock) -> OAuthEmulator:
    server = salesforce_oauth(clock=clock, instance_url=INSTANCE_URL)
    server.register_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
    return server


@pytest.fixture
def emulator(clock: FakeClock, oauth: OAuthEmulator) -> SalesforceEmulator:
    return SalesforceEmulator(clock=clock, oauth=oauth, base_url=INSTANCE_URL)


@pytest.fixture
def credentials(oauth: OAuthEmulator) -> Credentials:
    return Credentials(
        access_token=oauth.mint_access_token(client_id=CLIENT_ID),
        refresh_token=oauth.mint_refresh_token(CLIENT_ID),
        instance_url=INSTANCE_URL,
    )


@pytest.fixture
def refresher(oauth: OAuthEmulator, credentials: Credentials) -> Refresher:
    return Refresher(oauth, credentials)


@pytest.fixture
async def adapter(
    emulator: SalesforceEmulator,
    clock: FakeClock,
    credentials: Credentials,
    refresher: Refresher,
) -> AsyncIterator[SalesforceAdapter]:
    adapter = SalesforceAdapter().configure(
        transport=emulator.transport(), clock=clock, token_refresher=refresher
    )
    await adapter.connect(credentials)
    yield adapter
    await adapter.disconnect()
