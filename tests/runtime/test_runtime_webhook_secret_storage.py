"""The webhook receiver never stores or logs the endpoint's secret.

Run with the real Dynamics 365 adapter for each Dataverse authentication scheme
(``WebhookKey`` ``?code=``, ``HttpHeader``, ``HttpQueryString``): the key travels in the
request's URL or headers, and neither the stored delivery, the raw database bytes (SQLite)
nor the log may hold it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runtime_support import make_integration
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.adapters.dynamics365 import Dynamics365Adapter
from castiel_sync.api.app import create_app
from castiel_sync.settings import Settings
from castiel_sync.store.tables import WebhookDeliveryRow

KEY = "dvKey-7Qm2ZpX9vR4tL8wN3sB6yH1c"  # the value searched for everywhere
HOOK = "tenant-ta-dynamics365-d-webhook"
BODY = json.dumps(
    {
        "PrimaryEntityName": "account",
        "PrimaryEntityId": "6f7a3b2c-0000-4000-8000-000000000001",
        "MessageName": "Update",
        "OperationCreatedOn": "/Date(1772452800000)/",
        "InputParameters": [],
    }
).encode()

# scheme -> (the integration's webhook secret, query params, headers of the delivery)
SCHEMES: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "WebhookKey": (KEY, {"code": KEY}, {}),
    "HttpHeader": (f"HttpHeader:x-dv-key={KEY}&x-env=prod", {}, {"x-dv-key": KEY, "x-env": "prod"}),
    "HttpQueryString": (f"HttpQueryString:token={KEY}&env=prod", {"token": KEY, "env": "prod"}, {}),
}


@pytest.fixture
async def app_client(
    rt_engine: AsyncEngine, db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(database_url=db_url, data_dir=tmp_path, jwt_secret="j" * 40)
    app = create_app(settings, run_migrations=False, get_adapter=lambda _: Dynamics365Adapter)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c, app.state.ctx


def _database_bytes(directory: Path) -> bytes:
    """The SQLite database file and its journals, as bytes."""
    return b"".join(p.read_bytes() for p in directory.glob("castiel.db*"))


def _leaks(value: Any, needle: str) -> bool:
    return needle in json.dumps(value, default=str)


@pytest.mark.parametrize("scheme", list(SCHEMES))
async def test_dynamics_webhook_secret_is_stored_and_logged_nowhere(
    app_client: Any,
    rt_engine: AsyncEngine,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
) -> None:
    client, ctx = app_client
    secret, params, headers = SCHEMES[scheme]
    integration_id = await make_integration(
        rt_engine, "ta", "d", provider="dynamics365", webhook_secret_name=HOOK
    )
    await ctx.vault.put(HOOK, secret)
    url = f"/webhooks/dynamics365/{integration_id}"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="httpx")  # the test's own client logs its URLs

    refused = await client.post(url, content=BODY, params={"code": "wrong"})
    assert refused.status_code == 401  # the secret is really what authenticates
    response = await client.post(url, content=BODY, params=params, headers=headers)
    assert response.status_code == 202, response.text

    async with rt_engine.connect() as conn:
        rows = (await conn.execute(select(WebhookDeliveryRow.__table__))).all()
    assert len(rows) == 1
    (row,) = rows
    assert row.body == BODY  # the payload itself is kept raw
    assert not _leaks(dict(row._mapping), KEY), row.headers
    assert not _leaks(dict(row._mapping), secret)
    assert KEY not in caplog.text
    if db_url.startswith("sqlite"):
        raw = _database_bytes(tmp_path)
        assert raw and KEY.encode() not in raw
