"""`castiel-sync integrations sync`: a real sync of a connected integration against the
Salesforce emulator on loopback; --json counts; a rejected credential exits 1."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cli_support import Deployment, a_scope, prepare

from castiel_sync.catalog import load_catalog
from castiel_sync.demo.emulators import PROFILES, EmulatorApp, LoopbackServer, WallClock, free_port
from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.repositories import IntegrationRepository
from castiel_sync.store.repositories.shards import ShardRepository
from castiel_sync.vault import open_vault


async def connected_integration(dep: Deployment, emulator_url: str, token: str) -> str:
    spec = load_catalog().get("salesforce")
    mappings = spec.default_entity_mappings()
    settings = IntegrationSettings(
        entity_mappings=mappings, allowed_shard_types=sorted({m.shard_type for m in mappings})
    )
    secret = "tenant-tenanta-salesforce-live-oauth"
    engine = create_engine(dep.db_url)
    try:
        vault = open_vault(Settings(database_url=dep.db_url, data_dir=dep.data_dir), engine)
        await vault.put(secret, json.dumps({"access_token": token, "instance_url": emulator_url}))
        async with Store(engine).transaction() as session:
            repo = IntegrationRepository(session, a_scope("tenanta"))
            row = await repo.create(
                provider_id="salesforce",
                name="Live",
                instance_id="live",
                settings=settings,
                created_by="alice",
            )
            await repo.update(row.id, credential_secret_name=secret, status="active")
            return row.id
    finally:
        await engine.dispose()


@pytest.fixture
def dep(db_url: str, tmp_path: Path) -> Deployment:
    return prepare(db_url, tmp_path)


async def test_sync_now_against_the_emulator(dep: Deployment) -> None:
    profile = PROFILES["salesforce"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    emulator, oauth = profile.build(WallClock(), url, "client-secret")
    seeded = profile.seed(emulator, 40)
    server = LoopbackServer(EmulatorApp(emulator, oauth), port)
    await server.start()
    try:
        integration = await connected_integration(dep, url, emulator.issue_token())
        result = await asyncio.to_thread(
            dep.cli, "integrations", "sync", integration, "--tenant", "tenanta", "--full", "--json"
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["status"] == "succeeded" and doc["syncType"] == "full"
        assert doc["created"] == doc["fetched"] == seeded.total

        async def count(store: Store) -> int:
            async with store.transaction() as session:
                return await ShardRepository(session, a_scope("tenanta")).count()

        assert await asyncio.to_thread(dep.run, count) == seeded.total

        # The table form; then an incremental run finds nothing new.
        text = await asyncio.to_thread(
            dep.cli, "integrations", "sync", integration, "--tenant", "tenanta"
        )
        assert text.exit_code == 0 and "✓ incremental sync" in text.stdout

        # Tenant B cannot sync A's integration.
        other = await asyncio.to_thread(
            dep.cli, "integrations", "sync", integration, "--tenant", "tenantb"
        )
        assert other.exit_code == 3

        # A credential the provider rejects: exit 1 with what to do.
        emulator.expire_all_tokens()
        failed = await asyncio.to_thread(
            dep.cli, "integrations", "sync", integration, "--tenant", "tenanta", "--json"
        )
        assert failed.exit_code == 1
        assert "reconnect" in json.loads(failed.stdout)["errors"][0]
    finally:
        await server.stop()
