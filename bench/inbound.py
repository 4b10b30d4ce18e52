"""Inbound sync benchmark: a Salesforce-style paginated API on loopback, through the whole
pipeline (jobs of 1000, mapping, fingerprints, bulk upsert, executions, outbox events,
follow-up jobs drained in process), on SQLite.

    .venv/bin/python bench/inbound.py [--records 100000] [--scaling 20000,100000] [--profile]

Phases, per N: a full first import, an unchanged full re-sync, and an incremental sync
after 1,000 records changed upstream. Prints records/s and the process's peak RSS growth
(ru_maxrss, measured from just before the first import) for each. Each N runs in its own
process so the memory figures do not mix. The API server (uvicorn, another process)
serves ``/services/data/v62.0/query`` pages of 2,000 records with ``nextRecordsUrl``, as
Salesforce does, each listing's pages encoded once (orjson) and served as ready bytes: the
figures are about the pipeline, not the emulator. Targets (2 cores, SQLite): first import
>= 10,000 records/s, unchanged re-sync >= 2x faster, peak memory < 200 MB and flat as N
grows.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import pstats
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

PAGE = 2000
#: SQLite page cache (MB) for the run; SQLite's default is 2 MB (``--sqlite-cache-mb``)
CACHE_MB = int(os.environ.get("CASTIEL_BENCH_SQLITE_CACHE_MB", "0"))
#: the phase ``--profile`` profiles (first_import, unchanged_resync, incremental_1000_changes)
PROFILE_PHASE = os.environ.get("CASTIEL_BENCH_PROFILE_PHASE", "first_import")
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


# -- the API server (its own process) ---------------------------------------------------


def _stamp(seconds: float) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def serve(port: int, records: int) -> None:
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    rows: list[dict[str, Any]] = []
    for n in range(records):
        rows.append(
            {
                "attributes": {"type": "Account", "url": f"/sobjects/Account/{n}"},
                "Id": f"001{n:015d}",
                "Name": f"  Account {n} Ltd ",
                "Industry": ("Banking", "Retail", "Energy", "Media")[n % 4],
                "BillingCity": ("Oslo", "Rome", "Lima", "Pune")[n % 4],
                "Phone": f"+47 {n:08d}",
                "Website": f"https://acct{n}.example.com",
                "AnnualRevenue": n * 1000.5,
                "NumberOfEmployees": n % 5000,
                "SystemModstamp": _stamp(n // 10),
            }
        )
    clock = [records // 10 + 60]
    # The API's cost is not what this bench measures: each listing's pages are encoded
    # once (orjson) and served as ready bytes, so a request costs the server next to
    # nothing beyond HTTP. A listing is keyed by its query; a change upstream drops them.
    listings: dict[str | None, str] = {}  # since -> locator
    locators: dict[str, list[bytes]] = {}  # locator -> its encoded pages

    def listing(since: str | None) -> str:
        locator = listings.get(since)
        if locator is None:
            result = rows if since is None else [r for r in rows if r["SystemModstamp"] >= since]
            result = sorted(result, key=lambda r: (r["SystemModstamp"], r["Id"]))
            locator = f"01g{len(locators):012d}"
            pages = []
            for offset in range(0, max(len(result), 1), PAGE):
                body: dict[str, Any] = {
                    "totalSize": len(result),
                    "done": offset + PAGE >= len(result),
                }
                if not body["done"]:
                    body["nextRecordsUrl"] = f"/services/data/v62.0/query/{locator}-{offset + PAGE}"
                body["records"] = result[offset : offset + PAGE]
                pages.append(orjson.dumps(body))
            locators[locator] = pages
            listings[since] = locator
        return locator

    def page(locator: str, offset: int) -> Response:
        return Response(locators[locator][offset // PAGE], media_type="application/json")

    async def query(request: Request) -> Response:
        return page(listing(request.query_params.get("since")), 0)

    async def more(request: Request) -> Response:
        locator, _, offset = request.path_params["cursor"].partition("-")
        return page(locator, int(offset))

    async def touch(request: Request) -> Response:
        count = int(request.query_params["n"])
        clock[0] += 1
        step = max(1, len(rows) // count)
        for n in range(0, step * count, step):
            rows[n]["Name"] = f"  Account {n} Renamed "
            rows[n]["SystemModstamp"] = _stamp(clock[0])
        listings.clear()
        locators.clear()
        return Response(b"{}", media_type="application/json")

    listing(None)  # the full listing, ready before the first request
    app = Starlette(
        routes=[
            Route("/services/data/v62.0/query", query),
            Route("/services/data/v62.0/query/{cursor}", more),
            Route("/bench/touch", touch, methods=["POST"]),
            Route("/bench/ping", lambda _request: Response(b"{}")),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the adapter: Salesforce-style paging over httpx -----------------------------------


def make_adapter_class() -> type:
    import orjson

    from castiel_sync.sdk import ExternalRecord, FetchOptions, FetchResult, HttpAdapter

    parse_time = datetime.fromisoformat

    class BenchSalesforceAdapter(HttpAdapter):
        """Salesforce-style paging on the SDK's HTTP base (limiter, retries, errors)."""

        provider_id = "bench_salesforce"
        default_rate_limit = None

        async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
            if options.cursor:
                response = await self.request("GET", options.cursor)
            else:
                params = {"q": "SELECT FIELDS(STANDARD) FROM " + entity}  # noqa: S608 - bench
                if options.since is not None:
                    params["since"] = _stamp((options.since - EPOCH).total_seconds())
                response = await self.request("GET", "/services/data/v62.0/query", params=params)
            body = orjson.loads(response.content)
            # The validating constructor: on pydantic 2.14 it is faster than
            # model_construct (which loops over the fields in Python).
            records = [
                ExternalRecord(
                    external_id=raw["Id"], data=raw, modified_at=parse_time(raw["SystemModstamp"])
                )
                for raw in body["records"]
            ]
            cursor = body.get("nextRecordsUrl")
            return FetchResult.model_construct(
                records=records,
                next_cursor=cursor,
                has_more=cursor is not None,
                high_water_mark=records[-1].modified_at if records else options.since,
                delta_token=None,
            )

    return BenchSalesforceAdapter


# -- one N, in its own process ---------------------------------------------------------


MAPPINGS = [
    {"external": "Name", "castiel": "name", "transforms": ["trim"]},
    {"external": "Industry", "castiel": "industry", "transforms": ["lower"]},
    {"external": "BillingCity", "castiel": "address.city"},
    {"external": "Phone", "castiel": "phone"},
    {"external": "Website", "castiel": "domain"},
    {"external": "AnnualRevenue", "castiel": "revenue", "transforms": ["number"]},
    {"external": "NumberOfEmployees", "castiel": "employees", "transforms": ["integer"]},
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_one(records: int, profile: bool) -> dict[str, Any]:
    import httpx

    from castiel_sync.domain.config import IntegrationSettings
    from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
    from castiel_sync.sdk import Credentials
    from castiel_sync.store import Store
    from castiel_sync.store.base import create_engine
    from castiel_sync.store.repositories import IntegrationRepository, ProviderRepository
    from castiel_sync.store.schema import create_all
    from castiel_sync.sync import InboundSync, StaticCredentialProvider, SyncJob

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, records), daemon=True
    )
    server.start()
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            try:
                await client.get("/bench/ping")
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            break

    tmp = tempfile.mkdtemp(prefix="castiel-bench-")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp}/bench.db")
    if CACHE_MB:
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _cache(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.cursor().execute(f"PRAGMA cache_size=-{CACHE_MB * 1024}")

    await create_all(engine)
    store = Store(engine)
    scope = TenantScope(TenantId("bench"))
    async with store.transaction() as session:
        await ProviderRepository(session, SystemScope("bench")).upsert(
            provider_id="bench_salesforce", name="Bench", category="crm", status="active",
            audience="tenant", auth_type="oauth2", definition={},
        )  # fmt: skip
        repo = IntegrationRepository(session, scope)
        settings = IntegrationSettings.model_validate(
            {
                "syncEnabled": True,
                "syncFrequency": {"kind": "interval", "minutes": 15},
                "entityMappings": [
                    {"entity": "Account", "shardType": "c_company", "fieldMappings": MAPPINGS}
                ],
                "allowedShardTypes": ["c_company"],
            }
        )
        row = await repo.create(
            provider_id="bench_salesforce", name="Bench", instance_id="bench",
            settings=settings, created_by=None,
        )  # fmt: skip
        await repo.update(row.id, status="active")
        integration_id = row.id

    adapter_class = make_adapter_class()
    sync = InboundSync(
        store,
        StaticCredentialProvider(Credentials(access_token="bench", instance_url=base)),  # noqa: S106
        adapter_factory=lambda _integration: adapter_class(),
    )

    def job(sync_type: str) -> SyncJob:
        return SyncJob(
            tenant_id="bench", integration_id=integration_id, entity="Account",
            sync_type=sync_type, trigger="manual",
        )  # fmt: skip

    results: dict[str, Any] = {"records": records}
    baseline = rss_mb()
    profiler = cProfile.Profile() if profile else None

    async def phase(name: str, sync_type: str, expect: int) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None and name == PROFILE_PHASE:
            profiler.enable()
        outcomes = await sync.run_to_completion(job(sync_type))
        if profiler is not None and name == PROFILE_PHASE:
            profiler.disable()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        fetched = sum(o.counts.get("fetched", 0) for o in outcomes)
        assert outcomes[-1].status == "completed", outcomes[-1]
        assert fetched >= expect, (name, fetched, expect)
        totals = {
            k: sum(o.counts.get(k, 0) for o in outcomes)
            for k in ("created", "updated", "unchanged")
        }
        results[name] = {
            "seconds": round(elapsed, 2),
            "records_per_s": round(fetched / elapsed),
            "records_per_cpu_s": round(fetched / cpu),
            "fetched": fetched,
            "jobs": len(outcomes),
            **totals,
            "peak_rss_growth_mb": round(rss_mb() - baseline, 1),
        }

    await phase("first_import", "full", records)
    await phase("unchanged_resync", "full", records)
    async with httpx.AsyncClient(base_url=base) as client:
        await client.post("/bench/touch", params={"n": 1000})
    await phase("incremental_1000_changes", "incremental", 1000)
    results["peak_rss_mb"] = round(rss_mb(), 1)
    results["baseline_rss_mb"] = round(baseline, 1)
    if profiler is not None:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(40)
    await sync.aclose()
    server.terminate()
    await engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)  # the database (170 MB at N = 100,000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help="one N only")
    parser.add_argument("--scaling", default="20000,100000", help="the Ns, comma-separated")
    parser.add_argument("--profile", action="store_true", help="cProfile the first import")
    parser.add_argument("--sqlite-cache-mb", type=int, default=0, help="PRAGMA cache_size")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(run_one(args.records, args.profile))
        print("RESULT " + json.dumps(result), flush=True)
        return
    sizes = [args.records] if args.records else [int(n) for n in args.scaling.split(",")]
    rows = []
    for n in sizes:
        command = [sys.executable, __file__, "--child", "--records", str(n)]
        if args.profile:
            command.append("--profile")
        out = subprocess.run(  # noqa: S603 - this very script
            command, check=True, capture_output=not args.profile, text=True,
            env={**os.environ, "CASTIEL_BENCH_SQLITE_CACHE_MB": str(args.sqlite_cache_mb)},
        )  # fmt: skip
        if args.profile:
            return
        line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
        rows.append(json.loads(line.removeprefix("RESULT ")))
    for result in rows:
        n = result["records"]
        print(f"\nN = {n:,} (baseline RSS {result['baseline_rss_mb']} MB, "
              f"peak {result['peak_rss_mb']} MB)")  # fmt: skip
        for name in ("first_import", "unchanged_resync", "incremental_1000_changes"):
            r = result[name]
            print(
                f"  {name:26s} {r['fetched']:>7,} records in {r['seconds']:>6.2f} s = "
                f"{r['records_per_s']:>7,} records/s ({r['records_per_cpu_s']:,}/CPU-s)  "
                f"({r['jobs']} jobs; created {r['created']:,}"
                f", updated {r['updated']:,}, unchanged {r['unchanged']:,}); "
                f"peak RSS growth {r['peak_rss_growth_mb']} MB"
            )
        first = result["first_import"]["records_per_s"]
        again = result["unchanged_resync"]["records_per_s"]
        print(f"  unchanged re-sync / first import speed: {again / first:.2f}x")


if __name__ == "__main__":
    main()
