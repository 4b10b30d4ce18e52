"""The vault port: ``open_vault(settings, engine)`` picks the backend ``settings.vault`` names.

- ``local`` (default): AES-256-GCM envelope encryption in the project's database
  (:mod:`castiel_sync.vault.local`), master key from ``CASTIEL_MASTER_KEY`` or a key file.
- ``azure``: Azure Key Vault (:mod:`castiel_sync.vault.azure`, needs the ``azure`` extra).

Secret names come from :mod:`castiel_sync.domain.secret_names`.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.settings import Settings
from castiel_sync.vault.base import (
    InvalidSecretNameError,
    MasterKeyError,
    SecretDecryptionError,
    SecretNotFoundError,
    Vault,
    VaultError,
)

__all__ = [
    "InvalidSecretNameError",
    "MasterKeyError",
    "SecretDecryptionError",
    "SecretNotFoundError",
    "Vault",
    "VaultError",
    "open_vault",
]


def open_vault(settings: Settings, engine: AsyncEngine) -> Vault:
    if settings.vault == "azure":
        from castiel_sync.vault.azure import AzureVault

        return AzureVault(settings.azure_vault_url)
    from castiel_sync.vault.local import LocalVault

    return LocalVault.from_settings(settings, engine)
