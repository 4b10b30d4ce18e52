"""A consumer process for test_bus_crash.py (not a test module).

usage: bus_crash_worker.py <hold|process> <db_url> <amqp_url or -> <namespace> <effects.db> <n>
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from castiel_sync.bus import QUEUE_SCHEDULED
from castiel_sync.bus.base import Bus
from castiel_sync.store.base import create_engine


async def main(mode: str, db_url: str, amqp: str, ns: str, effects: str, n: int) -> None:
    engine = create_engine(db_url)
    bus: Bus
    if amqp != "-":
        from castiel_sync.bus.rabbitmq import RabbitBus

        bus = RabbitBus(amqp, engine, namespace=ns)
    else:
        from castiel_sync.bus.sql import SqlBus

        bus = SqlBus(engine, poll_interval=0.05)
    await bus.start()
    if mode == "hold":
        leases = await bus.receive(
            [QUEUE_SCHEDULED], lease_seconds=2, max_messages=4, wait_seconds=10
        )
        print("HOLDING", " ".join(x.message.id for x in leases), flush=True)
        await asyncio.sleep(3600)  # until SIGKILL
        return
    db = sqlite3.connect(effects)
    db.execute("CREATE TABLE IF NOT EXISTS effects (message_id TEXT PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS deliveries (message_id TEXT, delivery_count INT)")
    done = 0
    while done < n:
        for lease in await bus.receive(
            [QUEUE_SCHEDULED], lease_seconds=30, max_messages=10, wait_seconds=1
        ):
            m = lease.message
            # The handler's effect is idempotent: recorded once per message id.
            db.execute("INSERT OR IGNORE INTO effects VALUES (?)", (m.id,))
            db.execute("INSERT INTO deliveries VALUES (?, ?)", (m.id, m.delivery_count))
            db.commit()
            await bus.ack(lease)
        done = db.execute("SELECT count(*) FROM effects").fetchone()[0]
    print("DONE", done, flush=True)
    await bus.close()
    await engine.dispose()


if __name__ == "__main__":
    mode, db_url, amqp, ns, effects, n = sys.argv[1:7]
    asyncio.run(main(mode, db_url, amqp, ns, effects, int(n)))
