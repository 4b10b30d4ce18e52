"""Tenant B walks every management endpoint against tenant A's objects: 404 each time,
none of A's data in any answer, and nothing changed in the database or the vault."""

from __future__ import annotations

from typing import Any

from api_support import Api, api_routes, snapshot
from test_api_oauth import authorize, provider_redirect

from castiel_sync.api.auth import Role

# A valid body per endpoint, so that a 404 cannot hide behind a 422 for the body.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/integrations/{integration_id}"): {"syncEnabled": True, "name": "taken"},
    ("POST", "/integrations/{integration_id}/oauth/authorize"): {"scope": "tenant"},
    ("PUT", "/integrations/{integration_id}/credentials/api-key"): {"apiKey": "b-key"},
    ("POST", "/integrations/{integration_id}/sync"): {"syncType": "full"},
    ("PUT", "/integrations/{integration_id}/webhook-secret"): {"secret": "b-secret"},
}

# Endpoints that take no tenant object, and why they are not walked with A's id.
NOT_TENANT_OBJECTS = {
    ("GET", "/healthz"): "no data",
    ("GET", "/readyz"): "no data",
    ("GET", "/providers"): "the shared catalog",
    ("GET", "/providers/{provider_id}"): "the shared catalog",
    ("PATCH", "/providers/{provider_id}"): "super admin only",
    ("PUT", "/providers/{provider_id}/oauth-client"): "super admin only",
    ("GET", "/admin/limits"): "super admin only",
    ("PATCH", "/admin/limits"): "super admin only",
    ("GET", "/admin/tenants/{tenant_id}/limits"): "super admin only",
    ("PATCH", "/admin/tenants/{tenant_id}/limits"): "super admin only",
    ("GET", "/admin/audit-log"): "super admin only",
    ("GET", "/oauth/callback"): "the single-use state is the credential (test_api_oauth)",
    ("POST", "/integrations"): "creates the caller's own integration",
    # The runtime's routes; tenant crossing for them is in tests/runtime.
    ("GET", "/metrics"): "no tenant data (queue depths)",
    ("GET", "/webhooks/{provider_id}/{integration_id}"): "provider-signed, no bearer",
    ("POST", "/webhooks/{provider_id}/{integration_id}"): "provider-signed, no bearer",
    ("GET", "/dead-letters"): "tenant admins' own (test_runtime_dead_letters)",
    ("GET", "/dead-letters/{dead_letter_id}"): "test_runtime_dead_letters",
    ("POST", "/dead-letters/{dead_letter_id}/replay"): "test_runtime_dead_letters",
    ("DELETE", "/dead-letters/{dead_letter_id}"): "test_runtime_dead_letters",
    # Shards, conflicts and executions: walked with A's ids in test_writeback_api.
    ("GET", "/shards/{shard_id}"): "test_writeback_api",
    ("PATCH", "/shards/{shard_id}"): "test_writeback_api",
    ("GET", "/shards/{shard_id}/relationships"): "test_writeback_api",
    ("POST", "/conflicts/{conflict_id}/resolve"): "test_writeback_api",
    ("GET", "/executions/{execution_id}"): "test_writeback_api",
}
# Endpoints that list the caller's tenant: B must see none of A's data.
TENANT_LISTS = {
    ("GET", "/integrations"),
    ("GET", "/audit-log"),
    ("GET", "/limits"),
    ("GET", "/shards"),
    ("GET", "/conflicts"),
}


async def test_tenant_b_cannot_reach_tenant_a(api: Api) -> None:
    await api.set_oauth_client()
    a = await api.create_integration(instance="a-secret-deal")
    url = await authorize(api, a["id"], api.admin_a)
    connected = await api.client.get(
        "/oauth/callback", params=await provider_redirect(api.oauth, url)
    )
    assert connected.status_code == 200
    await api.client.patch(
        f"/integrations/{a['id']}", json={"name": "A's confidential CRM"}, headers=api.admin_a
    )
    await api.create_integration(headers=api.admin_b, instance="b-own")
    a_markers = [a["id"], "a-secret-deal", "A's confidential CRM", "tenanta"]

    b_admin, b_user = api.admin_b, api.auth("tenantb", Role.USER, user="bob")
    before = await snapshot(api.ctx.engine)
    vault_before = await api.ctx.vault.list()
    walked = 0
    for method, path in api_routes(api.app):
        key = (method, path)
        if key in NOT_TENANT_OBJECTS:
            continue
        if key in TENANT_LISTS:
            for headers in (b_admin, b_user):
                response = await api.client.request(method, path, headers=headers)
                expected = 403 if key == ("GET", "/audit-log") and headers is b_user else 200
                assert response.status_code == expected, (key, response.text)
                assert not any(m in response.text for m in a_markers), (key, response.text)
            continue
        assert "{integration_id}" in path, f"classify the new endpoint {method} {path} in this test"
        url_path = path.replace("{integration_id}", a["id"])
        for headers in (b_admin, b_user):
            response = await api.client.request(
                method, url_path, json=BODIES.get(key), headers=headers
            )
            if response.status_code == 403:
                # A user-role caller is refused a write before any lookup: no data either.
                assert headers is b_user, (key, response.text)
            else:
                assert response.status_code == 404, (key, response.status_code, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert not any(m in response.text for m in a_markers[1:]), (key, response.text)
        walked += 1
    assert walked >= 9
    assert await snapshot(api.ctx.engine) == before
    assert await api.ctx.vault.list() == vault_before

    # And A still sees all of its own.
    mine = await api.client.get(f"/integrations/{a['id']}", headers=api.admin_a)
    assert mine.status_code == 200 and mine.json()["name"] == "A's confidential CRM"
