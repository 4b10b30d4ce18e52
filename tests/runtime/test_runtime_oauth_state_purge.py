"""Abandoned OAuth authorizations: expired states and their PKCE verifiers are purged, per
tenant or every tenant's from the token refresher's hourly pass; live ones stay usable."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from runtime_support import T0, FakeClock, make_integration
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import load_catalog
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.runtime.token_refresher import TokenRefresher
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.repositories import OAuthStateRepository
from castiel_sync.store.tables import OAuthStateRow
from castiel_sync.vault import Vault, open_vault
from castiel_sync.vault.orphans import delete_orphaned_verifiers, purge_expired_authorizations


class Authorizations:
    def __init__(self, engine: AsyncEngine, vault: Vault) -> None:
        self.store = Store(engine)
        self.vault = vault
        self.started = 0

    async def start(self, tenant: str, integration_id: str, expires_at: datetime) -> str:
        """What the authorize endpoint leaves behind; returns the verifier's name."""
        self.started += 1
        verifier = f"pkce-{tenant}{self.started}"
        await self.vault.put(verifier, '{"code_verifier": "v"}')
        async with self.store.transaction() as session:
            await OAuthStateRepository(session, TenantScope(TenantId(tenant))).create(
                integration_id=integration_id,
                redirect_uri="https://castiel.test/oauth/callback",
                verifier_secret_name=verifier,
                expires_at=expires_at,
            )
        return verifier

    async def pending(self) -> set[str]:
        """The verifier names of the states in the database, every tenant's."""
        async with self.store.transaction() as session:
            rows = await session.execute(select(OAuthStateRow.verifier_secret_name))
            return set(rows.scalars())

    async def verifiers(self) -> set[str]:
        return set(await self.vault.list("pkce-"))


async def abandoned(engine: AsyncEngine, tmp_path: Path) -> tuple[Authorizations, dict[str, str]]:
    vault = open_vault(Settings(data_dir=tmp_path, master_key=None), engine)
    flows = Authorizations(engine, vault)
    acme = await make_integration(engine, "acme", "sales")
    globex = await make_integration(engine, "globex", "sales")
    minute = timedelta(minutes=1)
    verifiers = {
        "acme expired": await flows.start("acme", acme, T0 - minute),
        "acme expired long ago": await flows.start("acme", acme, T0 - 600 * minute),
        "acme expiring now": await flows.start("acme", acme, T0),
        "acme live": await flows.start("acme", acme, T0 + 9 * minute),
        "globex expired": await flows.start("globex", globex, T0 - minute),
        "globex live": await flows.start("globex", globex, T0 + minute),
    }
    assert await flows.pending() == await flows.verifiers() == set(verifiers.values())
    return flows, verifiers


async def test_a_tenants_purge_takes_its_expired_authorizations_only(
    rt_engine: AsyncEngine, tmp_path: Path
) -> None:
    flows, verifiers = await abandoned(rt_engine, tmp_path)
    purge = purge_expired_authorizations
    assert await purge(flows.store, flows.vault, TenantScope(TenantId("acme")), T0) == 3
    left = {verifiers[k] for k in ("acme live", "globex expired", "globex live")}
    assert await flows.pending() == await flows.verifiers() == left
    assert await purge(flows.store, flows.vault, SystemScope("tests"), T0) == 1
    left = {verifiers["acme live"], verifiers["globex live"]}
    assert await flows.pending() == await flows.verifiers() == left
    async with flows.store.transaction() as session:  # the live one still completes
        state = await session.scalar(
            select(OAuthStateRow.state).where(
                OAuthStateRow.verifier_secret_name == verifiers["acme live"]
            )
        )
        assert state is not None
        taken = await OAuthStateRepository(session, SystemScope("callback")).consume(state, now=T0)
    assert taken.tenant_id == "acme"


async def test_the_refreshers_hourly_pass_purges_every_tenant(
    rt_engine: AsyncEngine, tmp_path: Path
) -> None:
    flows, verifiers = await abandoned(rt_engine, tmp_path)
    refresher = TokenRefresher(rt_engine, flows.vault, load_catalog(), clock=FakeClock(T0))
    await refresher.sweep_vault()
    left = {verifiers["acme live"], verifiers["globex live"]}
    assert await flows.pending() == await flows.verifiers() == left


async def test_verifiers_no_state_names_are_swept_and_named_ones_kept(
    rt_engine: AsyncEngine, tmp_path: Path
) -> None:
    flows, verifiers = await abandoned(rt_engine, tmp_path)
    # What a crash leaves: a verifier whose state was taken (a callback that died before
    # deleting it) or never written; and a tenant secret that is none of the sweep's.
    await flows.vault.put("pkce-crashed-callback", '{"code_verifier": "v"}')
    await flows.vault.put("pkce-crashed-authorize", '{"code_verifier": "v"}')
    await flows.vault.put("tenants-acme-x", "unrelated")
    swept = await delete_orphaned_verifiers(flows.store, flows.vault)
    assert sorted(swept) == ["pkce-crashed-authorize", "pkce-crashed-callback"]
    # Every state's verifier stays, expired ones too (their purge takes both).
    assert await flows.verifiers() == await flows.pending() == set(verifiers.values())
    assert await flows.vault.get("tenants-acme-x") == "unrelated"
    assert await delete_orphaned_verifiers(flows.store, flows.vault) == []
