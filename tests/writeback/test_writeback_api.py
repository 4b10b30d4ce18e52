"""The sync HTTP API: shards (patch writes back), relationships' sync status, conflicts,
executions, Sync Now; and tenant B walking every new route with tenant A's ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from writeback_support import ENTITY, Harness, imported

from castiel_sync.api.app import create_app
from castiel_sync.api.auth import Role, mint_token
from castiel_sync.domain.events import SYNC_REQUESTED
from castiel_sync.settings import Settings
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.tables import OutboxRow

JWT = "writeback-jwt-secret-" + "k" * 32


@pytest.fixture
async def client(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "d", jwt_secret=JWT,
                        public_url="https://castiel.example.test")  # fmt: skip
    app = create_app(settings, run_migrations=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
            yield c, settings


def auth(settings: Settings, tenant: str = "tenanta", role: Role = Role.TENANT_ADMIN) -> dict:
    token = mint_token(settings, tenant_id=tenant, role=role, user_id="alice")
    return {"Authorization": f"Bearer {token}"}


async def test_patch_via_api_writes_back(engine: AsyncEngine, client: Any) -> None:
    c, settings = client
    h = await imported(engine)
    shard = await h.shard()
    user = auth(settings, role=Role.USER)
    got = await c.get(f"/shards/{shard.id}", headers=user)
    assert got.status_code == 200 and got.headers["ETag"] == '"1"'
    assert got.json()["externalRelationships"][0]["externalId"] == "c1"
    stale = await c.patch(f"/shards/{shard.id}", json={"changes": {"name": "X"}},
                          headers={**user, "If-Match": '"7"'})  # fmt: skip
    assert stale.status_code == 409
    patched = await c.patch(f"/shards/{shard.id}", json={"changes": {"address.city": "Bergen"}},
                            headers={**user, "If-Match": '"1"'})  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == 2 and patched.headers["ETag"] == '"2"'
    rels = (await c.get(f"/shards/{shard.id}/relationships", headers=user)).json()
    assert rels[0]["syncStatus"] == "pending"
    await h.run_outbound()
    assert h.external()["city"] == "Bergen"
    rels = (await c.get(f"/shards/{shard.id}/relationships", headers=user)).json()
    assert rels[0]["syncStatus"] == "synced" and rels[0]["lastSyncedVersion"] == 2
    query = {"type": "c_contact", "integrationId": h.integration_id}
    listed = await c.get("/shards", params=query, headers=user)
    assert [s["id"] for s in listed.json()] == [shard.id]


async def test_failed_write_back_visible(engine: AsyncEngine, client: Any) -> None:
    c, settings = client
    h = await imported(engine, writeBack={"enabled": True, "entities": [ENTITY],
                                          "retryPolicy": {"maxAttempts": 1}})  # fmt: skip
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"name": "Z"}, actor="user:alice")
    h.emulator.faults.server_error(times=5, status=503, path_prefix="/api/v1/contacts/")
    from castiel_sync.sync.outbound import GiveUp

    with pytest.raises(GiveUp):
        await h.run_outbound()
    rels = (await c.get(f"/shards/{shard.id}/relationships", headers=auth(settings))).json()
    assert rels[0]["syncStatus"] == "failed" and "gave up after 1 attempts" in rels[0]["lastError"]


async def test_conflicts_and_sync_now_via_api(engine: AsyncEngine, client: Any) -> None:
    c, settings = client
    h = await imported(engine, conflictResolution="manual")
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"address.city": "Bergen"}, actor="u")
    h.emulator.clock.advance(60)
    h.emulator.store[ENTITY].update("c1", {"city": "Paris"})
    h.emulator.clock.advance(60)
    await h.sync()
    await h.run_outbound()
    admin, user = auth(settings), auth(settings, role=Role.USER)
    [conflict] = (await c.get("/conflicts", headers=user)).json()
    assert conflict["field"] == "address.city" and conflict["externalValue"] == "Paris"
    url = f"/conflicts/{conflict['id']}/resolve"
    assert (await c.post(url, json={"choice": "castiel"}, headers=user)).status_code == 403
    assert (await c.post(url, json={"choice": "value"}, headers=admin)).status_code == 422
    done = await c.post(url, json={"choice": "castiel"}, headers=admin)
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    assert (await c.post(url, json={"choice": "castiel"}, headers=admin)).status_code == 409
    await h.run_outbound()
    assert h.external()["city"] == "Bergen"
    assert (await c.get("/conflicts", headers=user)).json() == []

    runs = await c.get(f"/integrations/{h.integration_id}/executions", headers=user)
    assert runs.status_code == 200 and len(runs.json()) >= 2
    one = await c.get(f"/executions/{runs.json()[-1]['id']}", headers=user)
    assert one.status_code == 200 and one.json()["counts"]["created"] == 1
    assert (await c.post(f"/integrations/{h.integration_id}/sync", json={"syncType": "full"},
                         headers=user)).status_code == 403  # fmt: skip
    queued = await c.post(f"/integrations/{h.integration_id}/sync",
                          json={"syncType": "full", "entity": ENTITY}, headers=admin)  # fmt: skip
    assert queued.status_code == 202, queued.text
    async with h.store.transaction() as session:
        rows = (await session.execute(select(OutboxRow).where(
            OutboxRow.event_type == SYNC_REQUESTED))).scalars().all()  # fmt: skip
    assert [r.event["id"] for r in rows] == [queued.json()["requestId"]]
    assert rows[0].event["data"]["syncType"] == "full"


async def test_tenant_b_cannot_reach_a(engine: AsyncEngine, client: Any) -> None:
    from api_snapshot import snapshot

    c, settings = client
    h: Harness = await imported(engine, conflictResolution="manual")
    shard = await h.shard()
    await h.shards_service().patch(h.scope, shard.id, {"address.city": "Bergen"}, actor="u")
    h.emulator.store[ENTITY].update("c1", {"city": "Paris"})
    h.emulator.clock.advance(60)
    await h.sync()
    async with h.store.transaction() as session:
        [conflict] = await ConflictRepository(session, h.scope).list()
    runs = (await c.get(f"/integrations/{h.integration_id}/executions",
                        headers=auth(settings))).json()  # fmt: skip
    calls = [
        ("GET", f"/shards/{shard.id}", None),
        ("PATCH", f"/shards/{shard.id}", {"changes": {"name": "B"}}),
        ("GET", f"/shards/{shard.id}/relationships", None),
        ("POST", f"/conflicts/{conflict.id}/resolve", {"choice": "external"}),
        ("GET", f"/executions/{runs[0]['id']}", None),
        ("GET", f"/integrations/{h.integration_id}/executions", None),
        ("POST", f"/integrations/{h.integration_id}/sync", {"syncType": "full"}),
        ("GET", f"/shards?integrationId={h.integration_id}", None),
    ]
    before = await snapshot(engine)
    for headers in (auth(settings, "tenantb"), auth(settings, "tenantb", Role.USER)):
        for method, url, body in calls:
            response = await c.request(method, url, json=body, headers=headers)
            assert response.status_code in (403, 404), (method, url, response.text)
            if response.status_code == 403:  # a user is refused an admin route first
                assert method == "POST" and headers["Authorization"] != ""
            assert "Ada" not in response.text and "Bergen" not in response.text
        for url in ("/shards", "/conflicts"):
            listed = await c.get(url, headers=headers)
            assert listed.status_code == 200 and listed.json() == []
    assert await snapshot(engine) == before
