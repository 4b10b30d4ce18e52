"""Broken catalog entries fail with a message that names the provider and the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from castiel_sync.catalog import CatalogError, TemplateError, load_catalog, parse_catalog


def _entry(provider_id: str = "hubspot") -> dict[str, Any]:
    """A valid entry to break, taken from the shipped catalog as plain data."""
    return copy.deepcopy(load_catalog().get(provider_id).model_dump(mode="json"))


def _dump(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"providers": list(entries)}, sort_keys=False)


def test_a_valid_entry_parses() -> None:
    assert parse_catalog(_dump(_entry())).get("hubspot").name == "HubSpot"


def test_unknown_key_names_provider_and_field() -> None:
    entry = _entry()
    entry["oauth"]["token_endpoint"] = "https://example.com/token"
    with pytest.raises(
        CatalogError, match=r"provider 'hubspot'.*'oauth\.token_endpoint'.*[Ee]xtra"
    ):
        parse_catalog(_dump(entry))


def test_bad_status_names_provider_and_field() -> None:
    entry = _entry()
    entry["status"] = "live"
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*field 'status'"):
        parse_catalog(_dump(entry))


def test_mapping_to_a_non_c_shard_type_names_provider_and_field() -> None:
    entry = _entry()
    entry["entities"][0]["shard_type"] = "company"
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*'entities\.0\.shard_type'"):
        parse_catalog(_dump(entry))


def test_mapping_to_an_unknown_c_shard_type_is_rejected() -> None:
    entry = _entry()
    entry["entities"][0]["shard_type"] = "c_compnay"
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*unknown shard type 'c_compnay'"):
        parse_catalog(_dump(entry))


def test_duplicate_provider_id_is_rejected() -> None:
    with pytest.raises(
        CatalogError, match=r"provider 'hubspot', field 'id': declared more than once"
    ):
        parse_catalog(_dump(_entry(), _entry("salesforce"), _entry()))


def test_a_key_repeated_inside_an_entry_is_rejected() -> None:
    text = _dump(_entry()).replace(
        "  status: active\n", "  status: active\n  status: disabled\n", 1
    )
    with pytest.raises(CatalogError, match=r"key 'status' appears twice"):
        parse_catalog(text)


def test_duplicate_entity_name_is_rejected() -> None:
    entry = _entry()
    entry["entities"].append(copy.deepcopy(entry["entities"][0]))
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*declared twice: companies"):
        parse_catalog(_dump(entry))


def test_oauth_section_is_required_for_oauth2() -> None:
    entry = _entry()
    del entry["oauth"]
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*needs an 'oauth' section"):
        parse_catalog(_dump(entry))


def test_non_https_endpoint_is_rejected() -> None:
    entry = _entry()
    entry["oauth"]["token_url"] = "http://api.hubapi.com/oauth/v1/token"
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*'oauth\.token_url'.*https"):
        parse_catalog(_dump(entry))


def test_undeclared_template_variable_is_rejected() -> None:
    entry = _entry()
    entry["api_base_url"] = "https://{portal}.hubapi.com"
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*not declared: portal"):
        parse_catalog(_dump(entry))


def test_entity_webhooks_need_provider_webhooks() -> None:
    entry = _entry()
    entry["webhooks"] = {"supported": False, "handshake": "none", "signature": "none"}
    with pytest.raises(CatalogError, match=r"provider 'hubspot'.*claims webhook support"):
        parse_catalog(_dump(entry))


def test_entry_without_an_id_is_named_by_position() -> None:
    entry = _entry()
    del entry["id"]
    with pytest.raises(CatalogError, match=r"entry #2, field 'id': Field required"):
        parse_catalog(_dump(_entry("salesforce"), entry))


def test_document_without_providers_list_is_rejected() -> None:
    with pytest.raises(CatalogError, match="single top-level key 'providers'"):
        parse_catalog("hubspot: {}\n")


# --- the Dynamics per-environment scope template -------------------------------------


def test_dynamics_scope_renders_for_an_org() -> None:
    dynamics = load_catalog().get("dynamics365")
    resolved = dynamics.resolve_oauth({"org": "contoso"})
    assert "https://contoso.crm.dynamics.com/.default" in resolved.scopes
    assert "offline_access" in resolved.scopes
    emea = dynamics.resolve_oauth({"org": "fabrikam", "region": "crm4", "tenant": "fabrikam.com"})
    assert "https://fabrikam.crm4.dynamics.com/.default" in emea.scopes
    assert emea.token_url == "https://login.microsoftonline.com/fabrikam.com/oauth2/v2.0/token"
    assert dynamics.resolve_api_base_url({"org": "contoso"}) == (
        "https://contoso.crm.dynamics.com/api/data/v9.2"
    )


@pytest.mark.parametrize(
    "org",
    [
        "evil.com/x",  # adds a path
        "contoso?x=1",  # adds a query
        "user@evil",  # adds user-info
        "contoso:443",  # adds a port
        "Contoso",  # outside the declared pattern (lowercase)
        "-contoso",
        "",
        "a b",
    ],
)
def test_dynamics_scope_refuses_an_illegal_org(org: str) -> None:
    dynamics = load_catalog().get("dynamics365")
    with pytest.raises(TemplateError, match="org="):
        dynamics.resolve_oauth({"org": org})


def test_dynamics_scope_needs_an_org() -> None:
    with pytest.raises(TemplateError, match="a value for 'org' is required"):
        load_catalog().get("dynamics365").resolve_oauth({})


def test_unknown_template_value_is_refused() -> None:
    with pytest.raises(TemplateError, match="unknown template variable"):
        load_catalog().get("dynamics365").resolve_oauth({"org": "contoso", "host": "x"})


def test_salesforce_sandbox_login_host() -> None:
    salesforce = load_catalog().get("salesforce")
    assert salesforce.resolve_oauth().authorization_url == (
        "https://login.salesforce.com/services/oauth2/authorize"
    )
    sandbox = salesforce.resolve_oauth({"login_host": "test.salesforce.com"})
    assert sandbox.token_url == "https://test.salesforce.com/services/oauth2/token"
    with pytest.raises(TemplateError):
        salesforce.resolve_oauth({"login_host": "login.evil.com"})
