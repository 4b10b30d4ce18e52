"""``user_key``: a user id as it may appear in a secret name; a domain rule that lives
with the secret names (the API routes use it, they do not define it)."""

from __future__ import annotations

import hashlib

import pytest

from castiel_sync.domain import secret_names
from castiel_sync.domain.secret_names import user_key


@pytest.mark.parametrize("user_id", ["alice", "u42", "0" * 40])
def test_a_user_id_that_fits_is_itself(user_id: str) -> None:
    assert user_key(user_id) == user_id


@pytest.mark.parametrize("user_id", ["auth0|abc", "Alice", "a-b", "x" * 41, ""])
def test_any_other_user_id_is_a_stable_digest(user_id: str) -> None:
    key = user_key(user_id)
    assert key == "u" + hashlib.sha256(user_id.encode()).hexdigest()[:32]
    assert key == user_key(user_id)
    name = secret_names.user_secret("acme", key, "salesforce", "sales")
    assert name == f"tenant-acme-user-{key}-salesforce-sales-oauth"


def test_the_routes_use_the_domain_rule() -> None:
    from castiel_sync.api.routes import credentials, integrations

    assert integrations.user_key is user_key
    assert credentials.user_key is user_key
