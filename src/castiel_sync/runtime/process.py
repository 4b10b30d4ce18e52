"""Running the runtime: everything in one process (``serve``) or split (``api``,
``worker``, ``scheduler``), any number of each.

=============  ==================================================================
``serve``      API + outbox relay + scheduler + token refresher + inbound and
               outbound workers, as asyncio tasks (the embedded default)
``api``        the HTTP API only (webhooks in, management, dead letters, health)
``worker``     workers for ``--queues`` (default: inbound and outbound) + outbox relay
``scheduler``  scheduler + token refresher + outbox relay
=============  ==================================================================

The outbox relay runs in every non-API process (PostgreSQL: ``SKIP LOCKED`` keeps relays
apart; SQLite has one writer). SIGTERM or SIGINT sets one stop event: timers stop,
workers receive nothing more and drain (in-flight messages finish or go back), the API
stops accepting and finishes its requests. A SIGKILLed worker's messages come back after
their lease.

Handlers: ``handlers="package.module:factory"`` names a function returning a
:class:`~castiel_sync.runtime.workers.HandlerRegistry` (how the sync engine, or a test,
plugs in); default: :func:`default_registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from castiel_sync.bus import WORK_QUEUES, OutboxRelay, Router, open_bus
from castiel_sync.runtime.workers import (
    INBOUND_QUEUES,
    OUTBOUND_QUEUES,
    HandlerRegistry,
    Worker,
    placeholder_registry,
)
from castiel_sync.settings import Settings

log = structlog.get_logger(__name__)


def default_registry() -> HandlerRegistry:
    """The handlers a worker runs when none are named: the sync engine's when it is wired
    (``castiel_sync.sync.runtime_handlers()``, if that exists), else the placeholders."""
    try:
        module = importlib.import_module("castiel_sync.sync")
        factory = module.runtime_handlers
    except (ImportError, AttributeError):
        return placeholder_registry()
    registry: HandlerRegistry = factory()
    return registry


def _engine_or_placeholders(engine: Any, settings: Settings) -> HandlerRegistry:
    """The sync engine's handlers (:mod:`castiel_sync.runtime.engine`), or the
    placeholders when the engine is not installed."""
    try:
        from castiel_sync.runtime.engine import engine_registry
    except ImportError:
        return placeholder_registry()
    from castiel_sync.catalog import load_catalog
    from castiel_sync.vault import open_vault

    try:
        return engine_registry(engine, open_vault(settings, engine), load_catalog(), settings)
    except ImportError:
        return placeholder_registry()


def load_registry(spec: str | None) -> HandlerRegistry:
    if not spec:
        return default_registry()
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr or "registry")
    registry = factory() if callable(factory) else factory
    if not isinstance(registry, HandlerRegistry):
        raise TypeError(f"{spec} did not give a HandlerRegistry")
    return registry


@dataclass
class Plan:
    api: bool = False
    relay: bool = False
    scheduler: bool = False
    refresher: bool = False
    worker_queues: list[tuple[str, ...]] = field(default_factory=list)
    handlers: str | None = None
    migrate: bool = True
    concurrency: int = 4
    lease_seconds: float = 60.0
    drain_timeout: float = 30.0


def serve_plan() -> Plan:
    return Plan(
        api=True,
        relay=True,
        scheduler=True,
        refresher=True,
        worker_queues=[INBOUND_QUEUES, OUTBOUND_QUEUES],
    )


def worker_plan(queues: Sequence[str] | None = None, **kwargs: Any) -> Plan:
    if queues:
        unknown = set(queues) - set(WORK_QUEUES)
        if unknown:
            raise ValueError(f"unknown queues {sorted(unknown)}; known: {', '.join(WORK_QUEUES)}")
        groups = [tuple(queues)]
    else:
        groups = [INBOUND_QUEUES, OUTBOUND_QUEUES]
    return Plan(relay=True, worker_queues=groups, **kwargs)


def scheduler_plan() -> Plan:
    return Plan(relay=True, scheduler=True, refresher=True)


class _Server:
    """uvicorn without its own signal handling (the runtime owns SIGTERM)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            log_config=None,
        )
        self.server = Server(config)

    async def run(self, stop: asyncio.Event) -> None:
        serving = asyncio.create_task(self.server.serve())
        await stop.wait()
        self.server.should_exit = True
        await serving


async def run(
    settings: Settings,
    plan: Plan,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run ``plan`` until SIGTERM/SIGINT (or ``stop``), then drain and close."""
    from castiel_sync.catalog import load_catalog
    from castiel_sync.runtime.scheduler import SyncScheduler
    from castiel_sync.runtime.token_refresher import TokenRefresher
    from castiel_sync.store.base import create_engine
    from castiel_sync.vault import open_vault

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if plan.migrate:
        from castiel_sync.store import migrate

        await migrate.upgrade(url)
    engine = create_engine(url)
    bus = open_bus(settings, engine)
    await bus.start()
    registry: HandlerRegistry | None = None
    if plan.worker_queues:
        registry = load_registry(plan.handlers) if plan.handlers else None
        if registry is None:
            registry = _engine_or_placeholders(engine, settings)
    tasks: list[asyncio.Task[None]] = []
    try:
        if plan.relay:
            tasks.append(asyncio.create_task(OutboxRelay(engine, Router(bus)).run_forever(stop)))
        if plan.scheduler:
            scheduler = SyncScheduler(engine, settings=settings)
            tasks.append(asyncio.create_task(scheduler.run_forever(stop)))
        if plan.refresher:
            refresher = TokenRefresher(engine, open_vault(settings, engine), load_catalog())
            tasks.append(asyncio.create_task(refresher.run_forever(stop)))
        for queues in plan.worker_queues:
            assert registry is not None
            worker = Worker(
                bus,
                registry,
                engine=engine,
                settings=settings,
                queues=queues,
                concurrency=plan.concurrency,
                lease_seconds=plan.lease_seconds,
                drain_timeout=plan.drain_timeout,
            )
            tasks.append(asyncio.create_task(worker.run(stop)))
        if plan.api:
            from castiel_sync.api.app import create_app

            app = create_app(settings, run_migrations=False)
            app.state.bus = bus
            tasks.append(asyncio.create_task(_Server(app, settings).run(stop)))
        log.info(
            "runtime started",
            api=plan.api,
            relay=plan.relay,
            scheduler=plan.scheduler,
            refresher=plan.refresher,
            workers=[list(q) for q in plan.worker_queues],
        )
        if on_ready is not None:
            on_ready()
        await stop.wait()
        log.info("stopping: draining in-flight work")
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.close()
        await engine.dispose()
        log.info("runtime stopped")
