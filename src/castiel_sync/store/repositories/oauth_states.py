"""Pending OAuth authorizations: created by the authorize endpoint, consumed once by the
callback. The callback has no tenant yet, so ``consume`` works under a SystemScope; the
state row names the tenant."""

from __future__ import annotations

import secrets
from datetime import datetime

from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import IntegrationRow, OAuthStateRow


class OAuthStateRepository(ScopedRepository[OAuthStateRow]):
    model = OAuthStateRow
    object_type = "oauth state"

    async def create(
        self,
        *,
        integration_id: str,
        redirect_uri: str,
        verifier_secret_name: str,
        expires_at: datetime,
        scope: str = "tenant",
        user_id: str = "",
        state: str | None = None,
    ) -> OAuthStateRow:
        """A new pending authorization for an integration of this tenant; ``state``
        defaults to 256 random bits."""
        self._tenant_id("create")
        await self._one(
            self._select(model=IntegrationRow).where(IntegrationRow.id == integration_id),
            integration_id,
        )
        row = OAuthStateRow(
            state=state or secrets.token_urlsafe(32),
            integration_id=integration_id,
            scope=scope,
            user_id=user_id,
            redirect_uri=redirect_uri,
            verifier_secret_name=verifier_secret_name,
            created_at=utcnow(),
            expires_at=expires_at,
        )
        return await self._add(row, conflict="that OAuth state is already in use")

    async def pending(self, state: str, *, now: datetime | None = None) -> OAuthStateRow:
        """The state, not taken (unknown or expired: NotFoundError): the callback reads its
        verifier before it consumes the state, so no sweep sees a verifier without it."""
        row = await self._by_state(state)
        self._refuse_expired(row, now)
        return row

    async def _by_state(self, state: str) -> OAuthStateRow:
        row: OAuthStateRow = await self._one(
            self._select().where(OAuthStateRow.state == state), "(state)"
        )
        return row

    def _refuse_expired(self, row: OAuthStateRow, now: datetime | None) -> None:
        if row.expires_at <= (now or utcnow()):
            raise NotFoundError(self.object_type, "(state)")

    async def verifier_names(self) -> set[str]:
        """The vault names of every pending authorization's PKCE verifier (expired ones
        included: their purge deletes them)."""
        rows = await self._all(self._select())
        return {row.verifier_secret_name for row in rows}

    async def consume(self, state: str, *, now: datetime | None = None) -> OAuthStateRow:
        """Take the state: it is deleted whatever happens, so it works once. An unknown,
        already used or expired state raises NotFoundError."""
        row = await self._by_state(state)
        result = await self._execute(
            self._delete()
            .where(OAuthStateRow.state == state)
            .execution_options(synchronize_session=False)
        )
        self._forget(row)
        if result.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent consume won
            raise NotFoundError(self.object_type, "(state)")
        self._refuse_expired(row, now)
        return row

    async def for_integration(self, integration_id: str) -> list[OAuthStateRow]:
        """The integration's pending authorizations (expired ones included)."""
        return await self._all(
            self._select()
            .where(OAuthStateRow.integration_id == integration_id)
            .order_by(OAuthStateRow.state)
        )

    async def expired(self, now: datetime) -> list[OAuthStateRow]:
        """The states past their expiry at ``now``: authorizations nobody completed."""
        return await self._all(
            self._select().where(OAuthStateRow.expires_at <= now).order_by(OAuthStateRow.state)
        )

    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete expired states; returns how many."""
        result = await self._execute(
            self._delete()
            .where(OAuthStateRow.expires_at <= (now or utcnow()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["OAuthStateRepository"]
