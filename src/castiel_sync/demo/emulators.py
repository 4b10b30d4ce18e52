"""The bundled provider emulators as the demo runs them: on a loopback port, on the wall
clock, with their OAuth server beside them, seeded with realistic records.

A :class:`ProviderProfile` says, per provider, how to build the emulator and its OAuth
server, which records to seed, and how a user edits a record on the provider's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.types import Receive, Scope, Send

from castiel_sync.testing import FakeClock, OAuthEmulator, ProviderEmulator


class WallClock(FakeClock):
    """The kit's clock interface on real time: records get real modification times and a
    slow response really waits."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic() - self._t0

    def advance(self, seconds: float) -> datetime:
        return self.now()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(max(0.0, seconds))


class EmulatorApp:
    """One ASGI app on one port: the OAuth server's paths, else the provider API."""

    def __init__(self, api: ProviderEmulator, oauth: OAuthEmulator) -> None:
        self.api = api
        self.oauth = oauth
        self._oauth_paths = {oauth.authorize_path, oauth.token_path}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._oauth_paths:
            await self.oauth(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self.api(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` if it can be bound now, else a free port the OS picks."""
    for candidate in (preferred, 0) if preferred else (0,):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            port: int = sock.getsockname()[1]
            return port
    raise OSError("no free port")


class LoopbackServer:
    """uvicorn serving an ASGI app on loopback inside the running event loop (signals
    stay with the caller)."""

    def __init__(self, app: Any, port: int, host: str = "127.0.0.1") -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

            def install_signal_handlers(self) -> None:  # older uvicorn
                return None

        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="error",
            access_log=False,
            log_config=None,
            lifespan="on",
        )
        self.server = Server(config)
        self.url = f"http://{host}:{port}"
        self._task: asyncio.Task[None] | None = None

    async def start(self, within: float = 20.0) -> None:
        self._task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + within
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise RuntimeError(f"the server at {self.url} stopped at start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server at {self.url} did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=10)


# -- realistic records -----------------------------------------------------------------------

_PREFIX = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Wonka",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Aperture",
    "Gringotts",
    "Oscorp",
    "Massive",
    "Nimbus",
    "Blue Harbor",
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Litware",
    "Proseware",
]
_SUFFIX = [
    "Industries",
    "Corp",
    "Labs",
    "Systems",
    "Holdings",
    "Logistics",
    "Foods",
    "Energy",
    "Analytics",
    "Robotics",
    "Health",
    "Capital",
    "Media",
    "Retail",
]
_INDUSTRY = [
    "Technology",
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Finance",
    "Energy",
    "Media",
    "Transportation",
    "Education",
    "Hospitality",
]
_CITY = [
    ("Oslo", "Norway"),
    ("Paris", "France"),
    ("Berlin", "Germany"),
    ("Austin", "USA"),
    ("Toronto", "Canada"),
    ("Lyon", "France"),
    ("Bergen", "Norway"),
    ("Madrid", "Spain"),
    ("Seattle", "USA"),
    ("Dublin", "Ireland"),
    ("Munich", "Germany"),
    ("Boston", "USA"),
]
_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Katherine",
    "John",
    "Hedy",
    "Donald",
    "Sophie",
    "Guido",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Johnson",
    "McCarthy",
    "Lamarr",
    "Knuth",
    "Wilson",
    "van Rossum",
]
_TITLE = [
    "CEO",
    "CTO",
    "VP Sales",
    "Head of Operations",
    "Procurement Manager",
    "Engineer",
    "Account Director",
    "CFO",
    "Product Manager",
]
_DEAL = ["Renewal", "Expansion", "New deal", "Pilot"]
_STAGE = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
]


def _slug(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


@dataclass
class Seeded:
    """What was seeded: entity -> external ids."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def summary(self) -> str:
        return ", ".join(f"{len(v)} {k}" for k, v in self.ids.items())


# -- profiles -------------------------------------------------------------------------------


@dataclass
class ProviderProfile:
    """How the demo drives one provider's emulator."""

    provider_id: str
    display: str
    #: (clock, the emulator's URL, the OAuth app's client secret) -> (API, OAuth server)
    build: Callable[[WallClock, str, str], tuple[ProviderEmulator, OAuthEmulator]]
    seed: Callable[[ProviderEmulator, int], Seeded]
    #: entity whose records the webhook, write-back and conflict steps edit
    company_entity: str
    #: entity whose records the 429 step edits
    contact_entity: str
    #: Castiel field -> provider field, for the company edits: "phone", "website" and
    #: "other" (a third field, only Castiel's side edits it in the conflict step)
    company_fields: dict[str, str]
    other_field: str
    contact_title_field: str
    #: change a record as a user of the provider would
    edit: Callable[[ProviderEmulator, str, str, dict[str, Any]], None]
    read: Callable[[ProviderEmulator, str, str], dict[str, Any]]
    #: the signed webhook body announcing that change (None: the provider has none)
    webhook: Callable[[ProviderEmulator, str, str, dict[str, Any]], Any] | None = None
    #: the connection's template values (POST .../oauth/authorize ``templateValues``)
    template_values: dict[str, str] = field(default_factory=dict)


def _salesforce_build(
    clock: WallClock, base_url: str, client_secret: str
) -> tuple[ProviderEmulator, OAuthEmulator]:
    from castiel_sync.testing.emulators.salesforce import SalesforceEmulator, salesforce_oauth

    oauth = salesforce_oauth(clock=clock, instance_url=base_url, login_url=base_url)
    return SalesforceEmulator(clock=clock, oauth=oauth, base_url=base_url), oauth


def _salesforce_seed(emulator: ProviderEmulator, records: int) -> Seeded:
    sf: Any = emulator
    rng = random.Random(2026)  # noqa: S311 - demo data, not security
    n_accounts = max(4, records // 4)
    n_contacts = max(4, records // 2)
    n_opps = max(2, records - n_accounts - n_contacts)
    seeded = Seeded({"Account": [], "Contact": [], "Opportunity": []})
    names: set[str] = set()
    for _ in range(n_accounts):
        name = f"{rng.choice(_PREFIX)} {rng.choice(_SUFFIX)}"
        while name in names:
            name = f"{rng.choice(_PREFIX)} {rng.choice(_SUFFIX)} {len(names)}"
        names.add(name)
        city, country = rng.choice(_CITY)
        seeded.ids["Account"].append(
            sf.seed(
                "Account",
                {
                    "Name": name,
                    "Industry": rng.choice(_INDUSTRY),
                    "Website": f"https://{_slug(name)}.example",
                    "Phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                    "BillingCity": city,
                    "BillingCountry": country,
                    "NumberOfEmployees": rng.choice([12, 45, 120, 800, 2500, 14000]),
                    "Description": f"{name} — customer since {rng.randint(2009, 2025)}",
                },
            )
        )
    accounts = seeded.ids["Account"]
    for _ in range(n_contacts):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        account = rng.choice(accounts)
        domain = _slug(sf.row("Account", account)["Name"])
        seeded.ids["Contact"].append(
            sf.seed(
                "Contact",
                {
                    "FirstName": first,
                    "LastName": last,
                    "AccountId": account,
                    "Email": f"{_slug(first)}.{_slug(last)}@{domain}.example",
                    "Title": rng.choice(_TITLE),
                    "Phone": f"+1 555 {rng.randint(100, 999)} 0{rng.randint(100, 999)}",
                },
            )
        )
    today = date.today()
    for _ in range(n_opps):
        account = rng.choice(accounts)
        stage = rng.choice(_STAGE)
        seeded.ids["Opportunity"].append(
            sf.seed(
                "Opportunity",
                {
                    "Name": f"{sf.row('Account', account)['Name']} — {rng.choice(_DEAL)}",
                    "StageName": stage,
                    "Amount": float(rng.randrange(5_000, 500_000, 500)),
                    "CloseDate": (today + timedelta(days=rng.randint(-60, 180))).isoformat(),
                    "Probability": float(rng.choice([10, 20, 40, 60, 80, 100])),
                    "AccountId": account,
                },
            )
        )
    return seeded


def _salesforce_edit(
    emulator: ProviderEmulator, entity: str, record_id: str, fields: dict[str, Any]
) -> None:
    emulator.touch(entity, record_id, fields)  # type: ignore[attr-defined]


def _salesforce_read(emulator: ProviderEmulator, entity: str, record_id: str) -> dict[str, Any]:
    row: dict[str, Any] = emulator.row(entity, record_id)  # type: ignore[attr-defined]
    return row


def _salesforce_webhook(
    emulator: ProviderEmulator, entity: str, record_id: str, fields: dict[str, Any]
) -> Any:
    # A Change Data Capture event, relayed signed with Standard Webhooks.
    return emulator.change_event(entity, [record_id], "UPDATE", changed_fields=fields)  # type: ignore[attr-defined]


def _hubspot_build(
    clock: WallClock, base_url: str, client_secret: str
) -> tuple[ProviderEmulator, OAuthEmulator]:
    from castiel_sync.testing.emulators.hubspot import HubSpotEmulator, hubspot_oauth

    # HubSpot's token response names no API host; the demo's emulator adds its own address
    # (as Salesforce's instance_url does) so the adapter calls the emulator, not hubapi.com.
    oauth = hubspot_oauth(clock, base_url=base_url, extra_token_fields={"instance_url": base_url})
    # HubSpot signs webhooks with the app's client secret.
    emulator = HubSpotEmulator(
        clock=clock, oauth=oauth, base_url=base_url, webhook_secret=client_secret
    )
    return emulator, oauth


def _hubspot_seed(emulator: ProviderEmulator, records: int) -> Seeded:
    rng = random.Random(2026)  # noqa: S311 - demo data, not security
    n_companies = max(4, records // 4)
    n_contacts = max(4, records // 2)
    n_deals = max(2, records - n_companies - n_contacts)
    seeded = Seeded({"companies": [], "contacts": [], "deals": []})
    store = emulator.store
    for i in range(n_companies):
        name = f"{rng.choice(_PREFIX)} {rng.choice(_SUFFIX)} {i + 1}"
        city, country = rng.choice(_CITY)
        seeded.ids["companies"].append(
            store["companies"]
            .create(
                {
                    "name": name,
                    "domain": f"{_slug(name)}.example",
                    "website": f"https://{_slug(name)}.example",
                    "industry": rng.choice(_INDUSTRY).upper(),
                    "phone": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                    "city": city,
                    "country": country,
                    "numberofemployees": str(rng.choice([12, 45, 120, 800, 2500])),
                }
            )
            .id
        )
    for _ in range(n_contacts):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        seeded.ids["contacts"].append(
            store["contacts"]
            .create(
                {
                    "firstname": first,
                    "lastname": last,
                    "email": f"{_slug(first)}.{_slug(last)}.{rng.randint(1, 9999)}@example.com",
                    "jobtitle": rng.choice(_TITLE),
                    "phone": f"+1 555 {rng.randint(100, 999)} 0101",
                }
            )
            .id
        )
    for _ in range(n_deals):
        close = datetime.now(UTC) + timedelta(days=rng.randint(-60, 180))
        seeded.ids["deals"].append(
            store["deals"]
            .create(
                {
                    "dealname": f"{rng.choice(_PREFIX)} — {rng.choice(_DEAL)}",
                    "amount": str(rng.randrange(5_000, 500_000, 500)),
                    "dealstage": "appointmentscheduled",
                    "pipeline": "default",
                    "closedate": close.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                }
            )
            .id
        )
    return seeded


def _store_edit(
    emulator: ProviderEmulator, entity: str, record_id: str, fields: dict[str, Any]
) -> None:
    emulator.store[entity].update(record_id, fields)


def _store_read(emulator: ProviderEmulator, entity: str, record_id: str) -> dict[str, Any]:
    record = emulator.store[entity].get(record_id)
    if record is None:
        raise KeyError(record_id)
    return dict(record.data)


def _store_webhook(
    emulator: ProviderEmulator, entity: str, record_id: str, fields: dict[str, Any]
) -> Any:
    record = emulator.store[entity].get(record_id)
    assert record is not None
    return emulator.webhook_payload(entity, record, "updated")


DYNAMICS_TENANT = "contoso.onmicrosoft.com"
DYNAMICS_ORG = {"tenant": DYNAMICS_TENANT, "org": "contoso", "region": "crm"}


def _dynamics_build(
    clock: WallClock, base_url: str, client_secret: str
) -> tuple[ProviderEmulator, OAuthEmulator]:
    from castiel_sync.testing.emulators.dynamics365 import (
        API,
        DataverseOAuth,
        Dynamics365Emulator,
    )

    # Tokens are for the org the connection names (https://contoso.crm.dynamics.com); the
    # demo's token response adds the emulator's address so the adapter calls it.
    oauth = DataverseOAuth(
        resource="https://contoso.crm.dynamics.com",
        clock=clock,
        base_url=base_url,
        authorize_path=f"/{DYNAMICS_TENANT}/oauth2/v2.0/authorize",
        token_path=f"/{DYNAMICS_TENANT}/oauth2/v2.0/token",
        rotate_refresh_tokens=False,
        reissue_refresh_token=False,
        extra_token_fields={"instance_url": base_url + API},
    )
    emulator = Dynamics365Emulator(
        clock=clock, oauth=oauth, base_url=base_url, tenant=DYNAMICS_TENANT
    )
    return emulator, oauth


def _dynamics_seed(emulator: ProviderEmulator, records: int) -> Seeded:
    rng = random.Random(2026)  # noqa: S311 - demo data, not security
    n_accounts = max(4, records // 4)
    n_contacts = max(4, records // 2)
    n_opps = max(2, records - n_accounts - n_contacts)
    seeded = Seeded({"account": [], "contact": [], "opportunity": []})
    store = emulator.store
    for i in range(n_accounts):
        name = f"{rng.choice(_PREFIX)} {rng.choice(_SUFFIX)} {i + 1}"
        city, country = rng.choice(_CITY)
        seeded.ids["account"].append(
            store["account"]
            .create(
                {
                    "name": name,
                    "websiteurl": f"https://{_slug(name)}.example",
                    "telephone1": f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                    "address1_city": city,
                    "address1_country": country,
                    "numberofemployees": rng.choice([12, 45, 120, 800, 2500]),
                    "description": f"{name}, customer since {rng.randint(2009, 2025)}",
                }
            )
            .id
        )
    for _ in range(n_contacts):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        seeded.ids["contact"].append(
            store["contact"]
            .create(
                {
                    "firstname": first,
                    "lastname": last,
                    "fullname": f"{first} {last}",
                    "emailaddress1": f"{_slug(first)}{rng.randint(1, 999)}@example.com",
                    "jobtitle": rng.choice(_TITLE),
                    "telephone1": f"+1 555 {rng.randint(100, 999)} 0101",
                }
            )
            .id
        )
    for _ in range(n_opps):
        close = date.today() + timedelta(days=rng.randint(-60, 180))
        seeded.ids["opportunity"].append(
            store["opportunity"]
            .create(
                {
                    "name": f"{rng.choice(_PREFIX)} — {rng.choice(_DEAL)}",
                    "estimatedvalue": float(rng.randrange(5_000, 500_000, 500)),
                    "stepname": rng.choice(["1-Qualify", "2-Develop", "3-Propose", "4-Close"]),
                    "estimatedclosedate": close.isoformat(),
                    "closeprobability": rng.choice([10, 20, 40, 60, 80]),
                }
            )
            .id
        )
    return seeded


PROFILES: dict[str, ProviderProfile] = {
    "salesforce": ProviderProfile(
        provider_id="salesforce",
        display="Salesforce",
        build=_salesforce_build,
        seed=_salesforce_seed,
        company_entity="Account",
        contact_entity="Contact",
        company_fields={"phone": "Phone", "website": "Website", "industry": "Industry"},
        other_field="industry",
        contact_title_field="Title",
        edit=_salesforce_edit,
        read=_salesforce_read,
        webhook=_salesforce_webhook,
    ),
    "hubspot": ProviderProfile(
        provider_id="hubspot",
        display="HubSpot",
        build=_hubspot_build,
        seed=_hubspot_seed,
        company_entity="companies",
        contact_entity="contacts",
        company_fields={"phone": "phone", "website": "website", "industry": "industry"},
        other_field="industry",
        contact_title_field="jobtitle",
        edit=_store_edit,
        read=_store_read,
        webhook=_store_webhook,
    ),
    "dynamics365": ProviderProfile(
        provider_id="dynamics365",
        display="Dynamics 365",
        build=_dynamics_build,
        seed=_dynamics_seed,
        company_entity="account",
        contact_entity="contact",
        company_fields={
            "phone": "telephone1",
            "website": "websiteurl",
            "description": "description",
        },
        other_field="description",
        contact_title_field="jobtitle",
        edit=_store_edit,
        read=_store_read,
        webhook=_store_webhook,
        template_values=DYNAMICS_ORG,
    ),
}


__all__ = [
    "PROFILES",
    "EmulatorApp",
    "LoopbackServer",
    "ProviderProfile",
    "Seeded",
    "WallClock",
    "free_port",
]
