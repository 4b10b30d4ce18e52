"""End to end, salesforce: connect through the emulated OAuth server, full and incremental
sync, a webhook, a write-back, a token expiring mid-sync, a burst of 429s, both sides
equal at the end; through the API, the outbox, the bus and the workers."""

from __future__ import annotations

from typing import Any

from e2e_support import scenario


async def test_e2e_salesforce(e2e_cleanup: Any) -> None:
    await scenario(await e2e_cleanup("salesforce"))


async def test_e2e_salesforce_rotating_refresh_tokens(e2e_cleanup: Any) -> None:
    """The connected app rotates refresh tokens: the used one dies, the new one is kept."""
    await scenario(await e2e_cleanup("salesforce_rotating"))
