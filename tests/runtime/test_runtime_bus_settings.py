"""CASTIEL_BUS_NAMESPACE: the prefix of every RabbitMQ name a process declares and uses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from castiel_sync.bus import open_bus
from castiel_sync.bus.rabbitmq import RabbitBus
from castiel_sync.settings import Settings
from castiel_sync.store.base import create_engine


async def test_open_bus_gives_rabbitmq_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    monkeypatch.setenv("CASTIEL_BUS_NAMESPACE", "staging.")
    bus = open_bus(Settings(bus_url="amqp://guest:guest@127.0.0.1:5672/"), engine)
    assert isinstance(bus, RabbitBus)
    assert bus._phys("sync-inbound-webhook") == "staging.sync-inbound-webhook"
    monkeypatch.delenv("CASTIEL_BUS_NAMESPACE")
    plain = open_bus(Settings(bus_url="amqp://guest:guest@127.0.0.1:5672/"), engine)
    assert isinstance(plain, RabbitBus)
    assert plain._phys("sync-inbound-webhook") == "sync-inbound-webhook"
    await engine.dispose()


@pytest.mark.parametrize("namespace", ["has space.", "slash/", "x" * 65, "amqp://"])
def test_a_namespace_with_other_characters_is_refused(namespace: str) -> None:
    with pytest.raises(ValidationError, match="bus_namespace"):
        Settings(bus_namespace=namespace)
