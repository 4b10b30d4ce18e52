"""A third-party adapter for the invented "Demo Items" API, built only on the public
``castiel_sync.sdk``: next-URL pagination, read-only, base64 HMAC webhook signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from castiel_sync.sdk import (
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NextUrlPaginator,
    WebhookEvent,
    WebhookRequest,
)

__all__ = ["DemoAdapter", "signature"]


def signature(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class DemoAdapter(HttpAdapter):
    provider_id = "thirdparty_demo"
    default_base_url = "https://demo-items.example"
    test_connection_path = "/v2/ping"

    def auth_headers(self, credentials: Any) -> dict[str, str]:
        # This API takes its token in its own header.
        token = credentials.access_token.get_secret_value() if credentials.access_token else ""
        return {"X-Demo-Token": token}

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        params: dict[str, Any] = {"page_size": min(options.limit, 50)}
        if options.since is not None:
            params["modified_after"] = options.since.isoformat()
        if options.include_deleted:
            params["show_deleted"] = "1"
        paginator = NextUrlPaginator("links.next", start=options.cursor)
        response, next_url = await self.fetch_page(f"/v2/{entity}", paginator, params=params)
        records = [
            ExternalRecord(
                external_id=item["key"],
                data=item.get("fields", {}),
                modified_at=datetime.fromisoformat(item["modified"]),
                deleted=item.get("removed", False),
            )
            for item in response.json()["items"]
        ]
        stamps = [r.modified_at for r in records if r.modified_at]
        return FetchResult(
            records=records,
            next_cursor=next_url,
            has_more=next_url is not None,
            high_water_mark=max(stamps, default=options.since),
        )

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        given = request.headers.get("X-Demo-Signature", "")
        return hmac.compare_digest(given, signature(request.body, secret))

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        payload = json.loads(request.body)
        return [
            WebhookEvent(entity=payload["collection"], external_id=key, action="changed")
            for key in payload["keys"]
        ]
