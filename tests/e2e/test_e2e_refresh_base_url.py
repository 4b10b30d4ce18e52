"""Regression found by the Dynamics 365 end-to-end run: after a token refresh mid-sync,
the adapter kept the refreshed credential's ``instance_url`` verbatim as its base URL.
The API stores Dataverse's Web API endpoint there (``.../api/data/v9.2``); the adapter
normalises it to the org URL on ``connect()`` but not on refresh, so every later page
or delta link of the same job was refused as "not belonging to this table"."""

from __future__ import annotations

from castiel_sync.adapters.dynamics365 import Dynamics365Adapter
from castiel_sync.sdk import Credentials, FetchOptions
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator, dataverse_oauth

ORG = "https://contoso.crm.dynamics.com"


async def test_pages_after_a_refresh_still_belong_to_the_org() -> None:
    oauth = dataverse_oauth(resource=ORG)
    emulator = Dynamics365Emulator(oauth=oauth, base_url=ORG)
    for i in range(4):
        emulator.store["account"].create({"name": f"Account {i}"})
    endpoint = ORG + "/api/data/v9.2"  # what the callback stores as instance_url
    refreshed: list[str] = []

    async def refresh() -> Credentials:
        token = emulator.issue_token()
        refreshed.append(token)
        return Credentials(access_token=token, instance_url=endpoint)

    adapter = Dynamics365Adapter().configure(
        transport=emulator.transport(), clock=emulator.clock, token_refresher=refresh
    )
    await adapter.connect(Credentials(access_token=emulator.issue_token(), instance_url=endpoint))
    names: list[str] = []
    page = await adapter.fetch_records("account", FetchOptions(limit=1))
    names += [r.data["name"] for r in page.records]
    emulator.faults.expire_tokens(after=0)  # the next page meets a dead token
    while page.next_cursor:
        page = await adapter.fetch_records(
            "account", FetchOptions(limit=1, cursor=page.next_cursor)
        )
        names += [r.data["name"] for r in page.records]
    await adapter.disconnect()
    assert len(refreshed) == 1
    assert sorted(names) == [f"Account {i}" for i in range(4)]
