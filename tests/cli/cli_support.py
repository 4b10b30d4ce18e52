"""Helpers of the operator CLI tests: a deployment (database + data dir) with two tenants'
integrations, and a runner whose environment points the CLI at it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from typer.testing import CliRunner, Result

from castiel_sync.catalog import load_catalog
from castiel_sync.catalog.sync import sync_catalog
from castiel_sync.cli.main import app
from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.repositories import (
    AuditRepository,
    ConnectionRepository,
    IntegrationRepository,
)
from castiel_sync.store.repositories.executions import ExecutionRepository
from castiel_sync.store.schema import create_all, metadata

T = TypeVar("T")


def a_scope(tenant: str) -> TenantScope:
    return TenantScope(TenantId(tenant))


@dataclass
class Deployment:
    db_url: str
    data_dir: Path
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "CASTIEL_DATABASE_URL": self.db_url,
            "CASTIEL_DATA_DIR": str(self.data_dir),
            "CASTIEL_TENANT": "",
            "COLUMNS": "220",
        }

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=self.env, catch_exceptions=False)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def run(self, action: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            store = Store(create_engine(self.db_url))
            try:
                return await action(store)
            finally:
                await store.dispose()

        return asyncio.run(go())

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the tables a CLI command could change."""

        async def read(store: Store) -> dict[str, list[tuple[Any, ...]]]:
            tables = ["integrations", "audit_log", "conflicts", "shards", "sync_executions"]
            out: dict[str, list[tuple[Any, ...]]] = {}
            async with store.transaction() as session:
                for table in tables:
                    rows = await session.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                    out[table] = sorted(tuple(map(str, r)) for r in rows.all())
            return out

        return self.run(read)


def prepare(db_url: str, data_dir: Path) -> Deployment:
    """The schema with no rows, the catalog loaded, and one connected Salesforce
    integration per tenant ('tenanta', 'tenantb') plus an unconnected one for A."""

    async def go() -> dict[str, str]:
        engine = create_engine(db_url)
        try:
            if engine.dialect.name == "sqlite":
                await create_all(engine)
            else:
                names = ", ".join(f'"{t.name}"' for t in metadata().sorted_tables)
                async with engine.begin() as conn:
                    await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            store = Store(engine)
            async with store.transaction() as session:
                await sync_catalog(session, load_catalog())
            ids: dict[str, str] = {}
            for tenant, instance, connected in (
                ("tenanta", "sales", True),
                ("tenanta", "support", False),
                ("tenantb", "sales", True),
            ):
                async with store.transaction() as session:
                    scope = a_scope(tenant)
                    row = await IntegrationRepository(session, scope).create(
                        provider_id="salesforce",
                        name=f"Salesforce {instance}",
                        instance_id=instance,
                        settings=IntegrationSettings(),
                        created_by="alice",
                    )
                    if connected:
                        secret = f"tenant-{tenant}-salesforce-{instance}-oauth"
                        await ConnectionRepository(session, scope).upsert(
                            row.id, scope="tenant", credential_secret_name=secret
                        )
                        await IntegrationRepository(session, scope).update(
                            row.id, credential_secret_name=secret, status="active"
                        )
                        executions = ExecutionRepository(session, scope)
                        run = await executions.start(
                            integration_id=row.id, entity="Account", trigger="manual",
                            sync_type="full", cursor_before=None,
                        )  # fmt: skip
                        await executions.add_progress(run, {"fetched": 7, "created": 7})
                        await executions.finish(run, status="succeeded")
                    ids[f"{tenant}/{instance}"] = row.id
            return ids
        finally:
            await engine.dispose()

    deployment = Deployment(db_url, data_dir)
    deployment.ids = asyncio.run(go())
    return deployment


async def audit_actions(store: Store, tenant: str) -> list[str]:
    async with store.transaction() as session:
        return [e.action for e in await AuditRepository(session, a_scope(tenant)).list()]
