"""A reference adapter and emulator for an invented "Example CRM", proving the kit.

It is not a product integration (nothing registers it in the catalog or the entry-point
group); it shows adapter authors the shape of an adapter built on :class:`HttpAdapter`
and of an emulator built on :class:`ProviderEmulator`.

The Example CRM API:

- ``GET /api/v1/me``: who the token belongs to.
- ``GET /api/v1/{entity}?limit=&cursor=&updated_since=&include_deleted=&where.<field>=``:
  ``{"data": [...], "next_cursor": "..." | null}``, ordered by ``(updated_at, id)``;
  ``limit`` at most 100. Records carry ``id``, ``updated_at`` (ISO 8601) and, with
  ``include_deleted=true``, tombstones ``{"id", "updated_at", "deleted": true}``.
- ``GET/PATCH/DELETE /api/v1/{entity}/{id}``, ``POST /api/v1/{entity}`` (201 with the
  record), errors ``{"error": {"code", "message"}}``, quota headers ``X-RateLimit-*``.
- Webhooks: ``{"event_id", "events": [{"type": "record.updated", "entity", "id",
  "record"}]}`` signed ``X-Example-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
  "<t>." + body>``; deliveries older than five minutes are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.sdk import (
    CursorParamPaginator,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NotFoundError,
    NotSupportedError,
    RateLimit,
    WebhookEvent,
    WebhookRequest,
)
from castiel_sync.testing._kit import ProviderEmulator, StoredRecord

MAX_PAGE = 100
SIGNATURE_HEADER = "X-Example-Signature"
SIGNATURE_TOLERANCE = 300.0
_ACTIONS = {"record.created": "created", "record.updated": "updated", "record.deleted": "deleted"}


def sign(body: bytes, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class ExampleCrmEmulator(ProviderEmulator):
    name = "example_crm"
    quota = 1000

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/me", self._me, methods=["GET"]),
            Route("/api/v1/{entity}", self._list, methods=["GET"]),
            Route("/api/v1/{entity}", self._create, methods=["POST"]),
            Route("/api/v1/{entity}/{id}", self._one, methods=["GET", "PATCH", "DELETE"]),
        ]

    def error_response(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(body, secret, int(self.clock.now().timestamp()))}

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any:
        return {
            "event_id": f"evt_{record.id}_{int(record.modified_at.timestamp())}",
            "events": [
                {
                    "type": f"record.{action}",
                    "entity": entity,
                    "id": record.id,
                    "record": None if record.deleted else self._render(record),
                }
            ],
        }

    # -- endpoints -------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200) -> Response:
        self.quota -= 1
        headers = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": str(max(self.quota, 0))}
        return JSONResponse(body, status_code=status, headers=headers)

    @staticmethod
    def _render(record: StoredRecord) -> dict[str, Any]:
        stamp = record.modified_at.isoformat().replace("+00:00", "Z")
        if record.deleted:
            return {"id": record.id, "updated_at": stamp, "deleted": True}
        return {**record.data, "id": record.id, "updated_at": stamp}

    async def _me(self, request: Request) -> Response:
        return self._json({"user": "emulator", "org": "example"})

    async def _list(self, request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "50"))
            since = datetime.fromisoformat(q["updated_since"]) if "updated_since" in q else None
        except ValueError:
            return self.error_response(400, "invalid_parameter", "limit or updated_since")
        if not 1 <= limit <= MAX_PAGE:
            return self.error_response(400, "invalid_parameter", f"limit is 1..{MAX_PAGE}")
        rows = self.store[request.path_params["entity"]].all(
            include_deleted=q.get("include_deleted") == "true", since=since
        )
        for key, value in q.items():
            if key.startswith("where."):
                field = key.removeprefix("where.")
                rows = [r for r in rows if str(r.data.get(field)) == value]
        if "cursor" in q:
            try:
                stamp, _, last_id = base64.urlsafe_b64decode(q["cursor"]).decode().partition("|")
                after = (datetime.fromisoformat(stamp), last_id)
            except ValueError:
                return self.error_response(400, "invalid_cursor", "the cursor is not valid")
            rows = [r for r in rows if (r.modified_at, r.id) > after]
        page, more = rows[:limit], len(rows) > limit
        next_cursor = None
        if more:
            last = page[-1]
            raw = f"{last.modified_at.isoformat()}|{last.id}".encode()
            next_cursor = base64.urlsafe_b64encode(raw).decode()
        return self._json({"data": [self._render(r) for r in page], "next_cursor": next_cursor})

    async def _create(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "id" in body:
            return self.error_response(422, "invalid_body", "a JSON object without id")
        record = self.store[request.path_params["entity"]].create(body)
        return self._json(self._render(record), 201)

    async def _one(self, request: Request) -> Response:
        entity = self.store[request.path_params["entity"]]
        record = entity.get(request.path_params["id"])
        if record is None:
            return self.error_response(404, "not_found", "no such record")
        if request.method == "DELETE":
            entity.delete(record.id)
            self.quota -= 1
            return Response(status_code=204)
        if request.method == "PATCH":
            changes = await request.json()
            if not isinstance(changes, dict):
                return self.error_response(422, "invalid_body", "a JSON object")
            entity.update(record.id, changes)
        return self._json(self._render(record))


class ExampleCrmAdapter(HttpAdapter):
    """The reference adapter: declarations, one fetch, CRUD and webhook verification."""

    provider_id = "example_crm"
    default_base_url = "https://example-crm.emulator.test"
    test_connection_path = "/api/v1/me"
    default_rate_limit = RateLimit(requests_per_second=50, burst=50)

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        params: dict[str, Any] = {"limit": min(options.limit, MAX_PAGE)}
        if options.since is not None:
            params["updated_since"] = options.since.isoformat()
        if options.include_deleted:
            params["include_deleted"] = "true"
        for condition in options.filters:
            if condition.op != "eq":
                raise NotSupportedError(f"Example CRM filters support only eq, not {condition.op}")
            params[f"where.{condition.field}"] = str(condition.value)
        paginator = CursorParamPaginator("cursor", "next_cursor", start=options.cursor)
        response, next_cursor = await self.fetch_page(f"/api/v1/{entity}", paginator, params=params)
        records = [self._record(row) for row in response.json()["data"]]
        stamps = [r.modified_at for r in records if r.modified_at is not None]
        return FetchResult(
            records=records,
            next_cursor=next_cursor,
            has_more=next_cursor is not None,
            high_water_mark=max(stamps, default=options.since),
        )

    async def fetch_record(self, entity: str, record_id: str) -> ExternalRecord | None:
        try:
            return self._record(await self.request_json("GET", f"/api/v1/{entity}/{record_id}"))
        except NotFoundError:
            return None

    async def find_record(self, entity: str, match: dict[str, Any]) -> ExternalRecord | None:
        params = {"limit": 1, **{f"where.{field}": str(value) for field, value in match.items()}}
        rows = (await self.request_json("GET", f"/api/v1/{entity}", params=params))["data"]
        return self._record(rows[0]) if rows else None

    async def create_record(self, entity: str, data: dict[str, Any]) -> str:
        body = await self.request_json("POST", f"/api/v1/{entity}", json=data)
        return str(body["id"])

    async def update_record(self, entity: str, record_id: str, data: dict[str, Any]) -> None:
        await self.request("PATCH", f"/api/v1/{entity}/{record_id}", json=data)

    async def delete_record(self, entity: str, record_id: str) -> None:
        await self.request("DELETE", f"/api/v1/{entity}/{record_id}")

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        parts = dict(
            item.split("=", 1)
            for item in request.headers.get(SIGNATURE_HEADER, "").split(",")
            if "=" in item
        )
        try:
            timestamp = int(parts["t"])
        except (KeyError, ValueError):
            return False
        if abs(self.clock.now().timestamp() - timestamp) > SIGNATURE_TOLERANCE:
            return False
        expected = sign(request.body, secret, timestamp)
        return hmac.compare_digest(expected, f"t={timestamp},v1={parts.get('v1', '')}")

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        payload = orjson.loads(request.body)
        return [
            WebhookEvent(
                entity=event["entity"],
                external_id=str(event["id"]),
                action=_ACTIONS.get(event.get("type", ""), "changed"),  # type: ignore[arg-type]
                data=event.get("record"),
                event_id=payload.get("event_id"),
            )
            for event in payload.get("events", [])
        ]

    @staticmethod
    def _record(row: dict[str, Any]) -> ExternalRecord:
        data = {k: v for k, v in row.items() if k not in {"id", "updated_at", "deleted"}}
        return ExternalRecord(
            external_id=str(row["id"]),
            data=data,
            modified_at=datetime.fromisoformat(row["updated_at"]),
            deleted=bool(row.get("deleted", False)),
        )
