"""WebhookReceiver: handshake, verified delivery stored and enqueued in one transaction,
and every refusal (bad signature, oversized, malformed, unknown, wrong provider, another
tenant's secret) a 4xx with nothing stored or enqueued. /readyz and the store."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runtime_support import count, make_integration, outbox_events
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.api.app import create_app
from castiel_sync.domain.events import WEBHOOK_RECEIVED
from castiel_sync.sdk import (
    AdapterValidationError,
    IntegrationAdapter,
    WebhookEvent,
    WebhookRequest,
    WebhookResponse,
)
from castiel_sync.settings import Settings
from castiel_sync.store.tables import OutboxRow, WebhookDeliveryRow

SECRET_A = "whsec-tenant-a-0123456789"
SECRET_B = "whsec-tenant-b-9876543210"


class SignedAdapter(IntegrationAdapter):
    """HMAC-SHA256 of the raw body in X-Signature; ``?challenge=`` handshake echo."""

    provider_id = "hubspot"

    async def connect(self, credentials: Any) -> None: ...
    async def disconnect(self) -> None: ...
    async def test_connection(self) -> Any: ...
    async def fetch_records(self, entity: str, options: Any) -> Any: ...

    def handle_webhook_handshake(
        self, request: WebhookRequest, secret: str
    ) -> WebhookResponse | None:
        challenge = request.query.get("challenge")
        if challenge is None:
            return None
        return WebhookResponse(status_code=200, body=challenge.encode(), media_type="text/plain")

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        given = request.headers.get("x-signature", "")
        expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given, expected)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        try:
            doc = json.loads(request.body)
            return [WebhookEvent(entity=e["entity"], external_id=str(e["id"])) for e in doc]
        except (ValueError, KeyError, TypeError) as exc:
            raise AdapterValidationError("malformed payload") from exc

    def webhook_delivery_response(self, request: WebhookRequest) -> WebhookResponse | None:
        if request.headers.get("x-want-ack"):
            return WebhookResponse(status_code=200, body=b"<Ack>true</Ack>", media_type="text/xml")
        return None


def sign(body: bytes, secret: str = SECRET_A) -> dict[str, str]:
    return {"x-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
async def client(
    rt_engine: AsyncEngine, db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    settings = Settings(
        database_url=db_url, data_dir=tmp_path, jwt_secret="j" * 40, max_webhook_body_bytes=4096
    )
    app = create_app(settings, run_migrations=False, get_adapter=lambda _: SignedAdapter)
    hook = "tenant-{}-hubspot-{}-webhook"
    ids = {
        "a": await make_integration(
            rt_engine, "ta", "a", provider="hubspot", webhook_secret_name=hook.format("ta", "a")
        ),
        "b": await make_integration(
            rt_engine, "tb", "b", provider="hubspot", webhook_secret_name=hook.format("tb", "b")
        ),
        "sf": await make_integration(rt_engine, "ta", "sf", provider="salesforce"),
    }
    async with app.router.lifespan_context(app):
        await app.state.ctx.vault.put("tenant-ta-hubspot-a-webhook", SECRET_A)
        await app.state.ctx.vault.put("tenant-tb-hubspot-b-webhook", SECRET_B)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c, ids


async def _stored(engine: AsyncEngine) -> tuple[int, int]:
    return await count(engine, WebhookDeliveryRow.__table__), await count(
        engine, OutboxRow.__table__
    )


async def test_handshake_is_answered_and_nothing_stored(
    client: Any, rt_engine: AsyncEngine
) -> None:
    c, ids = client
    response = await c.get(f"/webhooks/hubspot/{ids['a']}", params={"challenge": "abc123"})
    assert response.status_code == 200 and response.text == "abc123"
    assert await _stored(rt_engine) == (0, 0)


async def test_signed_delivery_is_stored_raw_enqueued_and_answered_202(
    client: Any, rt_engine: AsyncEngine
) -> None:
    c, ids = client
    body = b'[{"entity": "contacts", "id": 7}]'
    response = await c.post(
        f"/webhooks/hubspot/{ids['a']}", content=body, headers={**sign(body), "authorization": "x"}
    )
    assert response.status_code == 202, response.text
    delivery_id = response.json()["deliveryId"]
    assert await _stored(rt_engine) == (1, 1)
    async with rt_engine.connect() as conn:
        row = (await conn.execute(WebhookDeliveryRow.__table__.select())).one()
    assert row.body == body and row.tenant_id == "ta" and row.integration_id == ids["a"]
    assert row.body_sha256 == hashlib.sha256(body).hexdigest()
    assert "authorization" not in row.headers
    (event,) = await outbox_events(rt_engine, WEBHOOK_RECEIVED)
    assert event["data"] == {
        "tenantId": "ta",
        "integrationId": ids["a"],
        "provider": "hubspot",
        "deliveryId": delivery_id,
    }
    acked = await c.post(
        f"/webhooks/hubspot/{ids['a']}", content=body, headers={**sign(body), "x-want-ack": "1"}
    )
    assert acked.status_code == 200 and acked.text == "<Ack>true</Ack>"  # the adapter's answer


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("bad-signature", 401),
        ("other-tenants-secret", 401),
        ("oversized", 413),
        ("malformed", 400),
        ("unknown-integration", 404),
        ("wrong-provider", 404),
        ("no-webhook-secret", 404),
    ],
)
async def test_refusals_store_and_enqueue_nothing(
    client: Any, rt_engine: AsyncEngine, case: str, status: int
) -> None:
    c, ids = client
    good = b'[{"entity": "contacts", "id": 7}]'
    url, body, headers = f"/webhooks/hubspot/{ids['a']}", good, sign(good)
    if case == "bad-signature":
        headers = {"x-signature": "0" * 64}
    elif case == "other-tenants-secret":
        headers = sign(good, SECRET_B)  # tenant B's secret does not open A's endpoint
    elif case == "oversized":
        body = b"[" + b" " * 5000 + b"]"
        headers = sign(body)
    elif case == "malformed":
        body = b"{not json"
        headers = sign(body)
    elif case == "unknown-integration":
        url = "/webhooks/hubspot/00000000-0000-0000-0000-000000000000"
    elif case == "wrong-provider":
        url = f"/webhooks/salesforce/{ids['a']}"
    elif case == "no-webhook-secret":
        url = f"/webhooks/salesforce/{ids['sf']}"
    before = await _stored(rt_engine)
    response = await c.post(url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert SECRET_A not in response.text and SECRET_B not in response.text
    assert await _stored(rt_engine) == before == (0, 0)


async def test_readyz_reflects_store_and_bus(tmp_path: Path) -> None:
    db = tmp_path / "ready.db"
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db}", data_dir=tmp_path, jwt_secret="j" * 40
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ready = await c.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "store": "ok",
                "bus": "ok",
            }
            assert (await c.get("/healthz")).status_code == 200
            # The database goes away: the engine now points at an unreachable server.
            from castiel_sync.store.base import create_engine

            app.state.ctx.engine = create_engine(
                "postgresql+asyncpg://nobody@127.0.0.1:1/none", connect_args={"timeout": 2}
            )
            down = await c.get("/readyz")
            assert down.status_code == 503
            assert "database" in down.json()["detail"]
            await app.state.ctx.engine.dispose()
