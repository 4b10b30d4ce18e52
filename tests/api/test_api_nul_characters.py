"""U+0000 cannot be stored by PostgreSQL; the API refuses it at the door with a 400
problem instead of failing in the store with a 500, and nothing changes."""

from __future__ import annotations

from typing import Any

from api_support import snapshot

PROBLEM = "application/problem+json"


async def test_nul_in_query_path_or_json_body_is_a_400_and_changes_nothing(api: Any) -> None:
    created = await api.create_integration(instance="sales")
    engine = api.app.state.ctx.engine
    before = await snapshot(engine)

    attempts = [
        api.client.get("/oauth/callback?code=x&state=%00", headers=api.admin_a),
        api.client.get(f"/integrations/{created['id']}%00", headers=api.admin_a),
        api.client.patch(
            f"/integrations/{created['id']}",
            content=b'{"name": "evil\\u0000name"}',
            headers={**api.admin_a, "content-type": "application/json"},
        ),
        api.client.post(
            "/integrations",
            content=b'{"providerId": "salesforce", "name": "n", "instanceId": "x\\u0000"}',
            headers={**api.admin_a, "content-type": "application/json"},
        ),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == PROBLEM
        assert "NUL" in response.json()["detail"]

    assert await snapshot(engine) == before
    ok = await api.client.get(f"/integrations/{created['id']}", headers=api.admin_a)
    assert ok.status_code == 200 and ok.json()["name"] == created["name"]
