"""The vault port: where credentials live, never in the database's clear columns.

Exceptions (messages name secrets, never their values)::

    VaultError
    +-- SecretNotFoundError      no such secret, or no such version (also a LookupError)
    +-- InvalidSecretNameError   a name no backend would accept (also a ValueError)
    +-- SecretDecryptionError    stored bytes fail authentication: tampered, swapped, or
    |                            wrapped by a master key this process does not hold
    +-- MasterKeyError           the local master key or key file is missing, malformed,
                                 or readable by others
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

# Azure Key Vault: 1-127 of [0-9a-zA-Z-], compared case-insensitively. Upper case is refused
# rather than folded, so that no two names that differ only in case can exist locally and
# collide in Azure.
_NAME = re.compile(r"[0-9a-z-]{1,127}")
_PREFIX = re.compile(r"[0-9a-z-]{0,127}")


class VaultError(Exception):
    """Base of every vault error."""


class SecretNotFoundError(VaultError, LookupError):
    def __init__(self, name: str, version: int | None = None) -> None:
        self.name = name
        self.version = version
        what = f"secret {name!r}" if version is None else f"version {version} of secret {name!r}"
        super().__init__(f"{what} does not exist")


class InvalidSecretNameError(VaultError, ValueError):
    pass


class SecretDecryptionError(VaultError):
    pass


class MasterKeyError(VaultError):
    pass


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidSecretNameError(
            f"invalid secret name {name!r}: use 1-127 of lower-case letters, digits and '-' "
            "(see castiel_sync.domain.secret_names)"
        )
    return name


def validate_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise InvalidSecretNameError(
            f"invalid secret name prefix {prefix!r}: use lower-case letters, digits and '-'"
        )
    return prefix


def validate_version(version: int | None) -> int | None:
    if version is not None and (isinstance(version, bool) or version < 1):
        raise ValueError(f"secret versions start at 1 (got {version!r})")
    return version


class Vault(ABC):
    """Named, versioned string secrets. Versions count from 1 per name."""

    @abstractmethod
    async def get(self, name: str, version: int | None = None) -> str:
        """The latest value, or the given version; :class:`SecretNotFoundError` if absent."""

    @abstractmethod
    async def put(self, name: str, value: str) -> int:
        """Store a new version and return its number (1 for a new name)."""

    @abstractmethod
    async def delete(self, name: str) -> None:
        """Remove every version. Deleting an absent secret is not an error (handlers are
        retried, so deletes must be idempotent)."""

    @abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Sorted names starting with ``prefix`` (never values)."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the backend's connections."""
