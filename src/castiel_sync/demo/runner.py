"""``castiel-sync demo``: the whole system, on the embedded default, against a bundled
provider emulator, step by step with figures.

The service is the one ``serve`` runs (the runtime's relay, scheduler, token refresher and
workers, and the management API) on a fresh data directory. Its one difference from
production: the emulated provider's catalog entry has its OAuth endpoints pointed at the
emulator's OAuth server on loopback (the catalog only accepts https provider hosts), so the
API's real authorize -> callback path runs against it.

Each step prints ✓ with its figures, or ✗ with what went wrong; a step whose machinery is
not installed says so and counts as not passed (``--non-interactive`` then exits 1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from rich.console import Console

from castiel_sync.demo.emulators import (
    PROFILES,
    EmulatorApp,
    LoopbackServer,
    ProviderProfile,
    Seeded,
    WallClock,
    free_port,
)
from castiel_sync.settings import Settings
from castiel_sync.testing import send_webhook

MARKER = ".castiel-demo"
TENANT = "demo"
INSTANCE = "demo"
CLIENT_ID = "castiel-demo-client"


class StepFailed(Exception):
    """A step did not reach its outcome; the message says what was seen."""


class NotAvailable(Exception):
    """The machinery a step needs is not installed in this build yet."""


@dataclass
class StepResult:
    key: str
    title: str
    status: str = "pending"  # ok | failed | unavailable
    figures: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class DemoOptions:
    provider: str = "salesforce"
    data_dir: Path = Path("data/demo")
    port: int = 8000
    records: int = 300
    non_interactive: bool = False
    write_back_backoff_ms: int = 4000


@dataclass
class DemoReport:
    options: DemoOptions
    steps: list[StepResult] = field(default_factory=list)
    settings: Settings | None = None
    base_url: str = ""
    emulator_url: str = ""
    integration_id: str = ""
    token: str = ""
    emulator: Any = None
    oauth: Any = None
    seeded: Seeded | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def step(self, key: str) -> StepResult:
        return next(s for s in self.steps if s.key == key)


def prepare_data_dir(path: Path) -> None:
    """A fresh directory: created, or emptied when an earlier demo made it. Anything else
    is refused (ValueError) rather than deleted."""
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a directory")
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise ValueError(
                f"{path} is not empty and was not made by the demo; choose another --data-dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by castiel-sync demo; deleted by the next demo run\n")


def demo_catalog(provider_id: str, authorize_url: str, token_url: str) -> Any:
    """The packaged catalog with one provider's OAuth endpoints on the emulator."""
    from castiel_sync.catalog import load_catalog
    from castiel_sync.catalog._loader import Catalog

    packaged = load_catalog()
    specs = {}
    for spec in packaged:
        if spec.id == provider_id and spec.oauth is not None:
            oauth = spec.oauth.model_copy(
                update={"authorization_url": authorize_url, "token_url": token_url}
            )
            spec = spec.model_copy(update={"oauth": oauth})
        specs[spec.id] = spec
    return Catalog(specs)


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, within: float, interval: float = 0.1
) -> Any:
    """Poll ``probe`` until it returns something truthy; None after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(interval)


class Demo:
    def __init__(self, options: DemoOptions, console: Console | None = None) -> None:
        if options.provider not in PROFILES:
            known = ", ".join(sorted(PROFILES))
            raise ValueError(f"--provider {options.provider!r}: the demo has {known}")
        self.options = options
        self.console = console or Console()
        self.profile: ProviderProfile = PROFILES[options.provider]
        self.report = DemoReport(options)
        self.stop = asyncio.Event()
        self._servers: list[LoopbackServer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._engine: Any = None
        self.system: Any = None
        self.http: httpx.AsyncClient | None = None

    # -- plumbing ------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        assert self.report.settings is not None
        return self.report.settings

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.report.token}"}

    def super_admin(self) -> dict[str, str]:
        from castiel_sync.api.auth import Role, mint_token

        token = mint_token(
            self.settings,
            tenant_id="system",
            role=Role.SUPER_ADMIN,
            user_id="demo-root",
            ttl_seconds=600,
        )
        return {"Authorization": f"Bearer {token}"}

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.http is not None
        kwargs.setdefault("headers", self.admin())
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise StepFailed(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json() if response.content else None

    async def step(
        self, key: str, title: str, body: Callable[[StepResult], Awaitable[None]]
    ) -> StepResult:
        result = StepResult(key, title)
        self.report.steps.append(result)
        number = len(self.report.steps)
        self.console.print(f"\n[bold cyan]{number}. {title}[/bold cyan]")
        started = time.monotonic()
        try:
            if self.stop.is_set():
                raise StepFailed("interrupted (Ctrl-C)")
            await body(result)
            result.status = "ok"
        except NotAvailable as exc:
            result.status, result.message = "unavailable", f"not available yet: {exc}"
        except StepFailed as exc:
            result.status, result.message = "failed", str(exc)
        except Exception as exc:  # a demo step must report, not crash the walk-through
            result.status = "failed"
            result.message = f"{type(exc).__name__}: {exc}"
        result.seconds = time.monotonic() - started
        if result.ok:
            self.console.print(f"   [green]✓[/green] done in {result.seconds:.1f}s")
            width = max((len(k) for k in result.figures), default=0)
            for name, value in result.figures.items():
                self.console.print(
                    f"     {name.ljust(width)}  [bold]{value}[/bold]", soft_wrap=True
                )
        elif result.status == "unavailable":
            self.console.print(f"   [yellow]✗ {result.message}[/yellow]")
        else:
            self.console.print(f"   [red]✗ {result.message}[/red]")
        return result

    # -- the walk-through -------------------------------------------------------------------

    async def run(self) -> DemoReport:
        try:
            await self.step("service", "Start the service on the embedded default", self.start)
            if self.report.steps[-1].ok:
                await self.step(
                    "connect", f"Connect {self.profile.display} through OAuth", self.connect
                )
            if self.report.steps[-1].ok:
                await self.step("full_sync", "Full sync, live", self.full_sync)
            if self.report.steps[-1].ok:
                await self.step(
                    "webhook",
                    f"A change in {self.profile.display} arrives by webhook",
                    self.webhook,
                )
                await self.step(
                    "write_back",
                    f"A shard edited in Castiel is written back to {self.profile.display}",
                    self.write_back,
                )
                await self.step(
                    "conflict", "Both sides edit one record: merged per field", self.conflict
                )
                await self.step("rate_limit", "A burst of 429s is absorbed", self.rate_limit)
            self.summary()
            if self.report.steps[0].ok and not self.options.non_interactive:
                self.console.print("\n[dim]Serving until Ctrl-C…[/dim]")
                await self.stop.wait()
                self.console.print("[dim]Stopping: draining in-flight work…[/dim]")
        finally:
            await self.shutdown()
        return self.report

    async def start(self, result: StepResult) -> None:
        from castiel_sync.api.app import create_app
        from castiel_sync.api.auth import Role, mint_token
        from castiel_sync.store import Store, migrate
        from castiel_sync.store.base import create_engine

        options = self.options
        prepare_data_dir(options.data_dir)
        port = free_port(options.port)
        emulator_port = free_port()
        base = f"http://127.0.0.1:{port}"
        settings = Settings(
            data_dir=options.data_dir.resolve(),
            database_url=None,
            bus_url="embedded",
            vault="local",
            master_key=None,
            master_key_file=None,
            jwt_algorithm="HS256",
            jwt_secret=None,
            public_url=base,
            host="127.0.0.1",
            port=port,
            log_level="ERROR",
            log_format="console",
        )
        self.report.settings = settings
        self.report.base_url = base
        _quiet_logging(settings)

        # The provider emulator and its OAuth server, on loopback.
        clock = WallClock()
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        client_secret = secrets.token_urlsafe(24)
        emulator, oauth = self.profile.build(clock, emulator_url, client_secret)
        oauth.register_client(CLIENT_ID, client_secret, [base + "/oauth/callback"])
        self.report.emulator, self.report.oauth = emulator, oauth
        self.report.emulator_url = emulator_url
        emulator_server = LoopbackServer(EmulatorApp(emulator, oauth), emulator_port)
        await emulator_server.start()
        self._servers.append(emulator_server)

        # The service: migrations, then the runtime (relay, scheduler, token refresher,
        # workers) and the API, as `serve` runs them.
        started = time.monotonic()
        await migrate.upgrade(settings.resolved_database_url)
        self._engine = create_engine(settings.resolved_database_url)
        from castiel_sync.cli._common import System

        self.system = System(settings, Store(self._engine))
        try:
            process = importlib.import_module("castiel_sync.runtime.process")
        except ImportError:
            raise NotAvailable("the runtime (castiel_sync.runtime.process)") from None
        plan = dataclasses.replace(process.serve_plan(), api=False, migrate=False)
        self._tasks.append(asyncio.create_task(process.run(settings, plan, stop=self.stop)))
        catalog = demo_catalog(self.profile.provider_id, oauth.authorize_url, oauth.token_url)
        app = create_app(settings, run_migrations=False, catalog=catalog)
        api_server = LoopbackServer(app, port)
        await api_server.start()
        self._servers.append(api_server)
        self.http = httpx.AsyncClient(base_url=base, timeout=30)
        health = await self.http.get("/healthz")
        if health.status_code != 200:
            raise StepFailed(f"/healthz answered {health.status_code}")
        self.report.token = mint_token(
            settings,
            tenant_id=TENANT,
            role=Role.TENANT_ADMIN,
            user_id="demo-admin",
            ttl_seconds=24 * 3600,
        )
        result.figures = {
            "API": base,
            f"{self.profile.display} emulator": emulator_url,
            "data": str(options.data_dir),
            "ready in": f"{time.monotonic() - started:.1f}s",
        }

    async def connect(self, result: StepResult) -> None:
        profile, oauth = self.profile, self.report.oauth
        client_secret = oauth.clients[CLIENT_ID].client_secret
        await self.api(
            "PUT",
            f"/providers/{profile.provider_id}/oauth-client",
            json={"clientId": CLIENT_ID, "clientSecret": client_secret},
            headers=self.super_admin(),
        )
        integration = await self.api(
            "POST",
            "/integrations",
            json={
                "providerId": profile.provider_id,
                "name": f"Demo {profile.display}",
                "instanceId": INSTANCE,
                "syncDirection": "bidirectional",
                "conflictResolution": "last_write_wins",
                "writeBack": {
                    "enabled": True,
                    "retryPolicy": {
                        "maxAttempts": 5,
                        "backoffMs": self.options.write_back_backoff_ms,
                    },
                },
            },
        )
        integration_id = integration["id"]
        self.report.integration_id = integration_id
        # The admin asks for the provider's consent page...
        authorize = await self.api(
            "POST",
            f"/integrations/{integration_id}/oauth/authorize",
            json={"scope": "tenant", "templateValues": profile.template_values},
        )
        url = authorize["authorizationUrl"]
        # ...the browser opens it, the provider approves and redirects back to the API...
        async with httpx.AsyncClient(timeout=30) as browser:
            consent = await browser.get(url)
            if consent.status_code != 302:
                raise StepFailed(f"the provider's authorize page answered {consent.status_code}")
            callback = consent.headers["location"]
            query = parse_qs(urlsplit(callback).query)
            if "code" not in query:
                raise StepFailed(f"the provider refused: {callback}")
            answer = await browser.get(callback)
        if answer.status_code != 200:
            raise StepFailed(f"/oauth/callback answered {answer.status_code}: {answer.text}")
        connected = answer.json()
        await self.api("POST", f"/integrations/{integration_id}/activate")
        # Webhooks: the secret the provider's deliveries are verified with.
        await self.api(
            "PUT",
            f"/integrations/{integration_id}/webhook-secret",
            json={"secret": self.report.emulator.webhook_secret},
        )
        token_calls = [c for c in oauth.token_calls if c.grant_type == "authorization_code"]
        if not token_calls or token_calls[-1].status != 200:
            raise StepFailed("the code was not exchanged at the emulator's token endpoint")
        seeded = profile.seed(self.report.emulator, self.options.records)
        self.report.seeded = seeded
        result.figures = {
            "integration": integration_id,
            "tokens in vault": connected["credentialSecretName"],
            "seeded": f"{seeded.total} records ({seeded.summary()})",
        }

    async def full_sync(self, result: StepResult) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from castiel_sync.cli.integrations import sync_now
        from castiel_sync.store.repositories.shards import RelationshipRepository

        seeded = self.report.seeded
        assert seeded is not None
        with Progress(
            "   ",
            BarColumn(),
            MofNCompleteColumn(),
            "records",
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            task = progress.add_task("sync", total=seeded.total)
            report = await sync_now(
                self.system,
                TENANT,
                self.report.integration_id,
                full=True,
                on_progress=lambda c: progress.update(task, completed=c["fetched"]),
            )
        if not report.ok:
            raise StepFailed("; ".join(report.errors))
        async with self.system.store.transaction() as session:
            rels = await RelationshipRepository(session, self.system.scope(TENANT)).list(
                self.report.integration_id
            )
        by_entity: dict[str, int] = {}
        for rel in rels:
            by_entity[rel.entity] = by_entity.get(rel.entity, 0) + 1
        expected = {entity: len(ids) for entity, ids in seeded.ids.items()}
        if {k: by_entity.get(k, 0) for k in expected} != expected:
            raise StepFailed(f"expected {expected} in Castiel, found {by_entity}")
        rate = report.counts["fetched"] / report.seconds if report.seconds else 0
        self.report.facts["full_sync"] = report.doc()
        result.figures = {
            "shards created": report.counts["created"],
            "jobs": report.jobs,
            "time": f"{report.seconds:.1f}s",
            "rate": f"{rate:.0f} records/s",
        }

    async def _shard_of(self, entity: str, external_id: str) -> Any:
        from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository

        async with self.system.store.transaction() as session:
            scope = self.system.scope(TENANT)
            rel = await RelationshipRepository(session, scope).find(
                self.report.integration_id, entity, external_id
            )
            if rel is None:
                return None
            return await ShardRepository(session, scope).get(rel.shard_id)

    async def _relationship(self, entity: str, external_id: str) -> Any:
        from castiel_sync.store.repositories.shards import RelationshipRepository

        async with self.system.store.transaction() as session:
            return await RelationshipRepository(session, self.system.scope(TENANT)).find(
                self.report.integration_id, entity, external_id
            )

    def _company(self, index: int) -> str:
        seeded = self.report.seeded
        assert seeded is not None
        return seeded.ids[self.profile.company_entity][index]

    async def _send_webhook(self, entity: str, record_id: str, fields: dict[str, Any]) -> int:
        profile, emulator = self.profile, self.report.emulator
        if profile.webhook is None:
            raise NotAvailable(f"the {profile.display} emulator sends no webhooks")
        url = f"{self.report.base_url}/webhooks/{profile.provider_id}/{self.report.integration_id}"
        payload = profile.webhook(emulator, entity, record_id, fields)
        # Signed as the provider signs it; posted where the provider posts it (Dataverse
        # puts its key in the URL's query).
        delivery = emulator.build_webhook(payload, url=url)
        response = await send_webhook(delivery.url, delivery)
        return int(response.status_code)

    async def webhook(self, result: StepResult) -> None:
        profile, emulator = self.profile, self.report.emulator
        entity, record = profile.company_entity, self._company(0)
        phone_field = profile.company_fields["phone"]
        new_phone = "+1 555 010 2026"
        profile.edit(emulator, entity, record, {phone_field: new_phone})
        sent = time.monotonic()
        status = await self._send_webhook(entity, record, {phone_field: new_phone})
        if status >= 300:
            raise StepFailed(f"the webhook receiver answered {status}")
        accepted_ms = (time.monotonic() - sent) * 1000

        async def applied() -> Any:
            shard = await self._shard_of(entity, record)
            return shard if shard and shard.structured_data.get("phone") == new_phone else None

        shard = await wait_for(applied, within=20)
        if shard is None:
            raise StepFailed("the change did not reach Castiel within 20s")
        self.report.facts["webhook"] = {
            "entity": entity,
            "externalId": record,
            "shardId": shard.id,
            "phone": new_phone,
        }
        result.figures = {
            "record": f"{entity} {record}",
            "receiver": f"{status} in {accepted_ms:.0f} ms",
            "applied after": f"{(time.monotonic() - sent) * 1000:.0f} ms",
            "shard version": shard.version,
        }

    async def write_back(self, result: StepResult) -> None:
        profile, emulator = self.profile, self.report.emulator
        entity, record = profile.company_entity, self._company(1)
        shard = await self._shard_of(entity, record)
        if shard is None:
            raise StepFailed(f"no shard for {entity} {record}")
        website = "https://castiel-demo.example"
        started = time.monotonic()
        assert self.http is not None
        patched = await self.http.patch(
            f"/shards/{shard.id}", headers=self.admin(), json={"changes": {"website": website}}
        )
        if patched.status_code == 404 and "/shards" not in await self._paths():
            raise NotAvailable("the shards API (PATCH /shards/{id})")
        if patched.status_code != 200:
            raise StepFailed(f"PATCH /shards answered {patched.status_code}: {patched.text[:200]}")
        field_name = profile.company_fields["website"]

        async def landed() -> bool:
            return profile.read(emulator, entity, record).get(field_name) == website

        if not await wait_for(landed, within=20):
            rel = await self._relationship(entity, record)
            state = f" (relationship {rel.sync_status}: {rel.last_error})" if rel else ""
            raise StepFailed(f"the edit did not reach {profile.display} within 20s{state}")
        rel = await wait_for(lambda: self._synced(entity, record), within=10)
        self.report.facts["write_back"] = {
            "entity": entity,
            "externalId": record,
            "shardId": shard.id,
            "website": website,
        }
        result.figures = {
            "shard": shard.id[:8],
            "PATCH": f"{patched.status_code}, version {patched.json()['version']}",
            f"in {profile.display} after": f"{(time.monotonic() - started) * 1000:.0f} ms",
            "relationship": rel.sync_status if rel else "pending",
        }

    async def _synced(self, entity: str, record: str) -> Any:
        rel = await self._relationship(entity, record)
        return rel if rel is not None and rel.sync_status == "synced" else None

    async def _paths(self) -> set[str]:
        assert self.http is not None
        spec = (await self.http.get("/openapi.json")).json()
        return {"/" + p.strip("/").split("/")[0] for p in spec.get("paths", {})}

    async def conflict(self, result: StepResult) -> None:
        """While the integration is paused, Alice edits phone and industry in Castiel and
        Bob edits phone and website in the provider. On resume, the next sync's three-way
        merge keeps Alice's industry (and writes it back) and Bob's website, and the
        integration's mode (last_write_wins) gives phone to Bob's later edit."""
        from castiel_sync.cli.integrations import sync_now

        profile, emulator = self.profile, self.report.emulator
        entity, record = profile.company_entity, self._company(2)
        f = profile.company_fields
        shard = await self._shard_of(entity, record)
        if shard is None:
            raise StepFailed(f"no shard for {entity} {record}")
        integration = self.report.integration_id
        other = profile.other_field
        alice = {"phone": "+47 2200 0001", other: "CONSULTING"}
        bob = {f["phone"]: "+33 1 7000 0002", f["website"]: "https://bob.example"}
        await self.api("POST", f"/integrations/{integration}/pause")
        await self.api("PATCH", f"/shards/{shard.id}", json={"changes": alice})
        edited = time.monotonic()
        await asyncio.sleep(max(0.0, 1.1 - (time.monotonic() - edited)))  # Bob edits later
        profile.edit(emulator, entity, record, bob)
        await self.api("POST", f"/integrations/{integration}/activate")
        report = await sync_now(self.system, TENANT, integration)
        if not report.ok:
            raise StepFailed("; ".join(report.errors))

        async def settled() -> Any:
            row = profile.read(emulator, entity, record)
            if row.get(f[other]) != alice[other]:
                return None
            return await self._synced(entity, record)

        if not await wait_for(settled, within=20):
            rel = await self._relationship(entity, record)
            state = f" (relationship {rel.sync_status}: {rel.last_error})" if rel else ""
            raise StepFailed(f"Alice's {other} did not reach {profile.display}{state}")
        final = await self._shard_of(entity, record)
        external = profile.read(emulator, entity, record)
        castiel_side = {k: final.structured_data.get(k) for k in ("phone", other, "website")}
        provider_side = {k: external.get(f[k]) for k in ("phone", other, "website")}
        if castiel_side != provider_side:
            raise StepFailed(f"the sides differ: Castiel {castiel_side}, provider {provider_side}")
        decisions = {
            d.get("field"): d for entry in final.history or [] for d in entry.get("decisions", [])
        }
        phone = decisions.get("phone")
        if phone is None or phone.get("winner") != "external":
            raise StepFailed(f"no merge decision giving phone to the later edit: {phone}")
        if castiel_side["website"] != bob[f["website"]]:
            raise StepFailed("Bob's website was lost")

        async def refused_while_paused() -> list[Any]:
            dead = await self.api("GET", "/dead-letters")
            return [d for d in dead if "paused" in str(d.get("lastError", ""))]

        refused = await wait_for(refused_while_paused, within=5) or []
        self.report.facts["conflict"] = {
            "entity": entity,
            "externalId": record,
            "shardId": shard.id,
            "mode": "last_write_wins",
            "alice": alice,
            "bob": bob,
            "final": castiel_side,
            "decisions": decisions,
        }
        result.figures = {
            other: f"Castiel's ({alice[other]}), written back",
            "website": f"{profile.display}'s ({bob[f['website']]})",
            "phone, changed on both sides": f"{profile.display}'s later edit "
            f"({castiel_side['phone']}) by last_write_wins",
            "both sides equal": "yes",
            "while paused": f"{len(refused)} write-back refused and dead-lettered "
            "(castiel-sync deadletters list)",
        }

    async def rate_limit(self, result: StepResult) -> None:
        from castiel_sync.cli.integrations import sync_now

        profile, emulator = self.profile, self.report.emulator
        seeded = self.report.seeded
        assert seeded is not None
        contacts = seeded.ids[profile.contact_entity][:25]
        title = "Chief Demo Officer"
        for record in contacts:
            profile.edit(
                emulator, profile.contact_entity, record, {profile.contact_title_field: title}
            )
        before = len(emulator.requests)
        emulator.faults.rate_limit(times=4, retry_after=0.5)
        report = await sync_now(self.system, TENANT, self.report.integration_id)
        limited = [r for r in emulator.requests[before:] if r.status == 429]
        if not report.ok:
            raise StepFailed("; ".join(report.errors))
        if not limited:
            raise StepFailed("the emulator served no 429")
        stale = []
        for record in contacts:
            shard = await self._shard_of(profile.contact_entity, record)
            if shard is None or shard.structured_data.get("title") != title:
                stale.append(record)
        if stale:
            raise StepFailed(f"{len(stale)} changed records did not arrive")
        self.report.facts["rate_limit"] = {
            "429s": len(limited),
            "changed": len(contacts),
            "sync": report.doc(),
        }
        result.figures = {
            "429s served": len(limited),
            "Retry-After": "0.5s",
            "changed records synced": f"{len(contacts)}/{len(contacts)}",
            "incremental sync": f"{report.seconds:.1f}s, {report.counts['fetched']} fetched",
        }

    # -- the end ---------------------------------------------------------------------------

    def summary(self) -> None:
        steps = self.report.steps
        passed = sum(1 for s in steps if s.ok)
        colour = "green" if self.report.ok else "red"
        self.console.print(
            f"\n[bold {colour}]{passed}/{len(steps)} steps succeeded[/bold {colour}]"
        )
        if not steps or not steps[0].ok:
            return
        base = self.report.base_url
        lines = [
            "",
            f"  API docs   {base}/docs",
            f"  service    {base}   (health: {base}/healthz)",
            f"  emulator   {self.report.emulator_url}",
            f"  tenant     {TENANT}   integration {self.report.integration_id}",
            f"  dev token  tenant admin of '{TENANT}', valid 24 h:",
            "",
            f"export TOKEN={self.report.token}",
            "",
            f'  curl -s -H "Authorization: Bearer $TOKEN" {base}/integrations',
            f"  curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/shards?type=c_company&limit=3'",
            f"  CASTIEL_DATA_DIR={self.options.data_dir} castiel-sync executions list "
            f"--tenant {TENANT}",
        ]
        for line in lines:
            self.console.print(line, soft_wrap=True, markup=False)

    async def shutdown(self) -> None:
        self.stop.set()
        if self.http is not None:
            await self.http.aclose()
        for server in reversed(self._servers):
            await server.stop()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=30)
            except Exception:  # noqa: S110 - shutting down; the steps already reported
                pass
        if self._engine is not None:
            await self._engine.dispose()


def _quiet_logging(settings: Settings) -> None:
    try:
        from castiel_sync.logging import configure_logging
    except ImportError:  # pragma: no cover
        return
    configure_logging(settings)


async def run_demo(options: DemoOptions, console: Console | None = None) -> DemoReport:
    return await Demo(options, console).run()


__all__ = ["DemoOptions", "DemoReport", "StepResult", "prepare_data_dir", "run_demo"]
