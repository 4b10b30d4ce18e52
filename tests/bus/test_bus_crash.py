"""A worker SIGKILLed while it holds messages: nothing lost, each effect once."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from castiel_sync.bus import QUEUE_SCHEDULED
from castiel_sync.bus.base import Bus
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all

WORKER = Path(__file__).with_name("bus_crash_worker.py")
N = 8


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def amqp(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("amqp_url") if request.param == "rabbitmq" else "-"


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent)}
    return await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), *args, stdout=asyncio.subprocess.PIPE, env=env
    )


async def test_sigkilled_worker_loses_nothing(amqp: str, tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
    effects = str(tmp_path / "effects.db")
    ns = f"crash-{secrets.token_hex(4)}."
    engine = create_engine(db_url)
    await create_all(engine)
    bus: Bus
    if amqp != "-":
        from castiel_sync.bus.rabbitmq import RabbitBus

        bus = RabbitBus(amqp, engine, namespace=ns)
    else:
        from castiel_sync.bus.sql import SqlBus

        bus = SqlBus(engine)
    await bus.start()
    try:
        sent = {await bus.send(QUEUE_SCHEDULED, {"i": i}, tenant_id="t") for i in range(N)}

        holder = await _spawn("hold", db_url, amqp, ns, effects, str(N))
        assert holder.stdout is not None
        line = (await asyncio.wait_for(holder.stdout.readline(), 30)).decode().split()
        assert line[0] == "HOLDING"
        held = set(line[1:])
        assert held and held <= sent
        holder.send_signal(signal.SIGKILL)
        await holder.wait()

        worker = await _spawn("process", db_url, amqp, ns, effects, str(N))
        assert worker.stdout is not None
        out = (await asyncio.wait_for(worker.stdout.read(), 60)).decode()
        assert await worker.wait() == 0, out
        assert out.startswith("DONE")

        db = sqlite3.connect(effects)
        assert {r[0] for r in db.execute("SELECT message_id FROM effects")} == sent
        counts = dict(
            db.execute(
                "SELECT message_id, max(delivery_count) FROM deliveries GROUP BY message_id"
            ).fetchall()
        )
        # The messages the dead worker held came back as second deliveries.
        assert all(counts[mid] >= 2 for mid in held)
        assert await bus.depth(QUEUE_SCHEDULED) == 0
    finally:
        delete_topology = getattr(bus, "delete_topology", None)
        if delete_topology is not None:
            await delete_topology()
        await bus.close()
        await engine.dispose()
