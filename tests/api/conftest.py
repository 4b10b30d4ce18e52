"""Fixtures for the management API: the app on each database backend, lifespan run, an
httpx client over ASGI, tokens for two tenants and a super admin, and the emulated
OAuth server standing in for every provider's token endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import CLIENT_ID, CLIENT_SECRET, PUBLIC_URL, Api, make_settings
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.api.app import create_app
from castiel_sync.catalog import Catalog, load_catalog
from castiel_sync.testing.oauth import OAuthEmulator


@pytest.fixture
def oauth_server() -> OAuthEmulator:
    server = OAuthEmulator(
        base_url="https://login.salesforce.com",
        authorize_path="/services/oauth2/authorize",
        token_path="/services/oauth2/token",
        extra_token_fields={"instance_url": "https://acme.my.salesforce.com"},
    )
    server.register_client(CLIENT_ID, CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])
    return server


@pytest.fixture
def app_factory(
    engine: AsyncEngine, db_url: str, tmp_path: Path, oauth_server: OAuthEmulator
) -> Callable[..., FastAPI]:
    """Builds the app on the test database (schema made by the ``engine`` fixture)."""

    def build(**kwargs: Any) -> FastAPI:
        kwargs.setdefault("run_migrations", False)
        kwargs.setdefault("oauth_transport", oauth_server.transport())
        return create_app(make_settings(db_url, tmp_path / "data"), **kwargs)

    return build


@pytest.fixture
async def api(
    app_factory: Callable[..., FastAPI], oauth_server: OAuthEmulator
) -> AsyncIterator[Api]:
    adapters: dict[str, type[Any]] = {}

    def get_adapter(provider_id: str) -> type[Any]:
        from castiel_sync.sdk import AdapterNotFoundError

        try:
            return adapters[provider_id]
        except KeyError:
            raise AdapterNotFoundError(provider_id) from None

    app = app_factory(get_adapter=get_adapter)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield Api(
                app=app,
                client=client,
                settings=app.state.ctx.settings,
                oauth=oauth_server,
                adapters=adapters,
            )


@pytest.fixture
def api_key_catalog() -> Catalog:
    """The packaged catalog with Gong taking API keys (the spec's ``gong-apikey``)."""
    packaged = load_catalog()
    providers = {spec.id: spec for spec in packaged}
    providers["gong"] = packaged.get("gong").model_copy(
        update={"auth_type": "api_key", "oauth": None}
    )
    return Catalog(providers)


@pytest.fixture
async def key_api(
    app_factory: Callable[..., FastAPI], api_key_catalog: Catalog, oauth_server: OAuthEmulator
) -> AsyncIterator[Api]:
    app = app_factory(catalog=api_key_catalog)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield Api(app, client, app.state.ctx.settings, oauth_server)
