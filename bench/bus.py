"""Bus benchmark: publish -> route -> consume -> ack, on each backend.

    .venv/bin/python bench/bus.py [--backend sqlite|postgres|rabbitmq|all] [--repeat 3]

Scenarios (every figure is the median of ``--repeat`` runs):

``pipeline`` (the production path, as ``castiel-sync serve`` runs it): producers commit
    WebhookReceived CloudEvents to the transactional outbox (``publish`` in a store
    transaction, ``--txn-events`` per transaction); an :class:`OutboxRelay` moves them
    through the :class:`Router` onto the bus; a worker-style consumer (as
    ``runtime.workers.Worker``: ``receive`` up to its free slots, one task per message
    calling the handler, then ``ack`` of that lease) consumes ``sync-inbound-webhook``.
    Throughput = messages / (first commit -> last ack).
``latency-outbox``: the same path at a fixed offered rate (``--rate``; each event in its
    own outbox transaction, started on schedule whether or not earlier ones finished, as
    webhook requests arrive); latency = handler start - just before the producing
    transaction began. On SQLite this includes the application's ORM commit.
``latency-direct``: the bus alone at the same rate: ``Router.dispatch`` (route + one
    ``send``) per event, the same consumer; latency = handler start - before the send.
``micro-batch``: ``Router.outgoing`` + ``bus.send_many`` in batches of ``--batch``, while a
    consumer leases up to 200 at a time and ``ack_many``s them (no outbox, no handler tasks).
``micro-single``: ``Router.dispatch`` (one ``send`` per message, awaited in turn) with the
    worker-style consumer running at the same time.
``pipeline-2proc``: ``pipeline`` with the consumer in a second process, as a deployment
    with separate ``castiel-sync worker`` processes runs it. This process runs the producers;
    the child runs the real ``runtime.workers.Worker`` (concurrency ``--concurrency``) on
    ``sync-inbound-webhook`` with a handler that only records its latency, with its own
    bus connection to the same store. The :class:`OutboxRelay` runs where ``--relay-in``
    says: ``producers`` (default: as ``serve``, whose process commits and relays, with
    extra worker processes) or ``worker`` (as ``castiel-sync api`` + ``castiel-sync
    worker``: the API process only commits, the worker process relays and consumes).
    300 warm-up events go through the whole path first. Throughput = messages / (first
    commit -> the child's last ack); latency as in ``pipeline``. Also prints the CPU time
    per message of each process. The single-process scenarios share one core between
    everything; this one uses the machine's cores as a deployment with workers would.

``--loop`` is the event loop of every process (pipeline-2proc's worker too), chosen as the
runtime chooses it (``castiel_sync.runtime.event_loop``). The runtime's processes run on
uvloop where it is installed (``CASTIEL_EVENT_LOOP=auto``), and so does the benchmark by
default; ``--loop asyncio`` measures the standard loop (as figures before 2026-11-27 did).

Each backend runs in a fresh store (a temporary SQLite file; ``postgres`` creates and drops
a temporary database on ``CASTIEL_BENCH_PG_ADMIN_URL``), RabbitMQ in a random namespace
whose queues and exchanges are deleted afterwards (its store, for the outbox and the dedup
window, is a temporary SQLite file). Every scenario has a message count and a time bound
(``--timeout``): a scenario that runs out of time is reported as such, with what it did.
Targets on a 2-core machine: >= 2,000 msg/s embedded, >= 3,000 msg/s RabbitMQ,
p99 < 50 ms at 500 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import text

from castiel_sync.bus import QUEUE_WEBHOOK, Bus, Lease, OutboxRelay, Router, publish
from castiel_sync.runtime.event_loop import loop_factory
from castiel_sync.store.base import create_engine, session_factory
from castiel_sync.store.schema import create_all

T = TypeVar("T")
EVENT = "Castiel.Integration.WebhookReceived"
CHILD_SAYS = "castiel-bench: "  # the lines of pipeline-2proc's worker child meant for us
AMQP = os.environ.get("CASTIEL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get(
    "CASTIEL_BENCH_PG_ADMIN_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def envelope(i: int, *, warmup: bool = False) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/bench",
        "type": EVENT,
        "time": "2024-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": {
            "tenantId": "bench",
            "integrationId": f"int-{i % 16}",
            "provider": "hubspot",
            "payload": {"objectId": i, "propertyName": "email", "value": f"u{i}@example.com"},
            "t": time.time(),
        },
    }
    if warmup:
        event["data"]["warmup"] = True  # type: ignore[index]
    return event


@dataclass
class Result:
    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    timed_out: bool = False
    #: CPU seconds per process over the timed part, where a scenario measures them.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, q: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000


class Consumer:
    """A worker-style loop: receive up to the free slots, a task per message, ack each."""

    def __init__(self, bus: Bus, expected: int, concurrency: int, latencies: list[float]):
        self.bus, self.expected, self.concurrency = bus, expected, concurrency
        self.latencies = latencies
        self.done = 0
        self.finished = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()

    async def handler(self, lease: Lease) -> None:
        body = lease.message.body
        assert isinstance(body, dict)
        self.latencies.append(time.time() - body["data"]["t"])

    async def process(self, lease: Lease) -> None:
        await self.handler(lease)
        if await self.bus.ack(lease):
            self.done += 1
            if self.done >= self.expected:
                self.finished.set()

    async def run(self) -> None:
        while not self.finished.is_set():
            free = self.concurrency - len(self.inflight)
            if free <= 0:
                await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            leases = await self.bus.receive(
                [QUEUE_WEBHOOK], lease_seconds=60, max_messages=free, wait_seconds=0.5
            )
            for lease in leases:
                task = asyncio.create_task(self.process(lease))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
        await asyncio.gather(*self.inflight)


async def _bounded(result: Result, bound: float, *aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), bound)
    except TimeoutError:
        result.timed_out = True
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_relay(engine: Any, bus: Bus) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(OutboxRelay(engine, Router(bus)).run_forever(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def pipeline(
    ctx: Context, n: int, txn_events: int, producers: int, concurrency: int, bound: float
) -> Result:
    """Outbox -> relay -> router -> bus -> worker-style consumer (handler, ack)."""
    result = Result()
    consumer = Consumer(ctx.bus, n, concurrency, result.latencies)
    factory = session_factory(ctx.engine)
    per_producer = n // producers

    async def produce(p: int) -> None:
        for i in range(0, per_producer, txn_events):
            async with factory.begin() as session:
                for j in range(i, min(per_producer, i + txn_events)):
                    publish(session, envelope(p * per_producer + j))

    async with running_relay(ctx.engine, ctx.bus):
        start = time.perf_counter()
        await _bounded(result, bound, consumer.run(), *(produce(p) for p in range(producers)))
        result.seconds = time.perf_counter() - start
    result.messages = consumer.done
    return result


async def latency(
    ctx: Context, rate: float, seconds: float, concurrency: int, *, outbox: bool
) -> Result:
    """A fixed offered rate: one event per outbox transaction (relayed), or per send."""
    n = int(rate * seconds)
    result = Result()
    consumer = Consumer(ctx.bus, n, concurrency, result.latencies)
    factory = session_factory(ctx.engine)
    router = Router(ctx.bus)

    async def one(i: int) -> None:
        if not outbox:
            await router.dispatch(EVENT, envelope(i))
            return
        async with factory.begin() as session:
            publish(session, envelope(i))

    async def produce() -> None:
        start = time.perf_counter()
        pending = set()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # Requests arrive independently: a slow commit does not hold back the next.
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)

    async with running_relay(ctx.engine, ctx.bus):
        start = time.perf_counter()
        await _bounded(result, seconds * 4 + 10, consumer.run(), produce())
        result.seconds = time.perf_counter() - start
    result.messages = consumer.done
    return result


async def micro_batch(ctx: Context, n: int, batch: int, bound: float) -> Result:
    result = Result()
    router = Router(ctx.bus)
    done = 0

    async def produce() -> None:
        for i in range(0, n, batch):
            await ctx.bus.send_many(
                [router.outgoing(EVENT, envelope(j)) for j in range(i, min(n, i + batch))]
            )

    async def consume() -> None:
        nonlocal done
        while done < n:
            leases = await ctx.bus.receive(
                [QUEUE_WEBHOOK], lease_seconds=60, max_messages=200, wait_seconds=0.5
            )
            now = time.time()
            for lease in leases:
                body = lease.message.body
                assert isinstance(body, dict)
                result.latencies.append(now - body["data"]["t"])
            done += await ctx.bus.ack_many(leases)

    start = time.perf_counter()
    await _bounded(result, bound, produce(), consume())
    result.seconds = time.perf_counter() - start
    result.messages = done
    return result


async def micro_single(ctx: Context, n: int, concurrency: int, bound: float) -> Result:
    result = Result()
    router = Router(ctx.bus)
    consumer = Consumer(ctx.bus, n, concurrency, result.latencies)

    async def produce() -> None:
        for i in range(n):
            await router.dispatch(EVENT, envelope(i))

    start = time.perf_counter()
    await _bounded(result, bound, produce(), consumer.run())
    result.seconds = time.perf_counter() - start
    result.messages = consumer.done
    return result


async def pipeline_2proc(
    ctx: Context,
    n: int,
    txn_events: int,
    producers: int,
    concurrency: int,
    bound: float,
    relay_in: str,
    loop: str,
) -> Result:
    """Producers here, the real ``Worker`` in a child process (see the module docstring)."""
    warmup = 300
    result = Result()
    factory = session_factory(ctx.engine)
    per_producer = n // producers
    n = per_producer * producers
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--worker-child",
        json.dumps(
            {
                "backend": ctx.backend,
                "database": ctx.engine.url.render_as_string(hide_password=False),
                "namespace": ctx.namespace,
                "expected": n,
                "warmup": warmup,
                "concurrency": concurrency,
                "relay": relay_in == "worker",
                "loop": loop,
            }
        ),
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 24,  # the report is one line with every latency
    )
    assert child.stdout is not None
    lines = child.stdout

    async def produce(p: int, count: int, *, warm: bool = False) -> None:
        for i in range(0, count, txn_events):
            async with factory.begin() as session:
                for j in range(i, min(count, i + txn_events)):
                    publish(session, envelope(p * count + j, warmup=warm))

    async def expect(word: str, seconds: float) -> str:
        async with asyncio.timeout(seconds):
            while line := (await lines.readline()).decode():
                if line.startswith(CHILD_SAYS):  # (its other output is its log)
                    said, _, rest = line[len(CHILD_SAYS) :].partition(" ")
                    if said.strip() != word:
                        raise RuntimeError(f"worker child said {said!r}, expected {word!r}")
                    return rest.strip()
        raise RuntimeError(f"worker child exited before saying {word!r}")

    relay_here = running_relay(ctx.engine, ctx.bus) if relay_in == "producers" else None
    try:
        await expect("ready", 30)
        async with relay_here or contextlib.nullcontext():
            await produce(0, warmup, warm=True)
            await expect("warm", 30)
            start, cpu_start = time.time(), time.process_time()
            try:
                async with asyncio.timeout(bound):
                    await asyncio.gather(*(produce(p, per_producer) for p in range(producers)))
                    report = await expect("done", bound)
            except TimeoutError:
                result.timed_out = True
                child.send_signal(signal.SIGTERM)  # the child reports what it got
                report = await expect("done", 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)  # (it exits by itself once done)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.wait(), 30)
        if child.returncode is None:
            child.kill()
            await child.wait()
    here = "producers + relay" if relay_here else "producers"
    result.cpu[here] = time.process_time() - cpu_start
    got = json.loads(report)
    result.cpu["worker + relay" if relay_in == "worker" else "worker"] = got["cpu"]
    result.messages = got["acked"]
    result.latencies = got["latencies"]
    result.seconds = (got["finished_at"] or time.time()) - start
    return result


async def worker_child(options: dict[str, Any]) -> None:
    """The child of ``pipeline-2proc``: ``runtime.workers.Worker`` on the webhook queue.

    Says (lines starting with ``CHILD_SAYS``) ``ready``, ``warm`` once the warm-up events
    are acked, then ``done <json>`` (acks, latencies, the time of the last ack) when every
    expected event is acked, or on SIGTERM."""
    from castiel_sync.domain.events import CloudEvent
    from castiel_sync.runtime.workers import Delivery, HandlerRegistry, Worker

    engine = create_engine(options["database"])
    bus = open_backend(options["backend"], engine, options["namespace"])
    expected, warmup = options["expected"], options["warmup"]
    latencies: list[float] = []
    counts = {"acked": 0, "warm": 0}
    cpu_at = {"warm": time.process_time()}
    finished_at = 0.0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handler(event: CloudEvent, delivery: Delivery) -> None:
        if not event.data.get("warmup"):
            latencies.append(time.time() - event.data["t"])

    registry = HandlerRegistry()
    registry.register(EVENT, handler)
    bus_ack = bus.ack

    async def counting_ack(lease: Lease) -> bool:
        nonlocal finished_at
        acked = await bus_ack(lease)
        body = lease.message.body
        if not acked or not isinstance(body, dict):
            return acked
        if body["data"].get("warmup"):
            counts["warm"] += 1
            if counts["warm"] == warmup:
                cpu_at["warm"] = time.process_time()
                print(CHILD_SAYS + "warm", flush=True)
        else:
            counts["acked"] += 1
            if counts["acked"] == expected:
                finished_at = time.time()
                stop.set()
        return acked

    bus.ack = counting_ack  # type: ignore[method-assign]
    worker = Worker(bus, registry, queues=[QUEUE_WEBHOOK], concurrency=options["concurrency"])
    try:
        await bus.start()
        relay = running_relay(engine, bus) if options["relay"] else None
        async with relay or contextlib.nullcontext():
            print(CHILD_SAYS + "ready", flush=True)
            await worker.run(stop)
    finally:
        await bus.close()
        await engine.dispose()
    report = {
        "acked": counts["acked"],
        "latencies": latencies,
        "finished_at": finished_at,
        "cpu": time.process_time() - cpu_at["warm"],
    }
    print(CHILD_SAYS + "done " + json.dumps(report), flush=True)


@dataclass
class Context:
    bus: Bus
    engine: Any
    backend: str
    namespace: str


def open_backend(backend: str, engine: Any, namespace: str) -> Bus:
    if backend == "rabbitmq":
        from castiel_sync.bus.rabbitmq import RabbitBus

        return RabbitBus(AMQP, engine, namespace=namespace)
    from castiel_sync.bus.sql import SqlBus

    return SqlBus(engine)


@contextlib.asynccontextmanager
async def backend_context(backend: str) -> AsyncIterator[Context]:
    tmp = tempfile.mkdtemp(prefix="castiel-bench-")
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    pg_db = None
    admin = None
    if backend == "postgres":
        pg_db = f"castiel_bench_{os.getpid()}_{secrets.token_hex(3)}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{pg_db}"'))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_db}"
    engine = create_engine(url)
    await create_all(engine)
    namespace = f"bench-{secrets.token_hex(3)}."
    bus = open_backend(backend, engine, namespace)
    try:
        await bus.start()
        yield Context(bus, engine, backend, namespace)
    finally:
        delete_topology = getattr(bus, "delete_topology", None)
        if delete_topology is not None:
            await delete_topology()
        await bus.close()
        await engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
        if admin is not None:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
            await admin.dispose()


Scenario = Callable[[Context], Any]
SCENARIOS = [
    "pipeline",
    "latency-outbox",
    "latency-direct",
    "micro-batch",
    "micro-single",
    "pipeline-2proc",
]


async def run_backend(backend: str, args: argparse.Namespace) -> dict[str, list[Result]]:
    scenarios: dict[str, Scenario] = {
        "pipeline": lambda c: pipeline(
            c, args.messages, args.txn_events, args.producers, args.concurrency, args.timeout
        ),
        "latency-outbox": lambda c: latency(
            c, args.rate, args.seconds, args.concurrency, outbox=True
        ),
        "latency-direct": lambda c: latency(
            c, args.rate, args.seconds, args.concurrency, outbox=False
        ),
        "micro-batch": lambda c: micro_batch(c, args.messages, args.batch, args.timeout),
        "micro-single": lambda c: micro_single(
            c, args.single_messages, args.concurrency, args.timeout
        ),
        "pipeline-2proc": lambda c: pipeline_2proc(
            c,
            args.messages,
            args.txn_events,
            args.producers,
            args.concurrency,
            args.timeout,
            args.relay_in,
            args.loop,
        ),
    }
    chosen = args.scenario or list(scenarios)
    out: dict[str, list[Result]] = {name: [] for name in chosen}
    for _ in range(args.repeat):
        for name in chosen:
            async with backend_context(backend) as ctx:
                if name != "pipeline-2proc":  # it warms up its own path (and here nothing
                    # may consume: this process's bus would compete with the child)
                    await micro_batch(ctx, 300, 100, args.timeout)  # connections, JIT
                out[name].append(await scenarios[name](ctx))
    return out


def median(results: list[Result], fn: Callable[[Result], float]) -> float:
    return statistics.median(fn(r) for r in results)


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


def main() -> None:
    if sys.argv[1:2] == ["--worker-child"]:
        options = json.loads(sys.argv[2])
        run_on(options["loop"], worker_child(options))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend", default="all", choices=["all", "sqlite", "rabbitmq", "postgres"]
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
    )
    parser.add_argument("--messages", type=int, default=5000, help="per throughput run")
    parser.add_argument("--single-messages", type=int, default=2000)
    parser.add_argument("--txn-events", type=int, default=10, help="events per outbox commit")
    parser.add_argument("--producers", type=int, default=4, help="concurrent outbox writers")
    parser.add_argument("--concurrency", type=int, default=64, help="consumer handler slots")
    parser.add_argument("--batch", type=int, default=500, help="micro-batch send size")
    parser.add_argument("--rate", type=float, default=500, help="latency: offered msg/s")
    parser.add_argument("--seconds", type=float, default=5, help="latency: duration")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "auto"],
        default="auto",
        help="event loop of every process; auto (the runtime's default): uvloop if installed",
    )
    parser.add_argument(
        "--relay-in",
        choices=["producers", "worker"],
        default="producers",
        help="pipeline-2proc: the process that runs the outbox relay",
    )
    parser.add_argument("--timeout", type=float, default=60, help="bound per scenario run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    backends = ["sqlite", "postgres", "rabbitmq"] if args.backend == "all" else [args.backend]
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cpus; "
        f"median of {args.repeat}; {args.loop} event loop; "
        f"consumer concurrency {args.concurrency}; "
        f"pipeline: {args.producers} producers x {args.txn_events} events per commit; "
        f"pipeline-2proc: relay in {args.relay_in}"
    )
    header = f"{'backend':9s} {'scenario':19s} {'msg/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s}  runs"
    print(header)
    print("-" * len(header))
    for backend in backends:
        try:
            results = run_on(args.loop, run_backend(backend, args))
        except OSError as exc:
            print(f"{backend:9s} unavailable: {exc}")
            continue
        for name, runs in results.items():
            rate = median(runs, lambda r: r.rate)
            p50 = median(runs, lambda r: r.pct(50))
            p99 = median(runs, lambda r: r.pct(99))
            per_run = " ".join(f"{r.rate:.0f}{'!' if r.timed_out else ''}" for r in runs)
            label = f"{name} @{args.rate:.0f}" if name.startswith("latency") else name
            print(f"{backend:9s} {label:19s} {rate:8.0f} {p50:8.1f} {p99:8.1f}  [{per_run}]")
            for process in runs[0].cpu:
                per_message = statistics.median(r.cpu[process] / max(1, r.messages) for r in runs)
                print(f"{'':29s} CPU {per_message * 1e6:6.0f} us/msg in {process}")
    print("(! = hit --timeout; msg/s is then what it managed in that time)")


if __name__ == "__main__":
    main()
