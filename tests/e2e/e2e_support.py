"""The end-to-end harness (not a test module): the real API app, the embedded bus, the
real outbox relay and workers, and one provider emulator with its emulated OAuth server.

Nothing here re-implements the system. The pieces are wired as ``serve`` wires them
(:mod:`castiel_sync.runtime.process`), with the seams that exist for hosts and tests:

- ``create_app(settings, oauth_transport=...)``: the API's token exchange reaches the
  emulated OAuth server;
- ``engine_registry(..., refresher=TokenRefresher(..., transport=...), adapter_factory=...)``:
  the workers' token refresher reaches the same OAuth server, and every adapter the
  engine builds (the installed one, from the entry points) is configured with the
  emulator's transport and its fake clock (``HttpAdapter.configure``), so retries and
  Retry-After waits advance fake time and never really sleep;
- :meth:`E2E.run_until_idle` alternates the real ``OutboxRelay.run_once`` and the real
  ``Worker.process`` on leases the bus hands out, until neither has anything left.

The emulator's clock starts at the real current time (to the second) and only moves
when a test advances it: webhook signatures carry timestamps that the receiver checks
against the real clock (HubSpot v3 and Standard Webhooks allow 5 minutes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.api.app import create_app
from castiel_sync.api.auth import Role, mint_token
from castiel_sync.bus import OutboxRelay, Router, open_bus
from castiel_sync.bus.base import Bus
from castiel_sync.runtime.engine import engine_registry
from castiel_sync.runtime.token_refresher import TokenRefresher
from castiel_sync.runtime.workers import INBOUND_QUEUES, OUTBOUND_QUEUES, Worker
from castiel_sync.settings import Settings
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.sync import default_adapter_factory
from castiel_sync.testing import FakeClock
from castiel_sync.testing._kit import ProviderEmulator
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator, dataverse_oauth
from castiel_sync.testing.emulators.hubspot import HubSpotEmulator, hubspot_oauth
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator, salesforce_oauth
from castiel_sync.testing.oauth import OAuthEmulator

JWT_SECRET = "e2e-jwt-secret-" + "k" * 32
PUBLIC_URL = "https://castiel.example.test"
API_BASE = "http://api.test"
CLIENT_ID = "castiel-e2e-client"
CLIENT_SECRET = "e2e-client-secret-7Hq2"
TENANT = "tenanta"
#: The tenant's maxRecordsPerSync (set by the super admin): full runs take several jobs.
RECORDS_PER_JOB = 2

#: Generic field -> the Castiel path of the providers' default company mapping.
CASTIEL_PATHS = {
    "name": "name",
    "website": "website",
    "phone": "phone",
    "city": "address.city",
    "country": "address.country",
    "employees": "employees",
}


def now_to_the_second() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- what differs per provider ----------------------------------------------------------


@dataclass
class ProviderCase:
    """One provider: how its emulators are built, seeded, changed and read back.

    ``external_names`` maps the generic fields to the provider's own field names (the
    catalog's default company mapping); ``to_castiel`` converts an external value to what
    the shard must hold (written here by hand, not taken from the mapping code)."""

    provider: str
    entity: str
    external_names: dict[str, str]
    template_values: dict[str, str]
    #: Whether every refresh returns a new refresh token.
    rotates: bool
    #: Whether a used refresh token stays valid (Microsoft identity platform).
    keeps_used_refresh_tokens: bool
    build: Callable[[FakeClock], tuple[OAuthEmulator, ProviderEmulator]]
    seed: Callable[[Any, dict[str, Any]], str]
    change: Callable[[Any, str, dict[str, Any]], None]
    read: Callable[[Any, str], dict[str, Any]]
    webhook_secret: Callable[[Any], str]
    #: How the provider writes values (HubSpot properties are strings).
    external_value: Callable[[str, Any], Any] = lambda _field, value: value
    to_castiel: Callable[[str, Any], Any] = lambda _field, value: value

    def external(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Generic fields as the provider's own record values."""
        return {self.external_names[k]: self.external_value(k, v) for k, v in fields.items()}


def _salesforce_with(rotate: bool) -> Callable[[FakeClock], tuple[OAuthEmulator, Any]]:
    """Rotation is opt-in for a connected app: off, a refresh answers without a refresh
    token (the stored one stays); on, each refresh returns a new one and the old dies."""

    def build(clock: FakeClock) -> tuple[OAuthEmulator, ProviderEmulator]:
        oauth = salesforce_oauth(
            clock=clock,
            instance_url="https://acme.my.salesforce.com",
            login_url="https://login.salesforce.com",
            rotate_refresh_tokens=rotate,
        )
        return oauth, SalesforceEmulator(
            clock=clock, oauth=oauth, base_url="https://acme.my.salesforce.com"
        )

    return build


def _dynamics(clock: FakeClock) -> tuple[OAuthEmulator, ProviderEmulator]:
    org = "https://contoso.crm.dynamics.com"
    oauth = dataverse_oauth(clock=clock, tenant="contoso.onmicrosoft.com", resource=org)
    return oauth, Dynamics365Emulator(
        clock=clock, oauth=oauth, base_url=org, tenant="contoso.onmicrosoft.com"
    )


def _hubspot(clock: FakeClock) -> tuple[OAuthEmulator, ProviderEmulator]:
    oauth = hubspot_oauth(clock, base_url="https://api.hubapi.com")
    # HubSpot signs webhooks with the app's client secret.
    return oauth, HubSpotEmulator(clock=clock, oauth=oauth, webhook_secret=CLIENT_SECRET)


def _store_read(entity: str) -> Callable[[Any, str], dict[str, Any]]:
    def read(emulator: Any, record_id: str) -> dict[str, Any]:
        record = emulator.store[entity].get(record_id)
        assert record is not None, f"{entity} {record_id} is not in the emulator"
        return dict(record.data)

    return read


CASES: dict[str, ProviderCase] = {
    "salesforce": ProviderCase(
        provider="salesforce",
        entity="Account",
        external_names={
            "name": "Name",
            "website": "Website",
            "phone": "Phone",
            "city": "BillingCity",
            "country": "BillingCountry",
            "employees": "NumberOfEmployees",
        },
        template_values={"login_host": "login.salesforce.com"},
        rotates=False,
        keeps_used_refresh_tokens=True,
        build=_salesforce_with(rotate=False),
        seed=lambda emu, data: emu.seed("Account", data),
        change=lambda emu, rid, changes: emu.touch("Account", rid, changes),
        read=lambda emu, rid: emu.row("Account", rid, include_deleted=False),
        webhook_secret=lambda emu: emu.webhook_secret,
    ),
    "dynamics365": ProviderCase(
        provider="dynamics365",
        entity="account",
        external_names={
            "name": "name",
            "website": "websiteurl",
            "phone": "telephone1",
            "city": "address1_city",
            "country": "address1_country",
            "employees": "numberofemployees",
        },
        template_values={"tenant": "contoso.onmicrosoft.com", "org": "contoso", "region": "crm"},
        rotates=True,
        keeps_used_refresh_tokens=True,
        build=_dynamics,
        seed=lambda emu, data: emu.store["account"].create(data).id,
        change=lambda emu, rid, changes: emu.store["account"].update(rid, changes),
        read=_store_read("account"),
        webhook_secret=lambda emu: emu.webhook_secret,
    ),
    "hubspot": ProviderCase(
        provider="hubspot",
        entity="companies",
        external_names={
            "name": "name",
            "website": "website",
            "phone": "phone",
            "city": "city",
            "country": "country",
            "employees": "numberofemployees",
        },
        template_values={},
        rotates=False,
        keeps_used_refresh_tokens=True,
        build=_hubspot,
        seed=lambda emu, data: emu.store["companies"].create(data).id,
        change=lambda emu, rid, changes: emu.store["companies"].update(rid, changes),
        read=_store_read("companies"),
        webhook_secret=lambda emu: emu.webhook_secret,
        external_value=lambda _f, v: None if v is None else str(v),
        to_castiel=lambda f, v: int(v) if f == "employees" and v is not None else v,
    ),
}


CASES["salesforce_rotating"] = replace(
    CASES["salesforce"],
    rotates=True,
    keeps_used_refresh_tokens=False,
    build=_salesforce_with(rotate=True),
)


def company(i: int) -> dict[str, Any]:
    """The generic fields of seeded company number ``i``."""
    return {
        "name": f"Company {i:02d}",
        "website": f"https://company{i:02d}.example.com",
        "phone": f"+47 555 {i:04d}",
        "city": ["Oslo", "Bergen", "Trondheim"][i % 3],
        "country": "Norway",
        "employees": 10 * (i + 1),
    }


def get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# -- the system, in process ---------------------------------------------------------------


@dataclass
class E2E:
    case: ProviderCase
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    clock: FakeClock
    oauth: OAuthEmulator
    emulator: Any
    bus: Bus
    relay: OutboxRelay
    worker: Worker
    refresher: TokenRefresher
    integration_id: str = ""
    #: Adapters the engine built, in order (their fake clocks record the waits).
    adapters: list[Any] = field(default_factory=list)

    # -- callers ---------------------------------------------------------------------------

    def auth(self, role: Role = Role.TENANT_ADMIN, tenant: str = TENANT) -> dict[str, str]:
        user = "root" if role == Role.SUPER_ADMIN else "alice"
        token = mint_token(self.settings, tenant_id=tenant, role=role, user_id=user)
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.auth()

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.ctx.engine
        return engine

    @property
    def vault(self) -> Any:
        return self.app.state.ctx.vault

    # -- the runtime, step by step ---------------------------------------------------------

    async def run_until_idle(self, max_rounds: int = 200) -> int:
        """Relay the outbox and let the workers handle every ready message until neither
        has anything left; returns how many messages were handled."""
        handled = 0
        for _ in range(max_rounds):
            relayed = await self.relay.run_once()
            leases = await self.bus.receive(
                self.worker.queues,
                lease_seconds=self.worker.lease_seconds,
                max_messages=self.worker.concurrency,
            )
            # Concurrently, as ``Worker.run`` does with the leases of one receive.
            await asyncio.gather(*(self.worker.process(lease) for lease in leases))
            handled += len(leases)
            if not relayed and not leases:
                return handled
        raise AssertionError(f"the runtime was still busy after {max_rounds} rounds")

    async def queue_depths(self) -> dict[str, int]:
        from castiel_sync.bus import ALL_QUEUES

        return {q: await self.bus.depth(q) for q in ALL_QUEUES}

    # -- API steps -------------------------------------------------------------------------

    async def connect(self) -> dict[str, Any]:
        """Super admin sets the OAuth client; the tenant admin creates the integration,
        authorizes through the emulated OAuth server (PKCE) and comes back through the
        callback, sets the webhook secret and activates."""
        c, case = self.client, self.case
        put = await c.put(
            f"/providers/{case.provider}/oauth-client",
            json={"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET},
            headers=self.auth(Role.SUPER_ADMIN, tenant="system"),
        )
        assert put.status_code == 204, put.text
        # A small per-sync budget: a run goes on in follow-up jobs through the outbox.
        limits = await c.patch(
            f"/admin/tenants/{TENANT}/limits",
            json={"maxRecordsPerSync": RECORDS_PER_JOB},
            headers=self.auth(Role.SUPER_ADMIN, tenant="system"),
        )
        assert limits.status_code == 200, limits.text
        created = await c.post(
            "/integrations",
            json={
                "providerId": case.provider,
                "name": f"{case.provider} sales",
                "instanceId": "sales",
                "syncDirection": "bidirectional",
                "writeBack": {"enabled": True, "entities": [case.entity]},
            },
            headers=self.admin,
        )
        assert created.status_code == 201, created.text
        self.integration_id = created.json()["id"]
        iid = self.integration_id

        started = await c.post(
            f"/integrations/{iid}/oauth/authorize",
            json={"scope": "tenant", "templateValues": case.template_values},
            headers=self.admin,
        )
        assert started.status_code == 200, started.text
        authorize_url = started.json()["authorizationUrl"]
        query = parse_qs(urlsplit(authorize_url).query)
        assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
        async with httpx.AsyncClient(transport=self.oauth.transport()) as browser:
            redirect = await browser.get(authorize_url)
        assert redirect.status_code == 302, redirect.text
        location = redirect.headers["location"]
        assert location.startswith(PUBLIC_URL + "/oauth/callback?"), location
        back = parse_qs(urlsplit(location).query)
        assert "error" not in back, back
        callback = await c.get(
            "/oauth/callback", params={"code": back["code"][0], "state": back["state"][0]}
        )
        assert callback.status_code == 200, callback.text
        assert callback.json()["status"] == "connected"

        secret = await c.put(
            f"/integrations/{iid}/webhook-secret",
            json={"secret": case.webhook_secret(self.emulator)},
            headers=self.admin,
        )
        assert secret.status_code == 204, secret.text
        activated = await c.post(f"/integrations/{iid}/activate", headers=self.admin)
        assert activated.status_code == 200, activated.text
        assert activated.json()["status"] == "active"
        return dict(activated.json())

    async def sync_now(self, sync_type: str) -> str:
        response = await self.client.post(
            f"/integrations/{self.integration_id}/sync",
            json={"syncType": sync_type},
            headers=self.admin,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["requestId"])

    async def integration(self) -> dict[str, Any]:
        got = await self.client.get(f"/integrations/{self.integration_id}", headers=self.admin)
        assert got.status_code == 200, got.text
        return dict(got.json())

    async def executions(self, entity: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 500}
        if entity is not None:
            params["entity"] = entity
        got = await self.client.get(
            f"/integrations/{self.integration_id}/executions", params=params, headers=self.admin
        )
        assert got.status_code == 200, got.text
        return list(got.json())

    async def shards_by_external_id(self) -> dict[str, dict[str, Any]]:
        """Every company shard this integration holds, full, keyed by the external id."""
        listed: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {
                "type": "c_company",
                "integrationId": self.integration_id,
                "limit": 500,
            }
            if after:
                params["afterId"] = after
            page = await self.client.get("/shards", params=params, headers=self.admin)
            assert page.status_code == 200, page.text
            rows = page.json()
            listed += rows
            if len(rows) < 500:
                break
            after = rows[-1]["id"]
        out: dict[str, dict[str, Any]] = {}
        for row in listed:
            full = await self.client.get(f"/shards/{row['id']}", headers=self.admin)
            assert full.status_code == 200, full.text
            shard = full.json()
            rels = [
                r
                for r in shard["externalRelationships"]
                if r["integrationId"] == self.integration_id and r["entity"] == self.case.entity
            ]
            assert len(rels) == 1, shard
            assert rels[0]["externalId"] not in out, "two shards for one record"
            out[rels[0]["externalId"]] = shard
        return out

    async def stored_token(self) -> dict[str, Any]:
        import json

        integration = await self.integration()
        name = integration["credentialSecretName"]
        token: dict[str, Any] = json.loads(await self.vault.get(name))
        return token

    # -- comparing both sides --------------------------------------------------------------

    def external_ids(self) -> list[str]:
        store = self.emulator.store[self.case.entity]
        return [r.id for r in store.all()]

    def expected_shard_fields(self, record_id: str) -> dict[str, Any]:
        """What the shard of ``record_id`` must hold for each mapped field, converted from
        the emulator's record by the hand-written rule of the case."""
        data = self.case.read(self.emulator, record_id)
        return {
            CASTIEL_PATHS[f]: self.case.to_castiel(f, data.get(name))
            for f, name in self.case.external_names.items()
        }

    async def assert_both_sides_equal(self) -> dict[str, dict[str, Any]]:
        shards = await self.shards_by_external_id()
        ids = self.external_ids()
        assert sorted(shards) == sorted(ids), (
            sorted(shards),
            sorted(ids),
        )
        for record_id in ids:
            shard = shards[record_id]
            expected = self.expected_shard_fields(record_id)
            actual = {p: get_path(shard["structuredData"], p) for p in expected}
            assert actual == expected, (record_id, actual, expected)
        return shards


def make_settings(db_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        public_url=PUBLIC_URL,
    )


class Built:
    """What :func:`build` opens and :meth:`close` closes."""

    def __init__(self, e2e: E2E, lifespan: Any) -> None:
        self.e2e = e2e
        self.lifespan = lifespan

    async def close(self) -> None:
        await self.e2e.client.aclose()
        await self.e2e.bus.close()
        await self.lifespan.__aexit__(None, None, None)


async def build(case: ProviderCase, db_url: str, data_dir: Path) -> Built:
    """The app (lifespan run), the embedded bus, relay, token refresher and one worker on
    every work queue, wired to ``case``'s emulators."""
    clock = FakeClock(now_to_the_second())
    oauth, emulator = case.build(clock)
    oauth.register_client(CLIENT_ID, CLIENT_SECRET, [PUBLIC_URL + "/oauth/callback"])
    settings = make_settings(db_url, data_dir)
    app = create_app(settings, run_migrations=False, oauth_transport=oauth.transport())
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    ctx = app.state.ctx
    bus = open_bus(settings, ctx.engine)
    await bus.start()
    adapters: list[Any] = []
    provider_transport = emulator.transport()

    def adapter_factory(integration: IntegrationRow) -> Any:
        adapter = default_adapter_factory(integration)  # the installed adapter
        adapter.configure(transport=provider_transport, clock=clock)
        adapters.append(adapter)
        return adapter

    refresher = TokenRefresher(ctx.engine, ctx.vault, ctx.catalog, transport=oauth.transport())
    registry = engine_registry(
        ctx.engine,
        ctx.vault,
        ctx.catalog,
        settings,
        refresher=refresher,
        adapter_factory=adapter_factory,
    )
    worker = Worker(
        bus,
        registry,
        engine=ctx.engine,
        settings=settings,
        queues=INBOUND_QUEUES + OUTBOUND_QUEUES,
        # A job over the tenant's concurrent-sync limit waits as a delayed copy on the
        # bus, whose delays are real time: here it is ready at the next round instead.
        capacity_retry=0.0,
    )
    relay = OutboxRelay(ctx.engine, Router(bus))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API_BASE)
    e2e = E2E(
        case=case,
        app=app,
        client=client,
        settings=settings,
        clock=clock,
        oauth=oauth,
        emulator=emulator,
        bus=bus,
        relay=relay,
        worker=worker,
        refresher=refresher,
        adapters=adapters,
    )
    return Built(e2e, lifespan)


# -- the scenario ---------------------------------------------------------------------------

SEEDED = 7


async def new_executions(e: E2E, seen: set[str]) -> list[dict[str, Any]]:
    """The entity's executions that were not in ``seen`` (and adds them to it)."""
    fresh = [x for x in await e.executions(e.case.entity) if x["id"] not in seen]
    seen.update(x["id"] for x in fresh)
    return fresh


def totals(executions: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for execution in executions:
        for key, value in execution["counts"].items():
            out[key] = out.get(key, 0) + int(value)
    return out


async def change_records(e: E2E, changes: dict[str, dict[str, Any]]) -> None:
    """Edit records in the provider as a user there would (its modification time moves)."""
    e.clock.advance(10)
    for record_id, fields in changes.items():
        e.case.change(e.emulator, record_id, e.case.external(fields))
    e.clock.advance(1)


async def scenario(e: E2E) -> None:
    case, emu = e.case, e.emulator
    ids = [case.seed(emu, case.external(company(i))) for i in range(SEEDED)]
    e.clock.advance(5)
    seen: set[str] = set()

    # 1. Connect: OAuth client, integration, authorize + callback, webhook secret, activate.
    await e.connect()
    assert e.oauth.token_call_count("authorization_code") == 1

    # 2. Sync Now, full: every record becomes a shard with the mapped fields.
    await e.sync_now("full")
    await e.run_until_idle()
    shards = await e.assert_both_sides_equal()
    assert len(shards) == SEEDED
    full = await new_executions(e, seen)
    assert full and all(x["status"] == "succeeded" for x in full), full
    assert {x["syncType"] for x in full} == {"full"}
    counts = totals(full)
    assert (counts.get("created"), counts.get("failed", 0)) == (SEEDED, 0), counts
    assert len(full) >= SEEDED // RECORDS_PER_JOB, full  # the run went on in follow-ups
    versions = {rid: s["version"] for rid, s in shards.items()}

    # 3. Change 3 records upstream, Sync Now incremental: exactly those are updated.
    changed = {ids[1]: {"name": "Renamed 1", "city": "Tromsø"},
               ids[2]: {"phone": "+47 999 0002"},
               ids[3]: {"employees": 4242, "country": "Sweden"}}  # fmt: skip
    await change_records(e, changed)
    await e.sync_now("incremental")
    await e.run_until_idle()
    incremental = await new_executions(e, seen)
    assert incremental and all(x["status"] == "succeeded" for x in incremental), incremental
    assert {x["syncType"] for x in incremental} == {"incremental"}
    counts = totals(incremental)
    assert (counts.get("updated"), counts.get("created", 0), counts.get("failed", 0)) == (
        3,
        0,
        0,
    ), counts
    shards = await e.assert_both_sides_equal()
    bumped = {rid for rid, s in shards.items() if s["version"] != versions[rid]}
    assert bumped == set(changed), (bumped, set(changed))
    versions = {rid: s["version"] for rid, s in shards.items()}

    # 4. A signed webhook for a changed record: 202 at once, applied after the worker runs.
    await change_records(e, {ids[4]: {"phone": "+47 111 0004", "city": "Bodø"}})
    record = emu.store[case.entity].get(ids[4])
    assert record is not None
    url = f"{API_BASE}/webhooks/{case.provider}/{e.integration_id}"
    answer = await emu.send_webhook(e.client, emu.webhook_payload(case.entity, record, "updated"),
                                    url=url)  # fmt: skip
    assert answer.status_code == 202, answer.text
    before = (await e.shards_by_external_id())[ids[4]]
    assert before["version"] == versions[ids[4]]  # stored and enqueued, not applied yet
    await e.run_until_idle()
    shards = await e.assert_both_sides_equal()
    assert get_path(shards[ids[4]]["structuredData"], "address.city") == "Bodø"
    assert shards[ids[4]]["version"] == versions[ids[4]] + 1
    bumped = {rid for rid, s in shards.items() if s["version"] != versions[rid]}
    assert bumped == {ids[4]}, bumped
    hooked = await new_executions(e, seen)
    assert [(x["trigger"], x["status"]) for x in hooked] == [("webhook", "succeeded")], hooked
    assert totals(hooked).get("updated") == 1, hooked
    versions = {rid: s["version"] for rid, s in shards.items()}

    # 5. A user edits a shard through the API: written back, reverse-mapped, upstream.
    target = shards[ids[0]]
    writes_before = len([r for r in emu.requests if r.method in {"PATCH", "POST", "PUT"}])
    patched = await e.client.patch(
        f"/shards/{target['id']}",
        json={"changes": {"address.city": "Stavanger", "employees": 77}},
        headers={**e.admin, "If-Match": f'"{target["version"]}"'},
    )
    assert patched.status_code == 200, patched.text
    await e.run_until_idle()
    upstream = case.read(emu, ids[0])
    assert upstream[case.external_names["city"]] == case.external_value("city", "Stavanger")
    assert upstream[case.external_names["employees"]] == case.external_value("employees", 77)
    assert len([r for r in emu.requests if r.method in {"PATCH", "POST", "PUT"}]) > writes_before
    rels = await e.client.get(f"/shards/{target['id']}/relationships", headers=e.admin)
    assert [r["syncStatus"] for r in rels.json()] == ["synced"], rels.text
    await e.assert_both_sides_equal()

    # 6. The access token expires in the middle of a sync: one refresh, the sync completes.
    versions = {rid: s["version"] for rid, s in (await e.shards_by_external_id()).items()}
    old = await e.stored_token()
    refreshes = e.oauth.token_call_count("refresh_token")
    await change_records(e, {ids[5]: {"name": "Expired Token Co"}, ids[1]: {"city": "Narvik"}})
    emu.faults.expire_tokens(after=1)
    rejected_before = sum(1 for r in emu.requests if r.status == 401)
    await e.sync_now("incremental")
    await e.run_until_idle()
    # Jobs running side by side may each meet the dead token; one refresh serves them all.
    assert sum(1 for r in emu.requests if r.status == 401) > rejected_before
    assert e.oauth.token_call_count("refresh_token") == refreshes + 1
    fresh = await e.stored_token()
    assert fresh["access_token"] != old["access_token"]
    assert e.oauth.refresh_token_is_valid(fresh["refresh_token"])
    if case.rotates:
        assert fresh["refresh_token"] != old["refresh_token"]
    else:  # kept: the provider answered without one, or with the same one
        assert fresh["refresh_token"] == old["refresh_token"]
    assert fresh.get("instance_url") == old.get("instance_url")
    assert (await e.integration())["status"] == "active"
    shards = await e.assert_both_sides_equal()
    bumped = {rid for rid, s in shards.items() if s["version"] != versions[rid]}
    assert bumped == {ids[5], ids[1]}, bumped
    if case.rotates and not case.keeps_used_refresh_tokens:
        assert not e.oauth.refresh_token_is_valid(old["refresh_token"])
    connections = await e.client.get(
        f"/integrations/{e.integration_id}/connections", headers=e.admin
    )
    assert [x["status"] for x in connections.json()] == ["active"], connections.text
    expired = await new_executions(e, seen)
    assert expired and all(x["status"] == "succeeded" for x in expired), expired
    assert totals(expired).get("updated") == 2, totals(expired)
    await e.assert_both_sides_equal()

    versions = {rid: s["version"] for rid, s in shards.items()}

    # 7. A burst of 429s with Retry-After: absorbed on the fake clock, the sync completes.
    await change_records(e, {ids[2]: {"name": "Rate Limited Inc"}})
    slept = len(e.clock.sleeps)
    emu.faults.rate_limit(times=3, retry_after=2)
    await e.sync_now("incremental")
    await e.run_until_idle()
    assert sum(1 for r in emu.requests if r.fault == "rate_limit") == 3
    assert sum(e.clock.sleeps[slept:]) >= 6, e.clock.sleeps[slept:]
    limited = await new_executions(e, seen)
    assert limited and all(x["status"] == "succeeded" for x in limited), limited
    assert totals(limited).get("updated") == 1, totals(limited)
    shards = await e.assert_both_sides_equal()
    bumped = {rid for rid, s in shards.items() if s["version"] != versions[rid]}
    assert bumped == {ids[2]}, bumped

    # 8. Both sides equal, field by field, and nothing left in any queue.
    await e.assert_both_sides_equal()
    assert set((await e.queue_depths()).values()) == {0}, await e.queue_depths()
