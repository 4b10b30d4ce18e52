"""``GET /metrics``: the runtime's Prometheus series (queue depth and age are read from
the bus at scrape time)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from castiel_sync.api.routes.dead_letters import app_bus
from castiel_sync.runtime.metrics import refresh_queue_gauges, render

log = logging.getLogger("castiel_sync.api")

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    try:
        await refresh_queue_gauges(await app_bus(request))
    except Exception:  # an unreachable bus must not hide the other series
        log.warning("queue gauges not refreshed: the bus is unreachable")
    return Response(render(), media_type=CONTENT_TYPE_LATEST)
