"""The vault secrets of an integration whose delete committed but whose secrets were never
deleted (a crash in between) are removed by the orphan sweep, per tenant and from the
token refresher's hourly pass; live integrations' secrets, every tenant's, stay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from runtime_support import make_integration
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import load_catalog
from castiel_sync.domain.secret_names import system_secret, tenant_secret, user_secret
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.runtime import token_refresher
from castiel_sync.runtime.token_refresher import TokenRefresher
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.vault import Vault, open_vault
from castiel_sync.vault.orphans import delete_orphaned_secrets

CRASHED = [  # acme's salesforce "sales": the integration row is gone
    tenant_secret("acme", "salesforce", "sales", "oauth"),
    tenant_secret("acme", "salesforce", "sales", "webhook"),
    user_secret("acme", "u1", "salesforce", "sales"),
]
LIVE = [
    # acme's "sales-team" (its names start with the deleted "sales" integration's prefix)
    tenant_secret("acme", "salesforce", "sales-team", "oauth"),
    user_secret("acme", "u1", "salesforce", "sales-team"),
    # globex's "sales": the same provider and instance as the deleted one
    tenant_secret("globex", "salesforce", "sales", "oauth"),
    user_secret("globex", "u1", "salesforce", "sales"),
    # not an integration's
    system_secret("salesforce"),
    "pkce-0123456789abcdef",
]
#: globex has no "sales-team"; acme's live one must not keep this alive
GLOBEX_ORPHAN = tenant_secret("globex", "salesforce", "sales-team", "apikey")


async def crashed_delete(engine: AsyncEngine, tmp_path: Path) -> Vault:
    vault = open_vault(Settings(data_dir=tmp_path, master_key=None), engine)
    sales = await make_integration(engine, "acme", "sales")
    await make_integration(engine, "acme", "sales-team")
    await make_integration(engine, "globex", "sales")
    for name in [*CRASHED, *LIVE, GLOBEX_ORPHAN]:
        await vault.put(name, '{"access_token": "t"}')
    # The API's delete committed; the process stopped before it reached the vault.
    async with Store(engine).transaction() as session:
        await IntegrationRepository(session, TenantScope(TenantId("acme"))).delete(sales)
    return vault


async def test_tenant_sweep_deletes_only_that_tenants_orphans(
    rt_engine: AsyncEngine, tmp_path: Path
) -> None:
    vault = await crashed_delete(rt_engine, tmp_path)
    store = Store(rt_engine)
    globex = TenantScope(TenantId("globex"))
    assert await delete_orphaned_secrets(store, vault, globex) == [GLOBEX_ORPHAN]
    assert set(CRASHED) <= set(await vault.list())
    acme = TenantScope(TenantId("acme"))
    assert await delete_orphaned_secrets(store, vault, acme) == sorted(CRASHED)
    assert sorted(await vault.list()) == sorted(LIVE)
    assert await delete_orphaned_secrets(store, vault, acme) == []


async def test_the_refreshers_hourly_pass_sweeps_every_tenant(
    rt_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = await crashed_delete(rt_engine, tmp_path)
    refresher = TokenRefresher(rt_engine, vault, load_catalog())
    stop = asyncio.Event()
    sweep = token_refresher.delete_orphaned_secrets

    async def sweep_then_stop(*args: Any) -> list[str]:
        try:
            return await sweep(*args)
        finally:
            stop.set()  # one pass

    monkeypatch.setattr(token_refresher, "delete_orphaned_secrets", sweep_then_stop)
    await asyncio.wait_for(refresher.run_forever(stop), 10)
    assert stop.is_set()
    # The pass also sweeps PKCE verifiers no OAuth state names (this one has none).
    assert sorted(await vault.list()) == sorted(n for n in LIVE if not n.startswith("pkce-"))
