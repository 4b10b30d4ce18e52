"""RabbitBus consumes again after its connection is lost (the broker closed it), and the
deliveries of the lost channel are neither handed out nor acked twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from castiel_sync.bus import QUEUE_WEBHOOK
from castiel_sync.bus.rabbitmq import RabbitBus

pytestmark = pytest.mark.rabbitmq
TENANT = "tenant-a"


RABBITMQCTL = shutil.which("rabbitmqctl")


def rabbitmqctl(*args: str) -> str:
    assert RABBITMQCTL is not None
    done = subprocess.run(  # noqa: S603 - the broker's own CLI, fixed arguments
        [RABBITMQCTL, *args], capture_output=True, text=True, timeout=60
    )
    done.check_returncode()
    return done.stdout


def close_connection_named(name: str) -> None:
    """Close, on the broker, the connection whose client named itself ``name``."""
    listing = rabbitmqctl(
        "list_connections", "--quiet", "--no-table-headers", "pid", "client_properties"
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{name}"}}' in line
    ]
    assert len(pids) == 1, listing
    rabbitmqctl("close_connection", pids[0], "test: connection lost")


@pytest.fixture
def bus(rabbit_bus: RabbitBus) -> RabbitBus:
    if RABBITMQCTL is None:
        reason = "needs rabbitmqctl on this machine to close the bus's connection"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the RabbitMQ reconnect test: {reason}")
        pytest.skip(reason)
    return rabbit_bus


async def test_consuming_resumes_after_the_connection_is_lost(bus: RabbitBus) -> None:
    first = await bus.send(QUEUE_WEBHOOK, {"n": 1}, tenant_id=TENANT)
    second = await bus.send(QUEUE_WEBHOOK, {"n": 2}, tenant_id=TENANT)
    [held] = await bus.receive([QUEUE_WEBHOOK], lease_seconds=60, wait_seconds=5)
    await asyncio.sleep(0.3)  # the other one is buffered here by now (prefetch)

    close_connection_named(f"castiel-sync bus {bus.ns}")
    async with asyncio.timeout(30):  # aio-pika reconnects (every 5 s by default)
        while True:
            try:
                await bus.depth(QUEUE_WEBHOOK)  # opens a channel: works once reconnected
                break
            except Exception:
                await asyncio.sleep(0.5)
    third = await bus.send(QUEUE_WEBHOOK, {"n": 3}, tenant_id=TENANT)

    assert not await bus.ack(held)  # its channel is gone: the broker has it back
    received: list[str] = []
    async with asyncio.timeout(30):
        while len(received) < 3:
            for lease in await bus.receive(
                [QUEUE_WEBHOOK], lease_seconds=60, max_messages=10, wait_seconds=1
            ):
                received.append(lease.message.id)
                assert await bus.ack(lease)
    assert sorted(received) == sorted([first, second, third])  # each exactly once
    assert await bus.receive([QUEUE_WEBHOOK], lease_seconds=60, wait_seconds=1) == []
