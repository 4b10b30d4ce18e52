"""`castiel-sync integrations` and `executions`: output, --json, exit codes, refusals that
change nothing, and tenant scoping (tenant B can neither see nor touch A's integrations)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import Deployment, audit_actions, prepare


@pytest.fixture
def dep(db_url: str, tmp_path: Path) -> Deployment:
    return prepare(db_url, tmp_path)


def test_list_table_and_json(dep: Deployment) -> None:
    result = dep.cli("integrations", "list", "--tenant", "tenanta")
    assert result.exit_code == 0, result.output
    assert "Salesforce sales" in result.stdout and "Salesforce support" in result.stdout
    assert dep.ids["tenanta/sales"] in result.stdout
    assert dep.ids["tenantb/sales"] not in result.stdout

    docs = dep.cli_json("integrations", "list", "--tenant", "tenanta")
    assert [d["id"] for d in docs] == [dep.ids["tenanta/sales"], dep.ids["tenanta/support"]]
    assert {d["tenantId"] for d in docs} == {"tenanta"}
    assert set(docs[0]) >= {"id", "providerId", "name", "status", "syncDirection", "lastSyncAt"}
    active = dep.cli_json("integrations", "list", "--tenant", "tenanta", "--status", "active")
    assert [d["id"] for d in active] == [dep.ids["tenanta/sales"]]
    assert dep.cli_json("integrations", "list", "--tenant", "nobody") == []


def test_show(dep: Deployment) -> None:
    integration = dep.ids["tenanta/sales"]
    doc = dep.cli_json("integrations", "show", integration, "--tenant", "tenanta")
    assert doc["id"] == integration and doc["status"] == "active"
    assert doc["connections"][0]["scope"] == "tenant"
    [execution] = doc["recentExecutions"]
    assert execution["fetched"] == 7 and execution["status"] == "succeeded"
    text = dep.cli("integrations", "show", integration, "--tenant", "tenanta")
    assert text.exit_code == 0 and "Recent executions" in text.stdout


def test_pause_and_resume(dep: Deployment) -> None:
    integration = dep.ids["tenanta/sales"]
    paused = dep.cli_json("integrations", "pause", integration, "--tenant", "tenanta")
    assert paused["status"] == "paused" and paused["nextSyncAt"] is None
    resumed = dep.cli("integrations", "resume", integration, "--tenant", "tenanta")
    assert resumed.exit_code == 0 and "active" in resumed.stdout
    actions = dep.run(lambda store: audit_actions(store, "tenanta"))
    assert actions.count("integration.pause") == 1 and actions.count("integration.activate") == 1


def test_resume_without_credentials_fails_and_changes_nothing(dep: Deployment) -> None:
    before = dep.snapshot()
    result = dep.cli("integrations", "resume", dep.ids["tenanta/support"], "--tenant", "tenanta")
    assert result.exit_code == 1
    assert "connect it first" in result.stderr and result.stderr.count("\n") == 1
    assert dep.snapshot() == before


def test_tenant_b_cannot_see_or_touch_a(dep: Deployment) -> None:
    a = dep.ids["tenanta/sales"]
    before = dep.snapshot()
    for command in ("show", "pause", "resume", "sync"):
        result = dep.cli("integrations", command, a, "--tenant", "tenantb")
        assert result.exit_code == 3, (command, result.output)
        assert "not found" in result.stderr
    result = dep.cli("executions", "list", "--tenant", "tenantb", "--integration", a)
    assert result.exit_code == 3
    assert dep.snapshot() == before
    docs = dep.cli_json("executions", "list", "--tenant", "tenantb")
    assert {d["integrationId"] for d in docs} == {dep.ids["tenantb/sales"]}


@pytest.mark.parametrize(
    "args",
    [
        ["integrations", "list", "--tenant", "Tenant-A"],
        ["integrations", "list", "--tenant", "tenanta", "--status", "sleeping"],
        ["integrations", "pause", "x", "--tenant", "a b"],
        ["executions", "list", "--tenant", "tenanta", "--limit", "0"],
        ["integrations", "list"],  # no tenant
        ["integrations", "frobnicate"],
    ],
)
def test_usage_errors_exit_2_and_change_nothing(dep: Deployment, args: list[str]) -> None:
    before = dep.snapshot()
    result = dep.cli(*args)
    assert result.exit_code == 2, result.output
    assert dep.snapshot() == before


def test_executions_list(dep: Deployment) -> None:
    docs = dep.cli_json("executions", "list", "--tenant", "tenanta")
    [doc] = docs
    assert doc["integrationId"] == dep.ids["tenanta/sales"]
    assert (doc["fetched"], doc["created"], doc["status"]) == (7, 7, "succeeded")
    assert doc["durationMs"] is not None
    table = dep.cli("executions", "list", "--tenant", "tenanta")
    assert table.exit_code == 0 and "succeeded" in table.stdout
    empty = dep.cli("executions", "list", "--tenant", "nobody")
    assert empty.exit_code == 0 and "no executions" in empty.stdout


def test_missing_database_is_a_clear_failure(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from castiel_sync.cli.main import app

    env = {"CASTIEL_DATA_DIR": str(tmp_path / "nowhere"), "CASTIEL_DATABASE_URL": ""}
    result = CliRunner().invoke(app, ["integrations", "list", "--tenant", "a"], env=env)
    assert result.exit_code == 1
    assert "db upgrade" in result.stderr
    assert not (tmp_path / "nowhere").exists()
