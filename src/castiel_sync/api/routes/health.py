"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from castiel_sync.api.deps import ContextDep
from castiel_sync.api.problems import PROBLEM_JSON, problem_body

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The service can take work (store reachable)",
    responses={503: {"description": "A dependency is down", "content": {PROBLEM_JSON: {}}}},
)
async def readyz(ctx: ContextDep, request: Request) -> Any:
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # any failure to reach the store means not ready
        body = problem_body(
            status=503,
            title="Service unavailable",
            slug="not-ready",
            detail="the database cannot be reached; check CASTIEL_DATABASE_URL",
            instance="/readyz",
        )
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    # The bus (runtime): reachable when it answers a depth query in time.
    from castiel_sync.api.routes.dead_letters import app_bus
    from castiel_sync.bus import QUEUE_WEBHOOK

    try:
        await asyncio.wait_for((await app_bus(request)).depth(QUEUE_WEBHOOK), 5)
    except Exception:  # any failure to reach the bus means not ready
        body = problem_body(
            status=503,
            title="Service unavailable",
            slug="not-ready",
            detail="the message bus cannot be reached; check CASTIEL_BUS_URL",
            instance="/readyz",
        )
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
    return {"status": "ready", "checks": {"store": "ok", "bus": "ok"}}
