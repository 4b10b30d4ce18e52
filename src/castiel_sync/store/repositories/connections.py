"""Connection metadata (container ``integration_connections``; never the secret)."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import or_

from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import IntegrationConnectionRow, IntegrationRow

CONNECTION_SCOPES = frozenset({"system", "tenant", "user"})
CONNECTION_STATUSES = frozenset({"active", "expired", "refresh_failed", "revoked"})
#: How many refresh attempts a connection remembers.
REFRESH_HISTORY_LIMIT = 20


class ConnectionRepository(ScopedRepository[IntegrationConnectionRow]):
    model = IntegrationConnectionRow
    object_type = "connection"

    async def upsert(
        self,
        integration_id: str,
        *,
        scope: str,
        user_id: str = "",
        credential_secret_name: str,
        token_expires_at: datetime | None = None,
        status: str = "active",
    ) -> IntegrationConnectionRow:
        """Record that a credential was stored for (integration, scope, user). Writing a
        new credential bumps ``credential_version``."""
        self._tenant_id("upsert")
        if scope not in CONNECTION_SCOPES:
            raise ValueError(f"unknown connection scope {scope!r}")
        if status not in CONNECTION_STATUSES:
            raise ValueError(f"unknown connection status {status!r}")
        if (scope == "user") != bool(user_id):
            raise ValueError("a user id is required for, and only for, a user-scoped connection")
        await self._one(
            self._select(model=IntegrationRow).where(IntegrationRow.id == integration_id),
            integration_id,
        )
        existing = await self._first(self._key(integration_id, scope, user_id))
        if existing is None:
            row = IntegrationConnectionRow(
                integration_id=integration_id,
                scope=scope,
                user_id=user_id,
                credential_secret_name=credential_secret_name,
                token_expires_at=token_expires_at,
                status=status,
                credential_version=1,
                refresh_history=[],
            )
            return await self._add(
                row, conflict=f"a {scope} connection of integration {integration_id!r} exists"
            )
        await self._execute(
            self._update()
            .where(IntegrationConnectionRow.id == existing.id)
            .values(
                credential_secret_name=credential_secret_name,
                token_expires_at=token_expires_at,
                status=status,
                credential_version=IntegrationConnectionRow.credential_version + 1,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return await self.get(existing.id, fresh=True)

    async def get(self, connection_id: str, *, fresh: bool = False) -> IntegrationConnectionRow:
        stmt = self._select().where(IntegrationConnectionRow.id == connection_id)
        if fresh:
            stmt = stmt.execution_options(populate_existing=True)
        row: IntegrationConnectionRow = await self._one(stmt, connection_id)
        return row

    async def get_for(
        self, integration_id: str, scope: str, user_id: str = ""
    ) -> IntegrationConnectionRow:
        row: IntegrationConnectionRow = await self._one(
            self._key(integration_id, scope, user_id),
            f"{integration_id}/{scope}" + (f"/{user_id}" if user_id else ""),
        )
        return row

    async def list(self, integration_id: str | None = None) -> list[IntegrationConnectionRow]:
        stmt = self._select().order_by(
            IntegrationConnectionRow.created_at, IntegrationConnectionRow.id
        )
        if integration_id is not None:
            stmt = stmt.where(IntegrationConnectionRow.integration_id == integration_id)
        return await self._all(stmt)

    async def set_status(self, connection_id: str, status: str) -> IntegrationConnectionRow:
        if status not in CONNECTION_STATUSES:
            raise ValueError(f"unknown connection status {status!r}")
        result = await self._execute(
            self._update()
            .where(IntegrationConnectionRow.id == connection_id)
            .values(status=status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(self.object_type, connection_id)
        return await self.get(connection_id, fresh=True)

    async def delete(self, connection_id: str) -> IntegrationConnectionRow:
        row = await self.get(connection_id)
        await self._execute(
            self._delete()
            .where(IntegrationConnectionRow.id == connection_id)
            .execution_options(synchronize_session=False)
        )
        self._forget(row)
        return row

    async def record_refresh(
        self,
        connection_id: str,
        *,
        expected_credential_version: int,
        token_expires_at: datetime | None,
        ok: bool,
        error: str | None = None,
    ) -> bool:
        """Record a refresh attempt as a compare-and-swap on ``credential_version``: it
        applies only if the connection is still at ``expected_credential_version`` (and
        then bumps it). Returns False when another refresher got there first."""
        row = await self.get(connection_id, fresh=True)
        if row.credential_version != expected_credential_version:
            return False
        now = utcnow()
        entry: dict[str, Any] = {"at": now.isoformat(), "ok": ok}
        if error:
            entry["error"] = error[:500]
        history = [*(row.refresh_history or []), entry][-REFRESH_HISTORY_LIMIT:]
        values: dict[str, Any] = {
            "credential_version": IntegrationConnectionRow.credential_version + 1,
            "last_refreshed_at": now,
            "refresh_history": history,
            "status": "active" if ok else "refresh_failed",
            "refresh_lease_until": None,
            "updated_at": now,
        }
        if ok:
            values["token_expires_at"] = token_expires_at
        result = await self._execute(
            self._update()
            .where(
                IntegrationConnectionRow.id == connection_id,
                IntegrationConnectionRow.credential_version == expected_credential_version,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def try_lease(
        self,
        connection_id: str,
        *,
        now: datetime,
        until: datetime,
        expected_version: int | None = None,
    ) -> bool:
        """Claim the right to refresh this connection until ``until`` (so two refreshers
        on two machines do not both spend a rotating refresh token). False while someone
        else's lease runs; ``record_refresh`` clears it. ``expected_version``: only while
        the connection is still at that ``credential_version`` (a refresher that finished
        in between moved it: its freshly rotated token must not be refreshed again)."""
        stmt = self._update().where(
            IntegrationConnectionRow.id == connection_id,
            or_(
                IntegrationConnectionRow.refresh_lease_until.is_(None),
                IntegrationConnectionRow.refresh_lease_until <= now,
            ),
        )
        if expected_version is not None:
            stmt = stmt.where(IntegrationConnectionRow.credential_version == expected_version)
        result = await self._execute(
            stmt.values(refresh_lease_until=until).execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            await self.get(connection_id)  # NotFoundError when not in scope
            return False
        return True

    async def expiring(self, before: datetime) -> builtins.list[IntegrationConnectionRow]:
        """Active connections whose token expires at or before ``before`` (the hourly
        refresher's SystemScope query; a TenantScope sees only its own)."""
        return await self._all(
            self._select()
            .where(
                IntegrationConnectionRow.status == "active",
                IntegrationConnectionRow.token_expires_at.is_not(None),
                IntegrationConnectionRow.token_expires_at <= before,
            )
            .order_by(IntegrationConnectionRow.token_expires_at, IntegrationConnectionRow.id)
        )

    def _key(self, integration_id: str, scope: str, user_id: str) -> Any:
        return self._select().where(
            IntegrationConnectionRow.integration_id == integration_id,
            IntegrationConnectionRow.scope == scope,
            IntegrationConnectionRow.user_id == user_id,
        )


__all__ = ["ConnectionRepository"]
