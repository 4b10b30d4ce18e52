"""Handlers for the worker-process tests (not a test module): ``registry()`` is given to
``castiel-sync worker --handlers runtime_crash_handlers:registry``.

CASTIEL_TEST_EFFECTS: a SQLite file where the handler records its effect, idempotently
(one row per event id) and every delivery. CASTIEL_TEST_MODE=hold: the handler announces
the message in CASTIEL_TEST_EFFECTS + ".holding" and never returns (until SIGKILL).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3

from castiel_sync.domain.events import WEBHOOK_RECEIVED, CloudEvent
from castiel_sync.runtime.workers import Delivery, HandlerRegistry


async def _handle(event: CloudEvent, delivery: Delivery) -> None:
    path = os.environ["CASTIEL_TEST_EFFECTS"]
    if os.environ.get("CASTIEL_TEST_MODE") == "hold":
        with open(path + ".holding", "a") as f:  # noqa: ASYNC230 - a tiny local file
            f.write(delivery.message_id + "\n")
        await asyncio.sleep(3600)
    db = sqlite3.connect(path, timeout=30)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE IF NOT EXISTS deliveries (event_id TEXT, n INT)")
        db.execute("INSERT OR IGNORE INTO effects VALUES (?)", (event.id,))
        db.execute("INSERT INTO deliveries VALUES (?, ?)", (event.id, delivery.delivery_count))
        db.commit()
    finally:
        db.close()
    await asyncio.sleep(0.05)


def registry() -> HandlerRegistry:
    return HandlerRegistry({WEBHOOK_RECEIVED: _handle})
