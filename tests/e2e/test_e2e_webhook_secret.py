"""``PUT /integrations/{id}/webhook-secret``, the step the end-to-end scenarios need to
receive webhooks at all: until it is set the receiver is a 404; once set, deliveries
signed with it are accepted and others refused; only a tenant admin may set it, and the
secret is kept in the vault only."""

from __future__ import annotations

from typing import Any

from e2e_support import API_BASE, E2E

from castiel_sync.api.auth import Role


async def test_webhook_secret_gates_the_receiver(e2e_cleanup: Any) -> None:
    e: E2E = await e2e_cleanup("hubspot")
    emu = e.emulator
    record_id = e.case.seed(emu, {"name": "Acme"})
    record = emu.store["companies"].get(record_id)
    assert record is not None
    payload = emu.webhook_payload("companies", record, "updated")

    await e.connect()
    url = f"{API_BASE}/webhooks/hubspot/{e.integration_id}"
    accepted = await emu.send_webhook(e.client, payload, url=url)
    assert accepted.status_code == 202, accepted.text

    forged = await emu.send_webhook(e.client, payload, url=url, secret="not-the-secret")
    assert forged.status_code == 401, forged.text

    path = f"/integrations/{e.integration_id}/webhook-secret"
    user = await e.client.put(path, json={"secret": "x"}, headers=e.auth(Role.USER))
    assert user.status_code == 403, user.text
    other = await e.client.put(path, json={"secret": "x"}, headers=e.auth(tenant="tenantb"))
    assert other.status_code == 404, other.text

    # Replaced: the old secret no longer verifies, the new one does.
    replaced = await e.client.put(path, json={"secret": "rotated-secret"}, headers=e.admin)
    assert replaced.status_code == 204, replaced.text
    old = await emu.send_webhook(e.client, payload, url=url)
    assert old.status_code == 401, old.text
    new = await emu.send_webhook(e.client, payload, url=url, secret="rotated-secret")
    assert new.status_code == 202, new.text

    integration = await e.integration()
    assert "rotated-secret" not in str(integration)
    assert await e.vault.get("tenant-tenanta-hubspot-sales-webhook") == "rotated-secret"

    # Deleting the integration deletes its webhook secret too.
    deleted = await e.client.delete(f"/integrations/{e.integration_id}", headers=e.admin)
    assert deleted.status_code == 204, deleted.text
    assert await e.vault.list("tenant-tenanta-hubspot-sales-") == []
