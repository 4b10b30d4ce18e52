"""The names other modules code against; changing them is a decision, not an accident."""

from __future__ import annotations

import inspect

import castiel_sync.store.repositories as repositories
from castiel_sync.store import Store, errors


def test_exported_names() -> None:
    assert sorted(repositories.__all__) == sorted(
        [
            "UNSET",
            "AuditRepository",
            "ConnectionRepository",
            "IntegrationRepository",
            "LimitOverrides",
            "Limits",
            "OAuthStateRepository",
            "ProviderRepository",
            "ScopedRepository",
            "TenantSettingsRepository",
            "WebhookDeliveryRepository",
            "redact",
        ]
    )
    assert sorted(errors.__all__) == ["ConflictError", "NotFoundError", "ScopeError", "StoreError"]
    assert callable(Store.transaction)


def test_every_repository_takes_session_and_scope_first() -> None:
    for name in repositories.__all__:
        cls = getattr(repositories, name)
        if inspect.isclass(cls) and issubclass(cls, repositories.ScopedRepository):
            params = list(inspect.signature(cls).parameters)
            assert params[:2] == ["session", "scope"], name
