"""The audit log of configuration changes: who, what, when, before and after.

Values are redacted before they are stored: any key that looks secret (``password``,
``clientSecret``, ``access_token``, ``apiKey``, ...) at any depth has its value masked.
Names of secrets (``credentialSecretName``) and timestamps (``tokenExpiresAt``) are not
secrets and are kept.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import AuditLogRow

MASK = "***"
SYSTEM_TENANT = "*"

_SECRET_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "token",
        "tokens",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "verifier",
        "signature",
        "privatekey",
        "accesskey",
        "masterkey",
        "sas",
        "jwt",
        "bearer",
    }
)
_KEY_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("master", "key")})
# A key ending in one of these names or describes a secret, it does not hold one.
_SAFE_LAST_WORDS = frozenset(
    {"name", "names", "at", "id", "ids", "version", "type", "expires", "status", "url", "uri"}
)


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_secret_key(key: str) -> bool:
    words = _words(key)
    if not words or words[-1] in _SAFE_LAST_WORDS:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _KEY_PAIRS for pair in itertools.pairwise(words))


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking key's value masked, at any depth."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and is_secret_key(k) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class AuditRepository(ScopedRepository[AuditLogRow]):
    model = AuditLogRow
    object_type = "audit entry"
    system_tenant_id = SYSTEM_TENANT

    async def record(
        self,
        *,
        actor_user_id: str | None,
        actor_role: str | None,
        action: str,
        object_type: str,
        object_id: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> AuditLogRow:
        """Append an entry for this tenant (a SystemScope writes a system-wide ``"*"``
        entry; use ``.for_tenant(t)`` to log a super admin's change to tenant t)."""
        row = AuditLogRow(
            actor_user_id=actor_user_id,
            actor_role=actor_role,
            action=action,
            object_type=object_type,
            object_id=object_id,
            before=redact(before) if before is not None else None,
            after=redact(after) if after is not None else None,
        )
        return await self._add(row, conflict="audit entry conflict")

    async def list(
        self,
        object_type: str | None = None,
        object_id: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[AuditLogRow]:
        """Newest first; page with ``before_id`` = the last id of the previous page."""
        stmt = self._select().order_by(AuditLogRow.id.desc()).limit(max(1, min(limit, 1000)))
        if object_type is not None:
            stmt = stmt.where(AuditLogRow.object_type == object_type)
        if object_id is not None:
            stmt = stmt.where(AuditLogRow.object_id == object_id)
        if before_id is not None:
            stmt = stmt.where(AuditLogRow.id < before_id)
        return await self._all(stmt)


__all__ = ["AuditRepository", "is_secret_key", "redact"]
