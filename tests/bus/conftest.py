"""Fixtures of the bus suites."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from castiel_sync.bus.rabbitmq import RabbitBus
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all


@pytest.fixture
async def rabbit_bus(amqp_url: str, tmp_path: Path) -> AsyncIterator[RabbitBus]:
    """A started RabbitBus in a namespace of its own on the shared broker (deleted after),
    its store a fresh SQLite file."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await create_all(engine)
    bus = RabbitBus(amqp_url, engine, namespace=f"test-{secrets.token_hex(4)}.")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.delete_topology()
        await bus.close()
        await engine.dispose()
