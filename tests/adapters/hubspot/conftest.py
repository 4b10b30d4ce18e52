"""Fixtures for the HubSpot adapter tests: an emulator with its OAuth server, and an
adapter wired to it through the emulator's transport and fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from castiel_sync.adapters.hubspot import HubSpotAdapter
from castiel_sync.sdk import Credentials
from castiel_sync.testing.emulators.hubspot import HubSpotEmulator


class Refresher:
    def __init__(self, emulator: HubSpotEmulator) -> None:
        self.emulator = emulator
        self.calls = 0

    async def __call__(self) -> Credentials:
        self.calls += 1
        return self.emulator.credentials()


@pytest.fixture
def hubspot() -> HubSpotEmulator:
    return HubSpotEmulator.with_oauth()


@pytest.fixture
def refresher(hubspot: HubSpotEmulator) -> Refresher:
    return Refresher(hubspot)


@pytest.fixture
async def adapter(hubspot: HubSpotEmulator, refresher: Refresher) -> AsyncIterator[HubSpotAdapter]:
    adapter = HubSpotAdapter().configure(
        transport=hubspot.transport(), clock=hubspot.clock, token_refresher=refresher
    )
    await adapter.connect(hubspot.credentials())
    yield adapter
    await adapter.disconnect()
