"""Azure Key Vault behind the :class:`~castiel_sync.vault.base.Vault` interface.

Needs the ``azure`` extra (``pip install 'castiel-sync[azure]'``); imported lazily, so the
package works without it. Authentication is ``DefaultAzureCredential`` (managed identity,
workload identity, environment, Azure CLI) unless a credential is passed.

Versions: Key Vault's versions are opaque ids and its timestamps have one-second
resolution, so creation order cannot number them. ``put`` numbers each new version
explicitly, in the tag ``castiel-version`` (one more than the highest number so far).
Versions created elsewhere without the tag (an operator in the portal) are numbered by
their position among the untagged ones; where such a number is also a tag, the tagged
version has it (the untagged one stays readable as the latest, if it is). ``get(name)``
asks Key Vault for its own latest version. Key Vault has no compare-and-set: two
concurrent puts to one name may take the same number (``get(name, n)`` then returns the
later one); token writers already serialize per connection (the refresh lease).

Delete: Key Vault soft-deletes; the name stays taken until the deleted secret is purged,
so ``delete`` also purges when ``purge_on_delete`` (the default) and the vault allows it.
If it does not (purge protection, no purge permission), a later ``put`` to that name fails
with a clear :class:`VaultError` until the retention period ends or it is recovered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from castiel_sync.vault.base import (
    SecretNotFoundError,
    Vault,
    VaultError,
    validate_name,
    validate_prefix,
    validate_version,
)

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _is_not_found(exc: BaseException) -> bool:
    try:
        from azure.core.exceptions import ResourceNotFoundError
    except ImportError:  # a test double stands in for the client
        return _status(exc) == 404
    return isinstance(exc, ResourceNotFoundError) or _status(exc) == 404


VERSION_TAG = "castiel-version"


def number_versions(properties: Iterable[Any]) -> dict[int, str]:
    """Version number -> Key Vault version id, from ``SecretProperties`` of one secret."""
    ordered = sorted(properties, key=lambda p: (p.created_on or _EPOCH, p.version or ""))
    untagged: list[str] = []
    tagged: dict[int, str] = {}
    for p in ordered:
        tag = (p.tags or {}).get(VERSION_TAG, "")
        if tag.isdigit():
            tagged[int(tag)] = p.version  # two puts that raced: the later one
        else:
            untagged.append(p.version)
    return dict(enumerate(untagged, start=1)) | tagged


class AzureVault(Vault):
    def __init__(
        self,
        vault_url: str | None = None,
        *,
        credential: Any = None,
        client: Any = None,
        purge_on_delete: bool = True,
    ) -> None:
        self._owned: list[Any] = []
        if client is None:
            if not vault_url:
                raise VaultError("CASTIEL_AZURE_VAULT_URL must be set when CASTIEL_VAULT=azure")
            try:
                from azure.identity.aio import DefaultAzureCredential
                from azure.keyvault.secrets.aio import SecretClient
            except ImportError as exc:
                raise VaultError(
                    "the Azure vault needs the 'azure' extra: pip install 'castiel-sync[azure]'"
                ) from exc
            if credential is None:
                credential = DefaultAzureCredential()
                self._owned.append(credential)
            client = SecretClient(vault_url, credential)
            self._owned.insert(0, client)
        self._client = client
        self._purge_on_delete = purge_on_delete

    async def _versions(self, name: str) -> dict[int, str]:
        try:
            props = [p async for p in self._client.list_properties_of_secret_versions(name)]
        except Exception as exc:
            if _is_not_found(exc):
                return {}
            raise
        return number_versions(props)

    async def get(self, name: str, version: int | None = None) -> str:
        validate_name(name)
        validate_version(version)
        azure_version = None
        if version is not None:
            azure_version = (await self._versions(name)).get(version)
            if azure_version is None:
                raise SecretNotFoundError(name, version)
        try:
            secret = await self._client.get_secret(name, azure_version)
        except Exception as exc:
            if _is_not_found(exc):
                raise SecretNotFoundError(name, version) from None
            raise
        value: str = secret.value
        return value

    async def put(self, name: str, value: str) -> int:
        validate_name(name)
        if not isinstance(value, str):
            raise TypeError("secret values are strings (store JSON for structured values)")
        number = max(await self._versions(name), default=0) + 1
        try:
            await self._client.set_secret(name, value, tags={VERSION_TAG: str(number)})
        except Exception as exc:
            if _status(exc) == 409:
                raise VaultError(
                    f"secret {name!r} is deleted but not purged in Azure Key Vault; purge or "
                    "recover it before storing it again"
                ) from None
            raise
        return number

    async def delete(self, name: str) -> None:
        validate_name(name)
        try:
            await self._client.delete_secret(name)
        except Exception as exc:
            if _is_not_found(exc):
                return
            raise
        if self._purge_on_delete:
            try:
                await self._client.purge_deleted_secret(name)
            except Exception as exc:
                # Purge protection or no purge permission: the secret stays soft-deleted.
                log.warning(
                    "vault.azure.purge_failed", extra={"secret_name": name, "status": _status(exc)}
                )

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        names = {p.name async for p in self._client.list_properties_of_secrets()}
        return sorted(n for n in names if n.lower().startswith(prefix))

    async def close(self) -> None:
        for resource in self._owned:
            await resource.close()
