"""Prometheus series of the runtime (one registry per process, served at ``/metrics``).

- ``castiel_queue_depth{queue}``: messages in the queue (ready, delayed and leased);
- ``castiel_queue_oldest_message_age_seconds{queue}``;
- ``castiel_message_processing_seconds{queue,event_type,outcome}`` (histogram);
- ``castiel_message_deliveries_total{queue,outcome}``: every delivery a worker handled,
  by outcome (``ack``, ``retry``, ``dead_letter``, ``deferred``, ``returned``);
- ``castiel_dead_letters_total{queue}``: messages a worker dead-lettered, by their queue
  (the ``sync-deadletter`` depth is the number waiting now).

Queue depth and age are read from the bus when ``/metrics`` is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from castiel_sync.bus import ALL_QUEUES, Bus

REGISTRY = CollectorRegistry()

QUEUE_DEPTH = Gauge("castiel_queue_depth", "Messages in the queue.", ["queue"], registry=REGISTRY)
QUEUE_OLDEST_AGE = Gauge(
    "castiel_queue_oldest_message_age_seconds",
    "Age of the oldest message in the queue.",
    ["queue"],
    registry=REGISTRY,
)
PROCESSING_SECONDS = Histogram(
    "castiel_message_processing_seconds",
    "Time a handler took for one message.",
    ["queue", "event_type", "outcome"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DELIVERIES = Counter(
    "castiel_message_deliveries",
    "Deliveries handled by workers, by outcome.",
    ["queue", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "castiel_dead_letters",
    "Messages dead-lettered by workers, by the queue they failed on.",
    ["queue"],
    registry=REGISTRY,
)


async def refresh_queue_gauges(bus: Bus) -> None:
    for queue in ALL_QUEUES:
        QUEUE_DEPTH.labels(queue).set(await bus.depth(queue))
        QUEUE_OLDEST_AGE.labels(queue).set(await bus.oldest_age(queue))


def render() -> bytes:
    return generate_latest(REGISTRY)
