"""Bus benchmark: publish -> route -> consume -> ack, on each backend.

    .venv/bin/python bench/bus.py [--backend sqlite|rabbitmq|postgres|all] [--messages 5000]

Prints, per backend: throughput (messages/s, a publisher sending routed CloudEvents in
batches while one consumer leases and acks in batches) and the latency from publish to
handler at a fixed offered rate (default 500 messages/s, one send per message).
Targets on a 2-core machine: >= 2,000 msg/s embedded, >= 3,000 msg/s RabbitMQ, p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
import uuid
from typing import Any

from castiel_sync.bus import QUEUE_WEBHOOK, Bus, Router
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all

EVENT = "Castiel.Integration.WebhookReceived"
AMQP = os.environ.get("CASTIEL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG = os.environ.get("CASTIEL_BENCH_PG_URL", "")


def envelope(i: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/bench",
        "type": EVENT,
        "time": "2024-01-01T00:00:00Z",
        "data": {"tenantId": "bench", "integrationId": f"int-{i % 16}", "t": time.time()},
    }


async def consume(bus: Bus, expected: int, latencies: list[float] | None = None) -> None:
    done = 0
    while done < expected:
        leases = await bus.receive(
            [QUEUE_WEBHOOK], lease_seconds=60, max_messages=200, wait_seconds=1
        )
        now = time.time()
        if latencies is not None:
            for lease in leases:
                body = lease.message.body
                assert isinstance(body, dict)
                latencies.append(now - body["data"]["t"])
        await bus.ack_many(leases)
        done += len(leases)


async def throughput(bus: Bus, n: int, batch: int) -> float:
    router = Router(bus)
    start = time.perf_counter()

    async def produce() -> None:
        for i in range(0, n, batch):
            await bus.send_many(
                [router.outgoing(EVENT, envelope(j)) for j in range(i, min(n, i + batch))]
            )

    await asyncio.gather(produce(), consume(bus, n))
    return n / (time.perf_counter() - start)


async def latency(bus: Bus, rate: float, seconds: float) -> tuple[float, float]:
    router = Router(bus)
    n = int(rate * seconds)
    latencies: list[float] = []

    async def produce() -> None:
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await router.dispatch(EVENT, envelope(i))

    await asyncio.gather(produce(), consume(bus, n, latencies))
    q = statistics.quantiles(latencies, n=100)
    return q[49] * 1000, q[98] * 1000


async def run(backend: str, n: int, batch: int, rate: float, seconds: float) -> None:
    tmp = tempfile.mkdtemp(prefix="castiel-bench-")
    url = PG if backend == "postgres" else f"sqlite+aiosqlite:///{tmp}/bench.db"
    engine = create_engine(url)
    await create_all(engine)
    bus: Bus
    if backend == "rabbitmq":
        from castiel_sync.bus.rabbitmq import RabbitBus

        bus = RabbitBus(AMQP, engine, namespace=f"bench-{secrets.token_hex(3)}.")
    else:
        from castiel_sync.bus.sql import SqlBus

        bus = SqlBus(engine)
    await bus.start()
    try:
        await throughput(bus, 500, batch)  # warm-up
        rps = await throughput(bus, n, batch)
        p50, p99 = await latency(bus, rate, seconds)
        print(
            f"{backend:9s} throughput {rps:8.0f} msg/s (batch {batch})   "
            f"latency at {rate:.0f} msg/s: p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
        )
    finally:
        delete_topology = getattr(bus, "delete_topology", None)
        if delete_topology is not None:
            await delete_topology()
        await bus.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--backend", default="all", choices=["all", "sqlite", "rabbitmq", "postgres"]
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    backends = ["sqlite", "rabbitmq"] if args.backend == "all" else [args.backend]
    for backend in backends:
        asyncio.run(run(backend, args.messages, args.batch, args.rate, args.seconds))


if __name__ == "__main__":
    main()
