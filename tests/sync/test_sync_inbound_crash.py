"""Crash safety: a kill at any commit boundary (before or after the commit), then a
restart, ends with every record exactly once and the checkpoint never past committed
data. In-process injection at every boundary here; a real SIGKILLed subprocess below."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sync_support import ENTITY, Harness, make_harness

from castiel_sync.domain.events import SHARD_CREATED
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.sync import EntityCheckpoint

RECORDS = 60
LIMIT = 10  # six pages, one per job


class Killed(BaseException):
    """The process died: nothing after this point runs."""


class CrashingStore(Store):
    """Dies at the ``at``-th transaction boundary, before or after its commit."""

    def __init__(self, engine: AsyncEngine, at: int, after_commit: bool) -> None:
        super().__init__(engine)
        self.at, self.after_commit, self.seen, self.dead = at, after_commit, 0, False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        if self.dead:
            raise Killed
        self.seen += 1
        crash_here = self.seen == self.at
        async with self.sessions() as session:
            async with session.begin():
                yield session
                if crash_here and not self.after_commit:
                    self.dead = True
                    raise Killed
            if crash_here:
                self.dead = True
                raise Killed


async def assert_consistent(h: Harness) -> None:
    """The checkpoint covers exactly the committed records, in the provider's order."""
    shards = await h.shards()
    rels = await h.relationships()
    async with h.store.transaction() as session:
        cursors = (
            await session.execute(
                select(IntegrationRow.cursors).where(IntegrationRow.id == h.integration_id)
            )
        ).scalar_one()
    checkpoint = EntityCheckpoint.load(cursors, ENTITY)
    committed = checkpoint.run.records if checkpoint.run else (RECORDS if shards else 0)
    assert len(shards) == len(rels) == committed
    assert [r.external_id for r in rels] == [f"c{n:05d}" for n in range(committed)]


async def complete(h: Harness) -> None:
    await h.engine().run_to_completion(h.job())
    shards = await h.shards()
    rels = await h.relationships()
    assert len(shards) == RECORDS
    assert [r.external_id for r in rels] == [f"c{n:05d}" for n in range(RECORDS)]
    assert {s.version for s in shards} == {1}
    created = [r.event["id"] for r in await h.outbox(SHARD_CREATED)]
    assert len(created) == len(set(created)) == RECORDS
    integration = await h.integration()
    assert EntityCheckpoint.load(integration.cursors, ENTITY).run is None


async def clean_run_boundaries(engine: AsyncEngine) -> int:
    h = await make_harness(engine, tenant="counting")
    h.seed(RECORDS)
    await h.set_limit(LIMIT)
    store = CrashingStore(engine, at=-1, after_commit=False)
    h.store = store
    await h.engine().run_to_completion(h.job())
    return store.seen


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
async def test_a_kill_at_every_commit_boundary_resumes_exactly(
    engine: AsyncEngine, after_commit: bool
) -> None:
    boundaries = await clean_run_boundaries(engine)
    assert boundaries >= 3 * (RECORDS // LIMIT)
    for at in range(1, boundaries + 1):
        h = await make_harness(engine, tenant=f"t{at}-{int(after_commit)}")
        h.seed(RECORDS)
        await h.set_limit(LIMIT)
        real = h.store
        h.store = CrashingStore(engine, at=at, after_commit=after_commit)
        with pytest.raises(Killed):
            await h.engine().run_to_completion(h.job())
        h.store = real
        await assert_consistent(h)
        await complete(h)


WORKER = Path(__file__).with_name("sync_crash_worker.py")


def _start(db: Path, integration_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return subprocess.Popen(  # noqa: S603 - our own worker script, fixed arguments
        [sys.executable, str(WORKER), str(db), integration_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def _harness_on_file(db: Path) -> tuple[Harness, AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    await create_all(engine)
    h = await make_harness(engine)
    return h, engine


@pytest.mark.parametrize("seed", [7, 11])
async def test_a_sigkilled_worker_restarted_ends_with_every_record_once(
    tmp_path: Path, seed: int
) -> None:
    """A real process, SIGKILLed at random moments of a 20-page sync and restarted."""
    from sync_crash_worker import PAGE, TOTAL

    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    h, engine = await _harness_on_file(db)
    try:
        kills = 0
        for _attempt in range(40):
            worker = _start(db, h.integration_id)
            # Wait for the worker to get going, then kill it at a random moment.
            deadline = time.monotonic() + 60
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", worker.stderr.read() if worker.stderr else line
            if kills < 3:
                await asyncio.sleep(rng.uniform(0.0, 0.4))
                if worker.poll() is None:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait()
                    kills += 1
                    await assert_worker_consistent(h, TOTAL)
                    continue
            out, err = worker.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert worker.returncode == 0, err
            if "done" in out:
                break
        shards = await h.shards()
        rels = await h.relationships()
        assert len(shards) == len(rels) == TOTAL
        assert len({r.external_id for r in rels}) == TOTAL
        assert {s.version for s in shards} == {1}
        created = [r.event["id"] for r in await h.outbox(SHARD_CREATED)]
        assert len(created) == len(set(created)) == TOTAL
        assert TOTAL // PAGE == 20
    finally:
        await engine.dispose()


async def assert_worker_consistent(h: Harness, total: int) -> None:
    shards = await h.shards()
    rels = await h.relationships()
    integration = await h.integration()
    checkpoint = EntityCheckpoint.load(integration.cursors, ENTITY)
    if checkpoint.last_run_id is not None:  # an earlier worker finished the import
        assert len(shards) == len(rels) == total
        return
    committed: Any = checkpoint.run.records if checkpoint.run else 0
    assert len(shards) == len(rels) == committed
    assert [r.external_id for r in rels] == [f"c{n:05d}" for n in range(committed)]
