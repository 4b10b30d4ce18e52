"""Verified webhook deliveries, persisted raw by the receiver before they are enqueued.

A delivery is ``received`` until the worker that applies it marks it ``processed`` in
the transaction of the apply: :meth:`WebhookDeliveryRepository.mark_processed` is an
``UPDATE ... WHERE status = 'received'``, so of two workers holding the same delivery
(a redelivery after a crash, a duplicate message) exactly one applies it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import WebhookDeliveryRow

RECEIVED = "received"
PROCESSED = "processed"


class WebhookDeliveryRepository(ScopedRepository[WebhookDeliveryRow]):
    model = WebhookDeliveryRow
    object_type = "webhook delivery"

    async def add(
        self, *, integration_id: str, headers: dict[str, Any], body: bytes
    ) -> WebhookDeliveryRow:
        """Store one delivery of this tenant (``received``); ``headers`` must already be
        stripped of credentials and secrets."""
        row = WebhookDeliveryRow(
            integration_id=integration_id,
            headers=headers,
            body=body,
            body_sha256=hashlib.sha256(body).hexdigest(),
            status=RECEIVED,
        )
        return await self._add(row, conflict="that webhook delivery is already stored")

    async def get(self, delivery_id: str) -> WebhookDeliveryRow:
        """The delivery (NotFoundError when missing or another tenant's)."""
        row: WebhookDeliveryRow = await self._one(
            self._select().where(WebhookDeliveryRow.id == delivery_id), delivery_id
        )
        return row

    async def mark_processed(self, delivery_id: str) -> bool:
        """Claim the delivery for its one apply: True if this call moved it from
        ``received`` to ``processed``; False if it was already processed (or is gone).
        Call it in the transaction that applies the delivery, so the claim commits, or
        rolls back, with the apply."""
        result = await self._execute(
            self._update()
            .where(WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.status == RECEIVED)
            .values(status=PROCESSED)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]


__all__ = ["PROCESSED", "RECEIVED", "WebhookDeliveryRepository"]
