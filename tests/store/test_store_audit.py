from __future__ import annotations

from store_helpers import SYSTEM, TENANT_A, TENANT_B

from castiel_sync.store import Store
from castiel_sync.store.repositories import AuditRepository, redact
from castiel_sync.store.repositories.audit import MASK, is_secret_key


def test_redaction_masks_secret_keys_at_any_depth() -> None:
    value = {
        "name": "Sales",
        "clientSecret": "s3cr3t",
        "credentialSecretName": "tenant-a-salesforce-sales-oauth",
        "tokenExpiresAt": "2026-01-01T00:00:00Z",
        "nested": {"api_key": "k", "list": [{"password": "p"}, {"refresh_token": "r"}]},
        "headers": {"Authorization": "Bearer x", "X-Api-Key": "y", "Accept": "json"},
        "tokens": None,
    }
    assert redact(value) == {
        "name": "Sales",
        "clientSecret": MASK,
        "credentialSecretName": "tenant-a-salesforce-sales-oauth",
        "tokenExpiresAt": "2026-01-01T00:00:00Z",
        "nested": {"api_key": MASK, "list": [{"password": MASK}, {"refresh_token": MASK}]},
        "headers": {"Authorization": MASK, "X-Api-Key": MASK, "Accept": "json"},
        "tokens": None,
    }
    assert value["clientSecret"] == "s3cr3t"  # the input is not changed
    for key in ("accessToken", "PRIVATE_KEY", "webhookSecret", "codeVerifier", "privateKey"):
        assert is_secret_key(key), key
    for key in ("syncEnabled", "entityMappings", "keyField", "status", "webhookSecretName"):
        assert not is_secret_key(key), key


async def test_record_and_list(store: Store) -> None:
    async with store.transaction() as session:
        a = AuditRepository(session, TENANT_A)
        first = await a.record(
            actor_user_id="u1",
            actor_role="tenant_admin",
            action="integration.create",
            object_type="integration",
            object_id="i1",
            before=None,
            after={"name": "x", "apiKey": "k"},
        )
        assert first.tenant_id == "tenant-a" and first.after == {"name": "x", "apiKey": MASK}
        for n in range(3):
            await a.record(
                actor_user_id="u1",
                actor_role="tenant_admin",
                action="integration.update",
                object_type="integration",
                object_id="i2",
                before={"n": n},
                after={"n": n + 1},
            )
        await AuditRepository(session, TENANT_B).record(
            actor_user_id="u9",
            actor_role="tenant_admin",
            action="integration.create",
            object_type="integration",
            object_id="i1",
        )
        system_entry = await AuditRepository(session, SYSTEM).record(
            actor_user_id="root",
            actor_role="super_admin",
            action="provider.set_status",
            object_type="provider",
            object_id="salesforce",
            before={"status": "active"},
            after={"status": "disabled"},
        )
        assert system_entry.tenant_id == "*"
    async with store.transaction() as session:
        a = AuditRepository(session, TENANT_A)
        entries = await a.list()
        assert len(entries) == 4 and entries[0].id > entries[-1].id  # newest first
        assert {e.tenant_id for e in entries} == {"tenant-a"}
        assert [e.object_id for e in await a.list(object_id="i1")] == ["i1"]
        assert len(await a.list(object_type="integration", object_id="i2")) == 3
        page = await a.list(limit=2)
        rest = await a.list(limit=2, before_id=page[-1].id)
        assert [e.id for e in page + rest] == [e.id for e in entries]
        assert await a.list(object_type="provider") == []
        assert len(await AuditRepository(session, TENANT_B).list()) == 1
        assert len(await AuditRepository(session, SYSTEM).list()) == 6
