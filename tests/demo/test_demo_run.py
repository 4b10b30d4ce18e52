"""`castiel-sync demo --non-interactive`, run in process on a fresh directory: every step
succeeds, and each step's outcome is checked where it lives, in the store and in the
emulator (not only in what the demo printed)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from castiel_sync.cli.main import app
from castiel_sync.demo import DemoOptions, DemoReport, run_demo
from castiel_sync.demo.runner import MARKER, TENANT
from castiel_sync.domain.tenancy import TenantId, TenantScope
from castiel_sync.store import Store
from castiel_sync.store.base import create_engine
from castiel_sync.store.repositories.executions import ExecutionRepository
from castiel_sync.store.repositories.shards import RelationshipRepository, ShardRepository
from castiel_sync.store.tables import WebhookDeliveryRow

SCOPE = TenantScope(TenantId(TENANT))
T = TypeVar("T")


class Inspect:
    """Reads the demo's store after it stopped (each call on its own engine and loop)."""

    def __init__(self, report: DemoReport) -> None:
        self.report = report
        assert report.settings is not None
        self.url = report.settings.resolved_database_url

    def read(self, action: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def go() -> T:
            store = Store(create_engine(self.url))
            try:
                async with store.transaction() as session:
                    return await action(session)
            finally:
                await store.dispose()

        return asyncio.run(go())

    def shard(self, entity: str, external_id: str) -> Any:
        async def go(session: AsyncSession) -> Any:
            rel = await RelationshipRepository(session, SCOPE).find(
                self.report.integration_id, entity, external_id
            )
            assert rel is not None, (entity, external_id)
            return await ShardRepository(session, SCOPE).get(rel.shard_id), rel

        return self.read(go)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    out = io.StringIO()
    console = Console(file=out, width=120, highlight=False)
    options = DemoOptions(data_dir=data_dir, port=0, records=120, non_interactive=True)
    report = asyncio.run(run_demo(options, console))
    return report, Inspect(report), out.getvalue()


def test_every_step_succeeded(demo: Any) -> None:
    report, _, printed = demo
    failed = {s.key: s.message for s in report.steps if not s.ok}
    assert not failed, printed
    assert [s.key for s in report.steps] == [
        "service",
        "connect",
        "full_sync",
        "webhook",
        "write_back",
        "conflict",
        "rate_limit",
    ]
    assert "7/7 steps succeeded" in printed
    assert f"{report.base_url}/docs" in printed
    assert f"export TOKEN={report.token}\n" in printed
    assert (report.options.data_dir / MARKER).exists()


def test_connected_through_the_oauth_flow_and_records_synced(demo: Any) -> None:
    report, inspect, _ = demo
    codes = [c for c in report.oauth.token_calls if c.grant_type == "authorization_code"]
    assert [c.status for c in codes] == [200]  # the API's callback exchanged the code
    seeded = report.seeded
    rels = inspect.read(lambda s: RelationshipRepository(s, SCOPE).list(report.integration_id))
    shards = inspect.read(lambda s: ShardRepository(s, SCOPE).count())
    by_entity: dict[str, set[str]] = {}
    for rel in rels:
        by_entity.setdefault(rel.entity, set()).add(rel.external_id)
    for entity, ids in seeded.ids.items():
        assert by_entity[entity] == set(ids), entity
    assert shards == seeded.total
    # Every record present in Castiel, with its mapped data.
    account = seeded.ids["Account"][5]
    shard, _ = inspect.shard("Account", account)
    assert shard.structured_data["name"] == report.emulator.row("Account", account)["Name"]


def test_webhook_change_applied(demo: Any) -> None:
    report, inspect, _ = demo
    fact = report.facts["webhook"]
    shard, _ = inspect.shard(fact["entity"], fact["externalId"])
    assert shard.structured_data["phone"] == fact["phone"]
    assert report.emulator.row(fact["entity"], fact["externalId"])["Phone"] == fact["phone"]

    async def deliveries(session: AsyncSession) -> list[Any]:
        return list((await session.execute(select(WebhookDeliveryRow))).scalars().all())

    delivered = inspect.read(deliveries)
    assert delivered and all(d.status == "processed" for d in delivered)
    runs = inspect.read(
        lambda s: ExecutionRepository(s, SCOPE).list(integration_id=report.integration_id)
    )
    assert any(r.trigger == "webhook" and r.updated == 1 for r in runs)


def test_write_back_visible_in_the_emulator(demo: Any) -> None:
    report, inspect, _ = demo
    fact = report.facts["write_back"]
    assert report.emulator.row(fact["entity"], fact["externalId"])["Website"] == fact["website"]
    patches = [
        r
        for r in report.emulator.requests
        if r.method == "PATCH" and r.path.endswith("/" + fact["externalId"]) and r.status == 204
    ]
    assert patches and patches[0].json() == {"Website": fact["website"]}
    shard, rel = inspect.shard(fact["entity"], fact["externalId"])
    assert shard.structured_data["website"] == fact["website"]
    assert rel.sync_status == "synced" and rel.last_synced_version == shard.version


def test_conflict_merged_per_field_as_configured(demo: Any) -> None:
    report, inspect, _ = demo
    fact = report.facts["conflict"]
    shard, rel = inspect.shard(fact["entity"], fact["externalId"])
    row = report.emulator.row(fact["entity"], fact["externalId"])
    alice, bob = fact["alice"], fact["bob"]
    # Different fields: both survive, on both sides.
    assert shard.structured_data["industry"] == row["Industry"] == alice["industry"]
    assert shard.structured_data["website"] == row["Website"] == bob["Website"]
    # The same field: last_write_wins gives it to the later (provider) edit, on both sides.
    assert shard.structured_data["phone"] == row["Phone"] == bob["Phone"]
    decisions = {d["field"]: d for e in shard.history for d in e.get("decisions", [])}
    assert decisions["phone"]["winner"] == "external"
    assert "last_write_wins" in decisions["phone"]["reason"]
    assert rel.sync_status == "synced"


def test_429_burst_recorded_and_sync_complete(demo: Any) -> None:
    report, inspect, _ = demo
    limited = [r for r in report.emulator.requests if r.status == 429]
    assert len(limited) == report.facts["rate_limit"]["429s"] >= 1
    assert all(r.fault == "rate_limit" for r in limited)
    assert limited[0].method == "GET"
    sync = report.facts["rate_limit"]["sync"]
    assert sync["status"] == "succeeded" and sync["updated"] >= 25
    for contact in report.seeded.ids["Contact"][:25]:
        shard, _ = inspect.shard("Contact", contact)
        assert shard.structured_data["title"] == "Chief Demo Officer"


def test_cli_refuses_bad_input(tmp_path: Path) -> None:
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("not the demo's")
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--non-interactive", "--data-dir", str(keep)])
    assert result.exit_code == 2 and "not empty" in result.stderr
    assert (keep / "notes.txt").read_text() == "not the demo's"
    result = runner.invoke(app, ["demo", "--provider", "nope", "--data-dir", str(tmp_path / "x")])
    assert result.exit_code == 2 and not (tmp_path / "x").exists()


def test_cli_demo_non_interactive_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-demo"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--non-interactive",
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
            "--records",
            "40",
            "--provider",
            "salesforce",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "7/7 steps succeeded" in result.stdout
    assert (data_dir / "castiel.db").exists() and (data_dir / MARKER).exists()
