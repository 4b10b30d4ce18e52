"""The emulator kit: record store, faults, token checks, request log, webhook delivery."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.sdk import WebhookRequest, parse_retry_after
from castiel_sync.testing import FakeClock, OAuthEmulator, ProviderEmulator


class Tiny(ProviderEmulator):
    name = "tiny"
    public_paths = ("/health",)

    def routes(self) -> list[BaseRoute]:
        async def items(request: Request) -> Response:
            rows = [{"id": r.id, **r.data} for r in self.store["items"]]
            return JSONResponse({"items": rows})

        async def health(request: Request) -> Response:
            return JSONResponse({"ok": True})

        return [Route("/items", items), Route("/health", health)]

    def error_response(self, status: int, code: str, message: str) -> Response:
        return JSONResponse([{"errorCode": code.upper(), "message": message}], status_code=status)

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        return {"X-Sig": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


@pytest.fixture
async def emu() -> Tiny:
    return Tiny()


async def get(emu: Tiny, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with emu.client() as client:
        return await client.get(path, headers=headers)


async def test_store_and_auth(emu: Tiny) -> None:
    emu.store["items"].create({"name": "a"})
    token = emu.issue_token()
    response = await get(emu, "/items", token)
    assert response.status_code == 200
    assert [r["name"] for r in response.json()["items"]] == ["a"]
    denied = await get(emu, "/items", "bogus")
    assert denied.status_code == 401
    assert denied.json()[0]["errorCode"] == "INVALID_TOKEN"  # the subclass's format
    assert (await get(emu, "/health")).status_code == 200
    assert emu.statuses() == [200, 401, 200]
    assert emu.requests[0].headers["authorization"] == f"Bearer {token}"


async def test_token_lifetime_follows_the_clock(emu: Tiny) -> None:
    token = emu.issue_token(lifetime=10)
    assert (await get(emu, "/items", token)).status_code == 200
    emu.clock.advance(11)
    assert (await get(emu, "/items", token)).status_code == 401


async def test_entity_store_soft_deletes_and_orders(emu: Tiny) -> None:
    items = emu.store["items"]
    a = items.create({"n": 1})
    emu.clock.advance(1)
    b = items.create({"n": 2})
    emu.clock.advance(1)
    items.update(a.id, {"n": 3})
    assert [r.id for r in items.all()] == [b.id, a.id]
    mark = emu.clock.advance(1)  # "since" is inclusive: a's update is before the mark
    items.delete(b.id)
    assert len(items) == 1
    assert items.get(b.id) is None
    assert [(r.id, r.deleted) for r in items.all(include_deleted=True, since=mark)] == [
        (b.id, True)
    ]


async def test_rate_limit_fault_seconds_and_http_date(emu: Tiny) -> None:
    token = emu.issue_token()
    emu.faults.rate_limit(times=2, retry_after=1.5)
    emu.faults.rate_limit(retry_after=emu.clock.now() + timedelta(seconds=20), status=503)
    first, second, third, fourth = [await get(emu, "/items", token) for _ in range(4)]
    assert (first.status_code, first.headers["retry-after"]) == (429, "1.5")
    assert second.status_code == 429
    assert third.status_code == 503
    assert parse_retry_after(third.headers["retry-after"], emu.clock.now()) == 20.0
    assert fourth.status_code == 200
    assert [r.fault for r in emu.requests] == ["rate_limit"] * 3 + [None]


async def test_server_error_slow_and_disconnect(emu: Tiny) -> None:
    token = emu.issue_token()
    emu.faults.server_error(status=502)
    assert (await get(emu, "/items", token)).status_code == 502
    emu.faults.slow(seconds=12)
    before = emu.clock.now()
    assert (await get(emu, "/items", token)).status_code == 200
    assert emu.clock.now() - before == timedelta(seconds=12)
    emu.faults.disconnect()
    with pytest.raises(httpx.ReadError):
        await get(emu, "/items", token)
    assert (await get(emu, "/items", token)).status_code == 200


async def test_faults_scoped_to_a_path(emu: Tiny) -> None:
    token = emu.issue_token()
    emu.faults.server_error(path_prefix="/items")
    assert (await get(emu, "/health")).status_code == 200
    assert (await get(emu, "/items", token)).status_code == 500


async def test_expire_tokens_after_n_requests(emu: Tiny) -> None:
    token = emu.issue_token()
    emu.faults.expire_tokens(after=1)
    assert (await get(emu, "/items", token)).status_code == 200
    assert (await get(emu, "/items", token)).status_code == 401
    assert (await get(emu, "/items", token)).status_code == 401
    assert (await get(emu, "/items", emu.issue_token())).status_code == 200


async def test_tokens_from_an_attached_oauth_server() -> None:
    clock = FakeClock()
    oauth = OAuthEmulator(clock=clock, access_token_lifetime=30)
    emu = Tiny(oauth=oauth)
    assert emu.clock is clock
    token = oauth.mint_access_token()
    assert (await get(emu, "/items", token)).status_code == 200
    clock.advance(31)
    assert (await get(emu, "/items", token)).status_code == 401
    assert (await get(emu, "/items", emu.issue_token())).status_code == 200


async def test_send_webhook_delivers_exact_signed_bytes(emu: Tiny) -> None:
    received: list[WebhookRequest] = []

    async def receiver(request: Request) -> Response:
        received.append(
            WebhookRequest(
                method=request.method,
                url=str(request.url),
                headers=dict(request.headers),
                body=await request.body(),
            )
        )
        return Response(status_code=202)

    from starlette.applications import Starlette

    app = Starlette(routes=[Route("/webhooks/in", receiver, methods=["POST"])])
    response = await emu.send_webhook(
        app, {"id": "1", "name": "é"}, url="https://castiel.example/webhooks/in", secret="s3"
    )
    assert response.status_code == 202
    (got,) = received
    expected = hmac.new(b"s3", got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-sig"] == expected
    assert got.body == '{"id":"1","name":"é"}'.encode()
    assert got.url == "https://castiel.example/webhooks/in"
