"""Worker processes: SIGKILL while holding a message loses nothing and the effect happens
once; SIGTERM drains and exits cleanly. On each bus: the embedded SQL bus and RabbitMQ (in
a namespace of its own on the shared broker, deleted after)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import QUEUE_WEBHOOK, Router, open_bus
from castiel_sync.bus.base import Bus
from castiel_sync.domain.events import webhook_received
from castiel_sync.settings import Settings
from castiel_sync.store import migrate
from castiel_sync.store.base import create_engine

HERE = Path(__file__).parent
#: The console script, as an operator runs it.
CASTIEL_SYNC = str(Path(sys.executable).with_name("castiel-sync"))
N = 6


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def bus_url(request: pytest.FixtureRequest) -> str:
    """CASTIEL_BUS_URL: ``embedded``, or the real RabbitMQ (fails in CI when it is down)."""
    if request.param == "rabbitmq":
        url: str = request.getfixturevalue("amqp_url")
        return url
    return "embedded"


def _open_bus(bus_url: str, namespace: str, engine: AsyncEngine) -> Bus:
    """The bus the worker processes open, through the same settings."""
    return open_bus(Settings(bus_url=bus_url, bus_namespace=namespace), engine)


StartWorker = Callable[[dict[str, str], str], Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start_worker() -> AsyncIterator[StartWorker]:
    """``start_worker(env, mode)`` starts a ``castiel-sync worker`` process on the webhook
    queue (with runtime_crash_handlers' ``mode``); any still running at
    the end (a failed test) is killed, so none outlives its test on the shared broker."""
    started: list[asyncio.subprocess.Process] = []

    async def start(env: dict[str, str], mode: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            CASTIEL_SYNC,
            "worker",
            "--queues",
            QUEUE_WEBHOOK,
            "--handlers",
            "runtime_crash_handlers:registry",
            "--concurrency",
            "1" if mode == "hold" else "4",
            "--lease-seconds",
            "2",
            "--drain-timeout",
            "10",
            env={**env, "CASTIEL_TEST_MODE": mode},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()


async def _until(predicate, limit: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_sigkilled_worker_process_loses_nothing_and_effects_happen_once(
    tmp_path: Path, bus_url: str, start_worker: StartWorker
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'castiel.db'}"
    await migrate.upgrade(db_url)
    effects = tmp_path / "effects.db"
    namespace = f"rt-crash-{secrets.token_hex(4)}."
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "CASTIEL_DATABASE_URL": db_url,
        "CASTIEL_DATA_DIR": str(tmp_path / "data"),
        "CASTIEL_BUS_URL": bus_url,
        "CASTIEL_BUS_NAMESPACE": namespace,
        "CASTIEL_TEST_EFFECTS": str(effects),
        "CASTIEL_MASTER_KEY": "",
    }
    env.pop("CASTIEL_MASTER_KEY")
    engine = create_engine(db_url)
    bus = _open_bus(bus_url, namespace, engine)
    await bus.start()
    try:
        router = Router(bus)
        sent = set()
        for n in range(N):
            event = webhook_received(
                tenant_id="ta", integration_id="i1", provider="salesforce", delivery_id=f"d{n}"
            )
            sent.add(await router.dispatch(event.type, event.to_dict()))

        holder = await start_worker(env, "hold")
        holding = Path(str(effects) + ".holding")
        await _until(holding.exists)
        held = holding.read_text().split()  # noqa: ASYNC240 - a tiny local file
        assert len(held) == 1 and held[0] in sent
        holder.send_signal(signal.SIGKILL)
        await holder.wait()

        worker = await start_worker(env, "process")

        def effects_count() -> int:
            if not effects.exists():
                return 0
            db = sqlite3.connect(effects, timeout=30)
            try:
                return int(db.execute("SELECT count(*) FROM effects").fetchone()[0])
            except sqlite3.OperationalError:
                return 0
            finally:
                db.close()

        await _until(lambda: effects_count() == N)
        worker.send_signal(signal.SIGTERM)  # drains and exits cleanly
        out, _ = await asyncio.wait_for(worker.communicate(), 60)
        assert worker.returncode == 0, out.decode()[-2000:]

        db = sqlite3.connect(effects)
        assert {r[0] for r in db.execute("SELECT event_id FROM effects")} == sent
        deliveries = dict(db.execute("SELECT event_id, max(n) FROM deliveries GROUP BY event_id"))
        # It came back after the dead worker (its lease expired / its connection closed).
        assert deliveries[held[0]] >= 2
        assert await bus.depth(QUEUE_WEBHOOK) == 0
    finally:
        delete_topology = getattr(bus, "delete_topology", None)
        if delete_topology is not None:
            await delete_topology()
        await bus.close()
        await engine.dispose()
