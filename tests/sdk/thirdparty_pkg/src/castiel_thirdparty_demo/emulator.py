"""The Demo Items API emulated with ``castiel_sync.testing``: how a third party tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.testing import ProviderEmulator, StoredRecord
from castiel_thirdparty_demo import signature


class DemoEmulator(ProviderEmulator):
    name = "demo_items"

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/ping", self._ping),
            Route("/v2/{collection}", self._list),
        ]

    def authenticate(self, request: Request) -> bool:
        return self.token_is_valid(request.headers.get("x-demo-token", ""))

    def error_response(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"fault": {"type": code, "text": message}}, status_code=status)

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        return {"X-Demo-Signature": signature(body, secret)}

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any:
        return {"collection": entity, "keys": [record.id]}

    async def _ping(self, request: Request) -> Response:
        return JSONResponse({"pong": True})

    async def _list(self, request: Request) -> Response:
        q = request.query_params
        size = int(q.get("page_size", "20"))
        since = datetime.fromisoformat(q["modified_after"]) if "modified_after" in q else None
        rows = self.store[request.path_params["collection"]].all(
            include_deleted=q.get("show_deleted") == "1", since=since
        )
        offset = int(q.get("page_token", "0"))
        page = rows[offset : offset + size]
        links: dict[str, str] = {}
        if offset + size < len(rows):
            nxt = request.url.include_query_params(page_token=str(offset + size))
            links["next"] = str(nxt)
        items = [
            {
                "key": r.id,
                "modified": r.modified_at.isoformat(),
                "removed": r.deleted,
                "fields": {} if r.deleted else r.data,
            }
            for r in page
        ]
        return JSONResponse({"items": items, "links": links})
