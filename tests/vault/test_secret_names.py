import itertools

import pytest

from castiel_sync.catalog import load_catalog
from castiel_sync.catalog.schema import STABLE_PROVIDER_IDS
from castiel_sync.domain.secret_names import (
    check_provider_ids,
    integration_prefix,
    owner_prefix,
    system_secret,
    tenant_prefix,
    tenant_secret,
    user_prefix,
    user_secret,
)


def test_the_specifications_examples() -> None:
    assert system_secret("salesforce") == "system-salesforce-oauth"
    assert tenant_secret("abc123", "salesforce", "sales-team") == (
        "tenant-abc123-salesforce-sales-team-oauth"
    )
    assert user_secret("abc123", "u42", "gmail", "personal") == (
        "tenant-abc123-user-u42-gmail-personal-oauth"
    )
    assert tenant_secret("abc123", "gong", "main", "apikey") == "tenant-abc123-gong-main-apikey"
    assert system_secret("hubspot", "apikey") == "system-hubspot-apikey"


def test_snake_case_providers_become_kebab_case() -> None:
    assert system_secret("google_drive") == "system-google-drive-oauth"
    assert tenant_secret("t1", "microsoft_teams", "hq") == "tenant-t1-microsoft-teams-hq-oauth"


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: tenant_secret("", "salesforce", "x"), "tenant id ''"),
        (lambda: tenant_secret("a-b", "salesforce", "x"), "tenant id 'a-b'"),
        (lambda: tenant_secret("Acme", "salesforce", "x"), "tenant id 'Acme'"),
        (lambda: tenant_secret("a_b", "salesforce", "x"), "tenant id 'a_b'"),
        (lambda: user_secret("t", "", "gmail", "x"), "user id ''"),
        (lambda: user_secret("t", "auth0|1", "gmail", "x"), "user id 'auth0|1'"),
        (lambda: tenant_secret("t", "", "x"), "provider id ''"),
        (lambda: tenant_secret("t", "google-drive", "x"), "provider id 'google-drive'"),
        (lambda: tenant_secret("t", "google__drive", "x"), "provider id 'google__drive'"),
        (lambda: tenant_secret("t", "_drive", "x"), "provider id '_drive'"),
        (lambda: tenant_secret("t", "Salesforce", "x"), "provider id 'Salesforce'"),
        (lambda: tenant_secret("t", "user", "x"), "provider id 'user'"),
        (lambda: tenant_secret("t", "user_data", "x"), "provider id 'user_data'"),
        (lambda: tenant_secret("t", "salesforce", ""), "instance id ''"),
        (lambda: tenant_secret("t", "salesforce", "sales_team"), "instance id 'sales_team'"),
        (lambda: tenant_secret("t", "salesforce", "sales--team"), "instance id 'sales--team'"),
        (lambda: tenant_secret("t", "salesforce", "-x"), "instance id '-x'"),
        (lambda: tenant_secret("t", "salesforce", "x-"), "instance id 'x-'"),
        (lambda: tenant_secret("t", "salesforce", "Sales"), "instance id 'Sales'"),
        (lambda: tenant_secret("t", "salesforce", "a b"), "instance id 'a b'"),
        (lambda: tenant_secret("t", "salesforce", "x", "token"), "kind 'token'"),  # type: ignore[arg-type]
        (lambda: system_secret("salesforce", "OAUTH"), "kind 'OAUTH'"),  # type: ignore[arg-type]
        (lambda: tenant_secret("t" * 60, "salesforce", "x" * 60), "at most 127"),
    ],
)
def test_bad_components_are_refused_with_the_reason(call, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


def test_the_longest_accepted_name_fits_key_vault() -> None:
    instance = "i" * (127 - len("tenant-t-salesforce--oauth"))
    assert len(tenant_secret("t", "salesforce", instance)) == 127
    with pytest.raises(ValueError, match="at most 127"):
        tenant_secret("t", "salesforce", instance + "i")


def test_no_two_integrations_share_a_name() -> None:
    """Every combination of awkward components gives a distinct name, across scopes, as
    long as the provider set passes check_provider_ids."""
    tenants = ["a", "ab", "abuser", "user", "a1"]
    users = ["a", "b", "user", "gmail"]
    providers = ["gmail", "google_drive", "google_calendar", "users_x", "drive", "a"]
    instances = ["x", "drive-x", "user-a", "a-gmail-x", "oauth", "x-oauth", "apikey"]
    check_provider_ids(providers)
    names = set()
    for t, p, i, k in itertools.product(tenants, providers, instances, ("oauth", "apikey")):
        names.add(tenant_secret(t, p, i, k))
        names.update(user_secret(t, u, p, i, k) for u in users)
    names.update(system_secret(p, k) for p in providers for k in ("oauth", "apikey"))
    per_tenant_scope = len(tenants) * len(providers) * len(instances) * 2
    assert len(names) == per_tenant_scope * (1 + len(users)) + len(providers) * 2


def test_why_provider_sets_are_checked() -> None:
    # Instance ids hold '-', so 'google' + 'drive-x' and 'google_drive' + 'x' meet:
    assert tenant_secret("t", "google", "drive-x") == tenant_secret("t", "google_drive", "x")


def test_provider_sets_with_a_prefix_collision_are_refused() -> None:
    check_provider_ids(STABLE_PROVIDER_IDS)  # DESIGN.md's ids, and the shipped catalog's:
    check_provider_ids(load_catalog().ids())
    with pytest.raises(ValueError, match="'google' and 'google_drive'"):
        check_provider_ids(["google_drive", "google"])
    # Same tokens at the start, but neither is a whole prefix of the other: fine.
    check_provider_ids(["google_drive", "google_docs", "googledrive"])
    # A prefix of the string but not of the segments: fine (googled vs google_drive).
    check_provider_ids(["googled", "google_drive"])


def test_tenant_prefix_never_covers_another_tenant() -> None:
    assert tenant_prefix("abc") == "tenant-abc-"
    assert not tenant_secret("abc1", "gmail", "x").startswith(tenant_prefix("abc"))
    assert tenant_secret("abc", "gmail", "x").startswith(tenant_prefix("abc"))
    assert user_secret("abc", "u1", "gmail", "x").startswith(tenant_prefix("abc"))
    assert user_secret("abc", "u1", "gmail", "x").startswith(user_prefix("abc", "u1"))
    assert not user_secret("abc", "u11", "gmail", "x").startswith(user_prefix("abc", "u1"))
    with pytest.raises(ValueError, match="tenant id 'a-b'"):
        tenant_prefix("a-b")


def test_owner_prefix_names_exactly_the_integration_a_secret_belongs_to() -> None:
    prefix = integration_prefix("t", "salesforce", "sales")
    assert prefix == "tenant-t-salesforce-sales-"
    assert integration_prefix("t", "salesforce", "sales", user_id="u1") == (
        "tenant-t-user-u1-salesforce-sales-"
    )
    mine = [tenant_secret("t", "salesforce", "sales", k) for k in ("oauth", "apikey", "webhook")]
    mine.append(user_secret("t", "u1", "salesforce", "sales"))
    assert [owner_prefix(n) for n in mine] == [prefix] * 4
    # Instance "sales-team" shares the string prefix; its secrets are its own.
    other = tenant_secret("t", "salesforce", "sales-team")
    assert other.startswith(prefix)
    assert owner_prefix(other) == integration_prefix("t", "salesforce", "sales-team")
    assert owner_prefix(user_secret("t2", "u1", "salesforce", "sales")) == (
        integration_prefix("t2", "salesforce", "sales")
    )
    assert owner_prefix(tenant_secret("t", "google_drive", "a-b")) == "tenant-t-google-drive-a-b-"
    for foreign_name in (system_secret("salesforce"), "pkce-0a1b", prefix + "other"):
        assert owner_prefix(foreign_name) is None
