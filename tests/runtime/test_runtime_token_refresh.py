"""TokenRefresher: single flight with rotating refresh tokens; failure disables."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from runtime_support import T0, FakeClock, make_integration, outbox_events
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.catalog import load_catalog
from castiel_sync.domain.events import TOKEN_REFRESH_FAILED
from castiel_sync.domain.secret_names import system_secret, tenant_secret
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.runtime.token_refresher import (
    RefreshFailedError,
    RefreshingCredentialProvider,
    TokenRefresher,
)
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.repositories import ConnectionRepository, IntegrationRepository
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.testing.oauth import OAuthEmulator
from castiel_sync.vault import open_vault

TENANT = "acme"


@pytest.fixture
def oauth() -> OAuthEmulator:
    server = OAuthEmulator(
        base_url="https://login.salesforce.com",
        token_path="/services/oauth2/token",
        rotate_refresh_tokens=True,
        extra_token_fields={"instance_url": "https://acme.my.salesforce.com"},
    )
    server.register_client("cid", "csecret", ["https://castiel.test/oauth/callback"])
    return server


async def _connected(
    engine: AsyncEngine, vault: object, oauth: OAuthEmulator, expires_in: float = 600
) -> tuple[str, str, str]:
    integration = await make_integration(engine, TENANT, "sales")
    name = tenant_secret(TENANT, "salesforce", "sales", "oauth")
    token = {
        "access_token": oauth.mint_access_token(client_id="cid"),
        "refresh_token": oauth.mint_refresh_token("cid"),
        "token_type": "Bearer",
        "expires_at": int((T0 + timedelta(seconds=expires_in)).timestamp()),
    }
    await vault.put(name, json.dumps(token))  # type: ignore[attr-defined]
    await vault.put(  # type: ignore[attr-defined]
        system_secret("salesforce"), json.dumps({"client_id": "cid", "client_secret": "csecret"})
    )
    async with Store(engine).transaction() as session:
        scope = TenantScope(TenantId(TENANT))
        row = await ConnectionRepository(session, scope).upsert(
            integration,
            scope="tenant",
            credential_secret_name=name,
            token_expires_at=T0 + timedelta(seconds=expires_in),
        )
        await IntegrationRepository(session, scope).update(integration, credential_secret_name=name)
    return integration, row.id, token["refresh_token"]


def _vault(engine: AsyncEngine, tmp_path: Path) -> object:
    return open_vault(Settings(data_dir=tmp_path, master_key=None), engine)


async def _adapter_credentials(
    engine: AsyncEngine, tmp_path: Path, oauth: OAuthEmulator
) -> tuple[TokenRefresher, RefreshingCredentialProvider, IntegrationRow]:
    """A connected integration (token valid for 30 minutes), its refresher, and the
    credential provider adapters get."""
    vault = _vault(engine, tmp_path)
    integration_id, _, _ = await _connected(engine, vault, oauth, expires_in=1800)
    refresher = TokenRefresher(
        engine, vault, load_catalog(), clock=FakeClock(T0), transport=oauth.transport()
    )
    async with Store(engine).transaction() as session:
        integration = await IntegrationRepository(session, TenantScope(TenantId(TENANT))).get(
            integration_id
        )
    return refresher, RefreshingCredentialProvider(refresher), integration


async def test_ten_concurrent_refreshes_one_provider_call_everyone_gets_the_new_token(
    rt_engine: AsyncEngine, db_url: str, tmp_path: Path, oauth: OAuthEmulator
) -> None:
    vault = _vault(rt_engine, tmp_path)
    _, connection_id, old_refresh = await _connected(rt_engine, vault, oauth)
    clock = FakeClock(T0)
    # Two "processes": separate engines and refreshers (the DB lease is what they share).
    other = create_engine(db_url)
    try:
        refreshers = [
            TokenRefresher(e, vault, load_catalog(), clock=clock, transport=oauth.transport())
            for e in (rt_engine, other)
        ]
        async with Store(rt_engine).transaction() as session:
            version = (
                await ConnectionRepository(session, TenantScope(TenantId(TENANT))).get(
                    connection_id
                )
            ).credential_version
        results = await asyncio.gather(
            *(
                refreshers[n % 2].refresh(connection_id, TENANT, seen_version=version)
                for n in range(10)
            )
        )
    finally:
        await other.dispose()
    assert oauth.token_call_count("refresh_token") == 1
    tokens = {c.access_token.get_secret_value() for c in results if c.access_token}
    assert len(tokens) == 1 and len(results) == 10
    (token,) = tokens
    assert oauth.access_token_is_valid(token)
    assert not oauth.refresh_token_is_valid(old_refresh)  # rotated
    stored = json.loads(await vault.get(tenant_secret(TENANT, "salesforce", "sales", "oauth")))  # type: ignore[attr-defined]
    assert stored["access_token"] == token and oauth.refresh_token_is_valid(stored["refresh_token"])
    assert stored["instance_url"] == "https://acme.my.salesforce.com"
    async with Store(rt_engine).transaction() as session:
        row = await ConnectionRepository(session, TenantScope(TenantId(TENANT))).get(connection_id)
    assert row.credential_version == version + 1 and row.status == "active"
    assert row.token_expires_at == T0 + timedelta(hours=1)


async def test_hourly_sweep_and_adapter_refresh_share_the_single_flight(
    rt_engine: AsyncEngine, tmp_path: Path, oauth: OAuthEmulator
) -> None:
    refresher, provider, integration = await _adapter_credentials(rt_engine, tmp_path, oauth)
    before = await provider.credentials(integration)  # still valid: no refresh
    assert oauth.token_call_count() == 0
    on_401 = provider.token_refresher(integration)
    assert on_401 is not None
    report, *fresh = await asyncio.gather(refresher.run_once(), on_401(), on_401())
    assert oauth.token_call_count("refresh_token") == 1
    assert len(report.refreshed) == 1 or all(f.access_token != before.access_token for f in fresh)
    assert len({f.access_token.get_secret_value() for f in fresh if f.access_token}) == 1
    assert (await provider.credentials(integration)).access_token == fresh[0].access_token


async def test_refused_refresh_alerts_marks_the_connection_and_disables_the_integration(
    rt_engine: AsyncEngine, tmp_path: Path, oauth: OAuthEmulator
) -> None:
    vault = _vault(rt_engine, tmp_path)
    integration_id, connection_id, refresh_token = await _connected(rt_engine, vault, oauth)
    oauth.revoke_refresh_token(refresh_token)
    refresher = TokenRefresher(
        rt_engine, vault, load_catalog(), clock=FakeClock(T0), transport=oauth.transport()
    )
    report = await refresher.run_once()
    assert report.failed == [connection_id]
    with pytest.raises(RefreshFailedError):  # and no second call to the provider
        await refresher.refresh(connection_id, TENANT)
    assert oauth.token_call_count("refresh_token") == 1
    async with Store(rt_engine).transaction() as session:
        scope = TenantScope(TenantId(TENANT))
        connection = await ConnectionRepository(session, scope).get(connection_id)
        integration = await IntegrationRepository(session, scope).get(integration_id)
    assert connection.status == "refresh_failed"
    assert connection.refresh_history[-1]["ok"] is False
    assert integration.status == "disabled"
    assert "refresh" in (integration.status_reason or "")
    (event,) = await outbox_events(rt_engine, TOKEN_REFRESH_FAILED)
    assert event["data"]["integrationId"] == integration_id
    assert event["data"]["connectionId"] == connection_id
    assert event["data"]["integrationDisabled"] is True
    assert "invalid_grant" in event["data"]["reason"]


async def test_a_second_job_holding_the_dead_token_reuses_the_first_jobs_refresh(
    rt_engine: AsyncEngine, tmp_path: Path, oauth: OAuthEmulator
) -> None:
    """Two jobs of one integration load the same token; the first meets a 401 and
    refreshes. The second then meets its 401 with the dead token: it must get the first
    job's token, not refresh again (with rotation that would burn a refresh token)."""
    _, provider, integration = await _adapter_credentials(rt_engine, tmp_path, oauth)
    held_a = await provider.credentials(integration)
    on_401_a = provider.token_refresher(integration)
    held_b = await provider.credentials(integration)
    on_401_b = provider.token_refresher(integration)
    assert on_401_a is not None and on_401_b is not None
    assert held_a.access_token == held_b.access_token

    fresh_a = await on_401_a()
    fresh_b = await on_401_b()

    assert oauth.token_call_count("refresh_token") == 1
    assert fresh_b.access_token == fresh_a.access_token != held_b.access_token
