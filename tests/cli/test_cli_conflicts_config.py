"""`castiel-sync conflicts` (list, resolve; tenant scoped, bad input changes nothing) and
`castiel-sync config reference` (the README's table is its output)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cli_support import Deployment, a_scope, prepare

from castiel_sync.cli.config import reference_markdown
from castiel_sync.store import Store
from castiel_sync.store.base import new_id, utcnow
from castiel_sync.store.repositories.conflicts import ConflictRepository
from castiel_sync.store.tables import ExternalRelationshipRow, ShardRow

README = Path(__file__).resolve().parents[2] / "README.md"


def open_conflict(dep: Deployment) -> str:
    integration = dep.ids["tenanta/sales"]

    async def go(store: Store) -> str:
        async with store.transaction() as session:
            data = {"name": "Acme", "address": {"city": "Bergen"}}
            shard = ShardRow(tenant_id="tenanta", shard_type="c_company", structured_data=data)
            session.add(shard)
            await session.flush()
            rel = ExternalRelationshipRow(
                tenant_id="tenanta", shard_id=shard.id, integration_id=integration,
                entity="Account", external_id="001A", sync_direction="bidirectional",
                last_synced_snapshot={"name": "Acme", "address": {"city": "Oslo"}},
            )  # fmt: skip
            session.add(rel)
            await session.flush()
            conflict_id = new_id()
            await ConflictRepository(session, a_scope("tenanta")).insert_many(
                [{"id": conflict_id, "integration_id": integration, "shard_id": shard.id,
                  "relationship_id": rel.id, "field": "address.city", "base_value": "Oslo",
                  "castiel_value": "Bergen", "external_value": "Paris", "status": "open",
                  "resolution": None, "resolved_value": None, "resolved_by": None,
                  "resolved_at": None, "created_at": utcnow()}]
            )  # fmt: skip
            return conflict_id

    return dep.run(go)


@pytest.fixture
def dep(db_url: str, tmp_path: Path) -> Deployment:
    return prepare(db_url, tmp_path)


def test_list_and_resolve(dep: Deployment) -> None:
    conflict = open_conflict(dep)
    [doc] = dep.cli_json("conflicts", "list", "--tenant", "tenanta")
    assert doc["id"] == conflict and doc["field"] == "address.city"
    assert (doc["castielValue"], doc["externalValue"], doc["status"]) == ("Bergen", "Paris", "open")
    table = dep.cli("conflicts", "list", "--tenant", "tenanta")
    assert table.exit_code == 0 and "address.city" in table.stdout and "Paris" in table.stdout

    resolved = dep.cli_json("conflicts", "resolve", conflict, "--tenant", "tenanta",
                            "--use", "external")  # fmt: skip
    assert resolved["status"] == "resolved" and resolved["resolution"] == "external"
    assert resolved["resolvedValue"] == "Paris" and resolved["shardVersion"] == 2

    async def shard_city(store: Store) -> Any:
        async with store.transaction() as session:
            [row] = await ConflictRepository(session, a_scope("tenanta")).list(status="resolved")
            shard = await session.get(ShardRow, row.shard_id)
            assert shard is not None
            return shard.structured_data["address"]["city"]

    assert dep.run(shard_city) == "Paris"
    assert dep.cli_json("conflicts", "list", "--tenant", "tenanta") == []
    assert len(dep.cli_json("conflicts", "list", "--tenant", "tenanta", "--status", "all")) == 1
    # Resolving again is a failure (1) that changes nothing.
    before = dep.snapshot()
    again = dep.cli("conflicts", "resolve", conflict, "--tenant", "tenanta", "--use", "castiel")
    assert again.exit_code == 1 and "already resolved" in again.stderr
    assert dep.snapshot() == before


def test_resolve_with_a_value(dep: Deployment) -> None:
    conflict = open_conflict(dep)
    result = dep.cli("conflicts", "resolve", conflict, "--tenant", "tenanta",
                     "--use", "value", "--value", "Lyon")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resolved (value)" in result.stdout and "Lyon" in result.stdout


def test_tenant_b_cannot_see_or_resolve_a_conflict(dep: Deployment) -> None:
    conflict = open_conflict(dep)
    assert dep.cli_json("conflicts", "list", "--tenant", "tenantb") == []
    before = dep.snapshot()
    result = dep.cli("conflicts", "resolve", conflict, "--tenant", "tenantb", "--use", "external")
    assert result.exit_code == 3 and "not found" in result.stderr
    listing = dep.cli("conflicts", "list", "--tenant", "tenantb", "-i", dep.ids["tenanta/sales"])
    assert listing.exit_code == 3
    assert dep.snapshot() == before


@pytest.mark.parametrize(
    "extra",
    [
        ["--use", "mine"],
        ["--use", "value"],
        ["--use", "external", "--value", "1"],
    ],
)
def test_bad_resolutions_exit_2_and_change_nothing(dep: Deployment, extra: list[str]) -> None:
    conflict = open_conflict(dep)
    before = dep.snapshot()
    result = dep.cli("conflicts", "resolve", conflict, "--tenant", "tenanta", *extra)
    assert result.exit_code == 2, result.output
    assert dep.snapshot() == before


def test_config_reference_is_the_readme_table(dep: Deployment) -> None:
    result = dep.cli("config", "reference")
    assert result.exit_code == 0
    assert result.stdout == reference_markdown()
    assert "| `CASTIEL_DATABASE_URL` |" in result.stdout
    readme = README.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", readme, re.S
    )
    assert match, "README.md lacks the generated configuration reference"
    assert match.group(1) == reference_markdown(), (
        "README's configuration table is stale: regenerate it with `castiel-sync config reference`"
    )
