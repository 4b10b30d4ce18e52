"""A sync worker process for the SIGKILL test: imports TOTAL records in pages of PAGE
(one page per job) from an in-process Example CRM emulator, job after job, until done.

Usage: python sync_crash_worker.py <sqlite file> <integration id>
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

TOTAL = 400
PAGE = 20


async def main(db: Path, integration_id: str) -> None:
    from sync_support import Clock, Harness, TenantSettingsRepository

    from castiel_sync.store import Store
    from castiel_sync.store.base import create_engine
    from castiel_sync.testing.example import ExampleCrmEmulator

    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    h = Harness(Store(engine), ExampleCrmEmulator(), Clock())
    h.integration_id = integration_id
    h.seed(TOTAL)
    async with h.store.transaction() as session:
        await TenantSettingsRepository(session, h.scope).set_limits(max_records_per_sync=PAGE)
    print("ready", flush=True)
    from castiel_sync.store.base import utcnow
    from castiel_sync.sync import InboundSync, StaticCredentialProvider

    sync = InboundSync(
        h.store, StaticCredentialProvider(h.emulator.credentials), adapter_factory=h.adapter,
        clock=utcnow,
    )  # fmt: skip
    outcomes = await sync.run_to_completion(h.job())
    print("done" if outcomes[-1].status == "completed" else outcomes[-1].status, flush=True)
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
