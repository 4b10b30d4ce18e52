"""Integers past the store's 32-bit columns are refused as input (422/400), never a 500
from the database (schemathesis found ``rowVersion: 2147483648`` on PostgreSQL)."""

from __future__ import annotations

from typing import Any

from api_support import snapshot


async def test_versions_beyond_int32_are_refused_and_change_nothing(api: Any) -> None:
    created = await api.create_integration(instance="sales")
    engine = api.app.state.ctx.engine
    before = await snapshot(engine)
    too_big = 2**31
    patched = await api.client.patch(
        f"/integrations/{created['id']}", json={"rowVersion": too_big}, headers=api.admin_a
    )
    assert patched.status_code == 422, patched.text
    assert any("rowVersion" in str(e.get("loc", e)) for e in patched.json()["errors"])
    assert await snapshot(engine) == before

    at_limit = await api.client.patch(
        f"/integrations/{created['id']}", json={"rowVersion": too_big - 1}, headers=api.admin_a
    )
    assert at_limit.status_code == 409  # a well-formed but stale version
