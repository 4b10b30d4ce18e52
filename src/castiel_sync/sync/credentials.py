"""Where a sync job gets an integration's credentials: the seam the token refresher
plugs into.

:class:`VaultCredentialProvider` reads the secret named by the integration's
``credential_secret_name``: OAuth tokens are stored as JSON (``access_token``,
``refresh_token``, ``instance_url``, ...), API keys as JSON ``{"api_key": ...}`` or as the
bare key. ``token_refresher`` returns what the adapter calls on a 401 (once); the default
re-reads the vault, so a refresh done elsewhere (the hourly refresher) is picked up. An
on-demand refresher replaces it by subclassing or by passing ``refresher_factory``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from castiel_sync.sdk import Credentials, TokenRefresher
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.sync.jobs import SyncConfigError


class SecretReader(Protocol):
    async def get(self, name: str, version: int | None = None) -> str: ...


class CredentialProvider(Protocol):
    async def credentials(self, integration: IntegrationRow) -> Credentials: ...

    def token_refresher(self, integration: IntegrationRow) -> TokenRefresher | None: ...


def parse_secret(raw: str) -> Credentials:
    text = raw.strip()
    if text.startswith("{"):
        data: Any = orjson.loads(text)
        return Credentials.model_validate(data)
    return Credentials(api_key=text)


class VaultCredentialProvider:
    def __init__(
        self,
        vault: SecretReader,
        *,
        refresher_factory: Callable[[IntegrationRow], TokenRefresher | None] | None = None,
    ) -> None:
        self.vault = vault
        self._refresher_factory = refresher_factory

    async def credentials(self, integration: IntegrationRow) -> Credentials:
        name = integration.credential_secret_name
        if not name:
            raise SyncConfigError("the integration has no credentials; connect it first")
        try:
            raw = await self.vault.get(name)
        except Exception as exc:  # the vault's own errors name no secret values
            raise SyncConfigError(
                f"the integration's credentials could not be read ({type(exc).__name__})"
            ) from exc
        return parse_secret(raw)

    def token_refresher(self, integration: IntegrationRow) -> TokenRefresher | None:
        if self._refresher_factory is not None:
            return self._refresher_factory(integration)

        def reread() -> Awaitable[Credentials]:
            return self.credentials(integration)

        return reread


class StaticCredentialProvider:
    """Fixed credentials (tests, demos, benchmarks)."""

    def __init__(self, credentials: Credentials | Callable[[], Credentials]) -> None:
        self._credentials = credentials

    async def credentials(self, integration: IntegrationRow) -> Credentials:
        value = self._credentials
        return value() if callable(value) else value

    def token_refresher(self, integration: IntegrationRow) -> TokenRefresher | None:
        return None


__all__ = [
    "CredentialProvider",
    "SecretReader",
    "StaticCredentialProvider",
    "VaultCredentialProvider",
    "parse_secret",
]
