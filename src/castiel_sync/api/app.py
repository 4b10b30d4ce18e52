"""The FastAPI application factory."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from castiel_sync.api.auth import TokenVerifier
from castiel_sync.api.context import AppContext
from castiel_sync.api.problems import (
    BodySizeLimitMiddleware,
    NulCharacterGuardMiddleware,
    install_problem_handlers,
)
from castiel_sync.settings import Settings, get_settings

log = logging.getLogger("castiel_sync.api")

OPENAPI_TAGS = [
    {"name": "health", "description": "Liveness and readiness."},
    {"name": "providers", "description": "The provider catalog."},
    {"name": "integrations", "description": "A tenant's integration instances and settings."},
    {"name": "credentials", "description": "OAuth 2 (authorization code + PKCE) and API keys."},
    {"name": "limits", "description": "Sync limits (super admins)."},
    {"name": "audit", "description": "Who changed which configuration, and when."},
    {"name": "webhooks", "description": "Provider webhooks in (verified, stored, enqueued)."},
    {"name": "dead letters", "description": "Messages past their delivery limit, per tenant."},
]


async def _migrate(engine: Any, settings: Settings) -> None:
    """Alembic to head (``castiel_sync.store.migrate``); the bare schema if it is absent."""
    try:
        migrate = importlib.import_module("castiel_sync.store.migrate")
    except ModuleNotFoundError:
        from castiel_sync.store.schema import create_all

        await create_all(engine)
        return
    await migrate.upgrade(settings.resolved_database_url)


def create_app(
    settings: Settings | None = None,
    *,
    run_migrations: bool = True,
    oauth_transport: httpx.AsyncBaseTransport | None = None,
    get_adapter: Callable[[str], type[Any]] | None = None,
    catalog: Any = None,
) -> FastAPI:
    """The management API. ``run_migrations=False`` when the schema is already in place
    (tests that build it themselves); ``oauth_transport``, ``get_adapter`` and ``catalog``
    replace the real token endpoints, adapter registry and packaged catalog in tests."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from castiel_sync.catalog import load_catalog
        from castiel_sync.catalog.sync import sync_catalog
        from castiel_sync.sdk import get_adapter as sdk_get_adapter
        from castiel_sync.store import Store
        from castiel_sync.store.base import create_engine
        from castiel_sync.vault import open_vault

        if settings.resolved_database_url.startswith("sqlite"):
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.resolved_database_url)
        try:
            if run_migrations:
                await _migrate(engine, settings)
            store = Store(engine)
            providers = catalog if catalog is not None else load_catalog()
            async with store.transaction() as session:
                await sync_catalog(session, providers)
            vault = open_vault(settings, engine)
            app.state.ctx = AppContext(
                settings=settings,
                engine=engine,
                store=store,
                vault=vault,
                catalog=providers,
                verifier=TokenVerifier(settings),
                oauth_transport=oauth_transport,
                get_adapter=get_adapter or sdk_get_adapter,
            )
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="castiel-sync",
        summary="Management API of the Castiel integrations service",
        description=(
            "Authenticate with `Authorization: Bearer <token>`; on the embedded default, mint "
            "one with `castiel-sync token --tenant <id> --role tenant_admin`. Errors are "
            "RFC 9457 `application/problem+json`."
        ),
        version=_version(),
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
        docs_url="/docs",
        redoc_url=None,
    )
    install_problem_handlers(app)
    _install_store_handlers(app)
    app.add_middleware(NulCharacterGuardMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_webhook_body_bytes)

    from castiel_sync.api.routes import ROUTERS

    for router in ROUTERS:
        app.include_router(router)
    from castiel_sync.api.routes import dead_letters, metrics, webhooks  # the runtime's routes

    for router in (webhooks.router, dead_letters.router, metrics.router):
        app.include_router(router)
    return app


def _install_store_handlers(app: FastAPI) -> None:
    """Store errors carry messages safe for users; another tenant's object and a missing
    one raise the same NotFoundError, so both are the same 404."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from castiel_sync.api.problems import ConflictProblem, NotFound, problem_response
    from castiel_sync.store.errors import ConflictError, NotFoundError

    async def on_not_found(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, NotFound(str(exc)))

    async def on_conflict(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, ConflictProblem(str(exc)))

    app.add_exception_handler(NotFoundError, on_not_found)
    app.add_exception_handler(ConflictError, on_conflict)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("castiel-sync")
    except PackageNotFoundError:
        return "0"
