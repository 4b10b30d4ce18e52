"""Shared helpers of the API tests (the fixtures are in this directory's conftest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from castiel_sync.api.auth import Role, mint_token
from castiel_sync.settings import Settings
from castiel_sync.testing.oauth import OAuthEmulator

JWT_SECRET = "test-jwt-secret-" + "k" * 32
PUBLIC_URL = "https://castiel.example.test"
CLIENT_ID = "castiel-client"
CLIENT_SECRET = "client-secret-Zq81vXk2"  # a value the secret-leak test searches for


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    oauth: OAuthEmulator
    adapters: dict[str, type[Any]] = field(default_factory=dict)

    def token(self, tenant: str, role: Role | str = Role.TENANT_ADMIN, user: str = "alice") -> str:
        return mint_token(self.settings, tenant_id=tenant, role=role, user_id=user)

    def auth(
        self, tenant: str = "tenanta", role: Role | str = Role.TENANT_ADMIN, user: str = "alice"
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, role, user)}"}

    @property
    def admin_a(self) -> dict[str, str]:
        return self.auth("tenanta")

    @property
    def admin_b(self) -> dict[str, str]:
        return self.auth("tenantb", user="bob")

    @property
    def super_admin(self) -> dict[str, str]:
        return self.auth("system", Role.SUPER_ADMIN, user="root")

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    async def create_integration(
        self,
        headers: dict[str, str] | None = None,
        provider: str = "salesforce",
        instance: str = "sales-team",
        **extra: Any,
    ) -> dict[str, Any]:
        body = {"providerId": provider, "name": f"{provider} {instance}", "instanceId": instance}
        body.update(extra)
        response = await self.client.post(
            "/integrations", json=body, headers=headers or self.admin_a
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def set_oauth_client(self, provider: str = "salesforce") -> None:
        response = await self.client.put(
            f"/providers/{provider}/oauth-client",
            json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET},
            headers=self.super_admin,
        )
        assert response.status_code == 204, response.text


def make_settings(db_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        public_url=PUBLIC_URL,
    )


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, read from ``app.routes`` (included routers
    flattened), so that a new endpoint cannot be left out of a walk."""
    from fastapi.routing import APIRoute

    found: list[tuple[str, str]] = []

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                    found.append((method, prefix + route.path))
            elif hasattr(route, "original_router"):  # FastAPI's included router
                walk(route.original_router.routes, prefix + route.include_context.prefix)

    walk(list(app.routes), "")
    return found


async def snapshot(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order (for "nothing changed" checks)."""
    from sqlalchemy import select

    from castiel_sync.store.schema import metadata

    state: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in metadata().sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = (await conn.execute(select(table).order_by(*order))).all()
            state[table.name] = [tuple(row) for row in rows]
    return state
