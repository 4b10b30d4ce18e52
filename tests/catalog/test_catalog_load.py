"""The shipped catalog loads, validates, and carries the specification's mapping table."""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from castiel_sync.catalog import (
    KNOWN_SHARD_TYPES,
    STABLE_PROVIDER_IDS,
    Catalog,
    ProviderSpec,
    UnknownProviderError,
    load_catalog,
    parse_catalog,
    tenant_visible,
)
from castiel_sync.domain.config import EntityMapping

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def test_every_stable_provider_id_has_exactly_one_entry(catalog: Catalog) -> None:
    assert sorted(catalog.ids()) == sorted(STABLE_PROVIDER_IDS)
    assert len(catalog) == len(STABLE_PROVIDER_IDS)


@pytest.mark.parametrize("provider_id", STABLE_PROVIDER_IDS)
def test_entry_validates_and_round_trips(catalog: Catalog, provider_id: str) -> None:
    spec = catalog.get(provider_id)
    # What sync_catalog stores (JSON) must validate back into the same entry.
    again = ProviderSpec.model_validate(spec.model_dump(mode="json"))
    assert again == spec
    for entity in spec.entities:
        mapping = entity.default_mapping()
        assert isinstance(mapping, EntityMapping)
        assert mapping.shard_type in KNOWN_SHARD_TYPES
        assert EntityMapping.model_validate(mapping.model_dump(by_alias=True)) == mapping


def test_oauth_entries_render_their_templates_with_examples(catalog: Catalog) -> None:
    for spec in catalog:
        examples = {name: var.example for name, var in spec.template_variables.items()}
        assert "{" not in spec.resolve_api_base_url(examples), spec.id
        if spec.oauth is not None:
            resolved = spec.resolve_oauth(examples)
            assert resolved.token_url.startswith("https://"), spec.id
            assert not any("{" in scope for scope in resolved.scopes), spec.id


def test_get_unknown_provider_names_it(catalog: Catalog) -> None:
    with pytest.raises(UnknownProviderError, match="'pipedrive'") as info:
        catalog.get("pipedrive")
    assert info.value.provider_id == "pipedrive"
    assert "salesforce" in str(info.value)


def test_load_catalog_is_cached() -> None:
    assert load_catalog() is load_catalog()


def test_the_yaml_is_package_data_read_through_importlib_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not found relative to the working directory: through the package.
    monkeypatch.chdir(tmp_path)
    resource = resources.files("castiel_sync.catalog").joinpath("providers.yaml")
    assert resource.is_file()
    assert len(parse_catalog(resource.read_text(encoding="utf-8"))) == len(STABLE_PROVIDER_IDS)


def test_the_wheel_configuration_includes_the_yaml() -> None:
    """hatch puts every file under a listed package into the wheel unless excluded: the
    YAML must sit under one of those packages and match no exclude pattern."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    yaml_path = Path("src/castiel_sync/catalog/providers.yaml")
    assert (REPO / yaml_path).is_file()
    assert any(yaml_path.is_relative_to(package) for package in wheel["packages"])
    excluded = wheel.get("exclude", []) + config["tool"]["hatch"]["build"].get("exclude", [])
    assert not any(yaml_path.match(pattern) for pattern in excluded)
    assert not any(
        line.strip() and Path(yaml_path.name).match(line.strip())
        for line in (REPO / ".gitignore").read_text().splitlines()
        if not line.startswith("#")
    )
    assert os.path.basename(str(yaml_path)) == "providers.yaml"


# The specification's "Entity Mappings" table, row by row: (provider, external entity,
# shard type, direction). "Task/Event" is two entities in Salesforce's API.
SPEC_MAPPING_TABLE = [
    ("salesforce", "Account", "c_company", "bidirectional"),
    ("salesforce", "Contact", "c_contact", "bidirectional"),
    ("salesforce", "Opportunity", "c_opportunity", "bidirectional"),
    ("salesforce", "Task", "c_note", "inbound"),
    ("salesforce", "Event", "c_note", "inbound"),
    ("dynamics365", "account", "c_company", "bidirectional"),
    ("dynamics365", "contact", "c_contact", "bidirectional"),
    ("microsoft_teams", "channel_messages", "c_note", "inbound"),
    ("zoom", "recordings", "c_document", "inbound"),
    ("gong", "calls", "c_note", "inbound"),
    ("google_drive", "files", "c_document", "inbound"),
]


@pytest.mark.parametrize(("provider_id", "entity", "shard_type", "direction"), SPEC_MAPPING_TABLE)
def test_spec_entity_mapping_table_row(
    catalog: Catalog, provider_id: str, entity: str, shard_type: str, direction: str
) -> None:
    mapping = catalog.get(provider_id).entity(entity).default_mapping()
    assert (mapping.shard_type, mapping.direction) == (shard_type, direction)
    assert mapping.field_mappings, "a default mapping maps at least one field"


def test_crm_defaults_use_the_providers_real_field_names(catalog: Catalog) -> None:
    def externals(provider_id: str, entity: str) -> set[str]:
        return {m.external for m in catalog.get(provider_id).entity(entity).field_mappings}

    assert {"Name", "Website", "BillingCity", "Industry"} <= externals("salesforce", "Account")
    assert {"properties.name", "properties.domain"} <= externals("hubspot", "companies")
    assert {"name", "emailaddress1", "telephone1"} <= externals("dynamics365", "account")


def test_statuses_follow_the_spec_phases(catalog: Catalog) -> None:
    for spec in catalog:
        if spec.phase == "phase1":
            assert spec.status == "active", spec.id
        else:
            assert spec.status in ("beta", "disabled"), spec.id
    assert {s.id for s in catalog if s.phase == "phase1"} == {
        "salesforce",
        "dynamics365",
        "hubspot",
    }


def test_google_news_is_the_only_system_audience_provider(catalog: Catalog) -> None:
    assert [s.id for s in catalog if s.audience == "system"] == ["google_news"]


class _Row:
    def __init__(self, status: str, audience: str) -> None:
        self.status, self.audience = status, audience


@pytest.mark.parametrize(
    ("status", "audience", "visible"),
    [
        ("active", "tenant", True),
        ("beta", "tenant", True),
        ("deprecated", "tenant", False),
        ("disabled", "tenant", False),
        ("active", "system", False),
        ("beta", "system", False),
    ],
)
def test_tenant_visibility_rule(status: str, audience: str, visible: bool) -> None:
    assert tenant_visible(_Row(status, audience)) is visible


def test_catalog_tenant_visible_list(catalog: Catalog) -> None:
    visible = {spec.id for spec in catalog.tenant_visible()}
    assert "google_news" not in visible  # system audience
    assert "jira" not in visible  # disabled
    assert {"salesforce", "hubspot", "dynamics365", "google_drive"} <= visible
