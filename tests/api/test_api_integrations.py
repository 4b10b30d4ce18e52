"""Integration instances: create, settings validation, lifecycle, audit, limits."""

from __future__ import annotations

from typing import Any

import pytest

PROBLEM = "application/problem+json"


async def test_create_copies_catalog_defaults_and_allows_several_instances(api: Any) -> None:
    sales = await api.create_integration(instance="sales")
    support = await api.create_integration(instance="support")
    assert sales["id"] != support["id"]
    assert sales["status"] == "pending" and sales["credentialSecretName"] is None
    entities = [m["entity"] for m in sales["entityMappings"]]
    assert entities == ["Account", "Contact", "Opportunity", "Task", "Event"]
    assert sales["entityMappings"][0]["shardType"] == "c_company"
    assert sales["entityMappings"][0]["fieldMappings"][0] == {
        "external": "Name",
        "castiel": "name",
        "transforms": [],
        "direction": "both",
    }
    assert set(sales["allowedShardTypes"]) == {"c_company", "c_contact", "c_opportunity", "c_note"}
    listed = await api.client.get("/integrations?providerId=salesforce", headers=api.admin_a)
    assert [i["instanceId"] for i in listed.json()] == ["sales", "support"]

    again = await api.client.post(
        "/integrations",
        json={"providerId": "salesforce", "name": "dup", "instanceId": "sales"},
        headers=api.admin_a,
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == PROBLEM
    assert "sales" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"syncFrequency": {"kind": "interval", "minutes": 2}}, "body.syncFrequency", ">= 5"),
        ({"syncFrequency": {"kind": "cron", "cron": "* * * * *"}}, "body.syncFrequency", "5"),
        ({"syncFrequency": {"kind": "daily", "at": "25:00"}}, "body.syncFrequency", "HH:MM"),
        ({"syncDirection": "sideways"}, "body.syncDirection", "inbound"),
        ({"conflictResolution": "coin_flip"}, "body.conflictResolution", "manual"),
        (
            {"entityMappings": [{"entity": "Lead", "shardType": "c_contact"}]},
            "body.entityMappings.0.entity",
            "Account",
        ),
        (
            {"entityMappings": [{"entity": "Account", "shardType": "c_document"}]},
            "body.entityMappings.0.shardType",
            "allowedShardTypes",
        ),
        (
            {"pullFilters": {"Lead": [{"field": "Name", "op": "eq", "value": "x"}]}},
            "body.pullFilters.Lead",
            "no entity",
        ),
        (
            {"pullFilters": {"Account": [{"field": "Secret__c", "op": "eq", "value": 1}]}},
            "body.pullFilters.Account.0.field",
            "no field",
        ),
        (
            {"pullFilters": {"Account": [{"field": "Name; DROP", "op": "eq"}]}},
            "body.pullFilters.Account.0.field",
            "pattern",
        ),
        (
            {"writeBack": {"enabled": True, "entities": ["Account"]}},
            "body.writeBack.enabled",
            "syncDirection",
        ),
        ({"maxRecordsPerSync": 500}, None, "super admin"),
        ({"syncEnabled": None}, "body.syncEnabled", "null"),
        ({"bogus": 1}, "body.bogus", "Extra"),
    ],
)
async def test_settings_validation_names_the_field(
    api: Any, body: dict[str, Any], field: str | None, words: str
) -> None:
    created = await api.create_integration()
    response = await api.client.patch(
        f"/integrations/{created['id']}", json=body, headers=api.admin_a
    )
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert set(problem) >= {"type", "title", "status", "detail", "instance"}
    if field is None:
        assert response.status_code == 403
    else:
        assert response.status_code == 422, response.text
        fields = [e["field"] for e in problem["errors"]]
        assert any(f.startswith(field) for f in fields), fields
    assert words.lower() in response.text.lower()
    unchanged = await api.client.get(f"/integrations/{created['id']}", headers=api.admin_a)
    assert unchanged.json()["rowVersion"] == created["rowVersion"]


async def test_settings_update_and_audit_trail(api: Any) -> None:
    created = await api.create_integration()
    path = f"/integrations/{created['id']}"
    body = {
        "name": "Sales CRM",
        "syncDirection": "bidirectional",
        "syncFrequency": {"kind": "interval", "minutes": 15},
        "pullFilters": {"Account": [{"field": "Industry", "op": "eq", "value": "Tech"}]},
        "conflictResolution": "manual",
        "writeBack": {"enabled": True, "entities": ["Account"]},
        "rowVersion": created["rowVersion"],
    }
    response = await api.client.patch(path, json=body, headers=api.admin_a)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Sales CRM"
    assert updated["syncFrequency"] == {"kind": "interval", "minutes": 15, "at": None, "cron": None}
    assert updated["conflictResolution"] == "manual"
    assert updated["rowVersion"] == created["rowVersion"] + 1
    assert updated["entityMappings"] == created["entityMappings"]  # untouched

    stale = await api.client.patch(
        path, json={"syncEnabled": True, "rowVersion": created["rowVersion"]}, headers=api.admin_a
    )
    assert stale.status_code == 409
    assert "reload" in stale.json()["detail"]

    audit = (
        await api.client.get(f"/audit-log?objectId={created['id']}", headers=api.admin_a)
    ).json()
    assert [e["action"] for e in audit] == ["integration.update", "integration.create"]
    entry = audit[0]
    assert entry["actorUserId"] == "alice" and entry["actorRole"] == "tenant_admin"
    assert entry["before"]["conflictResolution"] == "last_write_wins"
    assert entry["after"]["conflictResolution"] == "manual"


async def test_shard_types_outside_allowed_are_refused_until_allowed(api: Any) -> None:
    created = await api.create_integration()
    path = f"/integrations/{created['id']}"
    mapping = {"entity": "Account", "shardType": "c_document"}
    refused = await api.client.patch(path, json={"entityMappings": [mapping]}, headers=api.admin_a)
    assert refused.status_code == 422
    allowed = await api.client.patch(
        path,
        json={"entityMappings": [mapping], "allowedShardTypes": ["c_document"]},
        headers=api.admin_a,
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["allowedShardTypes"] == ["c_document"]


async def test_activate_needs_a_credential_and_pause_stops(api: Any) -> None:
    created = await api.create_integration()
    path = f"/integrations/{created['id']}"
    refused = await api.client.post(f"{path}/activate", headers=api.admin_a)
    assert refused.status_code == 409
    assert "oauth/authorize" in refused.json()["detail"]
    assert (await api.client.get(path, headers=api.admin_a)).json()["status"] == "pending"

    # An API key on an OAuth provider is refused with directions.
    key = await api.client.put(
        f"{path}/credentials/api-key", json={"apiKey": "k-123"}, headers=api.admin_a
    )
    assert key.status_code == 409 and "oauth/authorize" in key.json()["detail"]


async def test_unknown_or_hidden_provider(api: Any) -> None:
    for provider in ("nosuch", "google_news", "jira"):  # unknown, audience system, disabled
        response = await api.client.post(
            "/integrations",
            json={"providerId": provider, "name": "x", "instanceId": "x"},
            headers=api.admin_a,
        )
        assert response.status_code == 422, provider
        assert response.json()["errors"][0]["field"] == "body.providerId"


async def test_providers_visibility_and_super_admin_changes(api: Any) -> None:
    tenant_view = {
        p["id"] for p in (await api.client.get("/providers", headers=api.admin_a)).json()
    }
    assert "salesforce" in tenant_view
    assert "google_news" not in tenant_view and "jira" not in tenant_view
    everything = (await api.client.get("/providers", headers=api.super_admin)).json()
    assert {"google_news", "jira"} <= {p["id"] for p in everything}
    assert (await api.client.get("/providers/jira", headers=api.admin_a)).status_code == 404

    enabled = await api.client.patch(
        "/providers/jira", json={"status": "beta", "audience": "tenant"}, headers=api.super_admin
    )
    assert enabled.status_code == 200, enabled.text
    assert (await api.client.get("/providers/jira", headers=api.admin_a)).status_code == 200
    crm = (await api.client.get("/providers?category=crm", headers=api.admin_a)).json()
    assert {p["id"] for p in crm} == {"salesforce", "dynamics365", "hubspot"}
    audit = (await api.client.get("/admin/audit-log", headers=api.super_admin)).json()
    assert audit[0]["action"] == "provider.update"
    assert audit[0]["after"] == {"status": "beta", "audience": "tenant"}


async def test_limits_are_super_admin_only_and_bounded(api: Any) -> None:
    mine = (await api.client.get("/limits", headers=api.admin_a)).json()
    assert mine == {"maxRecordsPerSync": 1000, "maxConcurrentSyncs": 3}
    too_many = await api.client.patch(
        "/admin/tenants/tenanta/limits", json={"maxConcurrentSyncs": 11}, headers=api.super_admin
    )
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "body.maxConcurrentSyncs"
    too_big = await api.client.patch(
        "/admin/limits", json={"maxRecordsPerSync": 1001}, headers=api.super_admin
    )
    assert too_big.status_code == 422

    ok = await api.client.patch(
        "/admin/limits", json={"maxRecordsPerSync": 500}, headers=api.super_admin
    )
    assert ok.json() == {"maxRecordsPerSync": 500, "maxConcurrentSyncs": None}
    ok = await api.client.patch(
        "/admin/tenants/tenanta/limits", json={"maxConcurrentSyncs": 10}, headers=api.super_admin
    )
    assert ok.status_code == 200
    assert (await api.client.get("/limits", headers=api.admin_a)).json() == {
        "maxRecordsPerSync": 500,
        "maxConcurrentSyncs": 10,
    }
    assert (await api.client.get("/limits", headers=api.admin_b)).json() == {
        "maxRecordsPerSync": 500,
        "maxConcurrentSyncs": 3,
    }
    audit = (await api.client.get("/audit-log?objectType=limits", headers=api.admin_a)).json()
    assert audit[0]["actorRole"] == "super_admin"
    assert audit[0]["after"]["maxConcurrentSyncs"] == 10


async def test_errors_are_problem_json_without_internals(api: Any) -> None:
    unknown = await api.client.get("/nowhere", headers=api.admin_a)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    wrong_method = await api.client.put("/integrations", headers=api.admin_a)
    assert wrong_method.status_code == 405 and wrong_method.headers["content-type"] == PROBLEM
    broken = await api.client.post(
        "/integrations",
        content=b"{not json",
        headers={**api.admin_a, "content-type": "application/json"},
    )
    assert broken.status_code == 422 and broken.headers["content-type"] == PROBLEM
    assert "Traceback" not in broken.text


async def test_oversized_bodies_are_413(api: Any) -> None:
    created = await api.create_integration()
    huge = b'{"name": "' + b"x" * (api.settings.max_webhook_body_bytes + 10) + b'"}'
    response = await api.client.patch(
        f"/integrations/{created['id']}",
        content=huge,
        headers={**api.admin_a, "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM

    async def chunks() -> Any:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b" " * (api.settings.max_webhook_body_bytes // 10)

    streamed = await api.client.patch(
        f"/integrations/{created['id']}",
        content=chunks(),
        headers={**api.admin_a, "content-type": "application/json"},
    )
    assert streamed.status_code == 413


async def test_delete_removes_the_integration_and_its_secrets(api: Any) -> None:
    created = await api.create_integration()
    await api.create_integration(instance="sales-team-more")
    await api.create_integration(api.admin_b)
    vault = api.ctx.vault
    name = "tenant-tenanta-salesforce-sales-team-oauth"
    users = "tenant-tenanta-user-alice-salesforce-sales-team-oauth"
    kept = [
        "tenant-tenanta-salesforce-sales-team-more-oauth",  # another instance's
        "tenant-tenantb-salesforce-sales-team-oauth",  # another tenant's
    ]
    for secret in [name, users, *kept]:
        await vault.put(secret, '{"access_token": "at-delete-me"}')
    response = await api.client.delete(f"/integrations/{created['id']}", headers=api.admin_a)
    assert response.status_code == 204
    assert await vault.list("tenant-") == kept
    gone = await api.client.get(f"/integrations/{created['id']}", headers=api.admin_a)
    assert gone.status_code == 404
    audit = (await api.client.get("/audit-log", headers=api.admin_a)).json()
    assert audit[0]["action"] == "integration.delete"
