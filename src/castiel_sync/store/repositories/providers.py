"""The provider catalog (container ``integration_providers``; system-wide, no tenant).

A TenantScope sees only what tenant admins may use: ``audience == 'tenant'`` and status
``active`` or ``beta``. A SystemScope sees everything and alone may change it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement

from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import IntegrationProviderRow

PROVIDER_STATUSES = frozenset({"active", "beta", "deprecated", "disabled"})
PROVIDER_AUDIENCES = frozenset({"system", "tenant"})
TENANT_VISIBLE_STATUSES = ("active", "beta")


class ProviderRepository(ScopedRepository[IntegrationProviderRow]):
    model = IntegrationProviderRow
    object_type = "provider"

    def _criteria(self, model: type[Any], *, write: bool) -> list[ColumnElement[bool]]:
        if self.is_system:
            return []
        if model is not IntegrationProviderRow:
            return super()._criteria(model, write=write)
        return [
            IntegrationProviderRow.audience == "tenant",
            IntegrationProviderRow.status.in_(TENANT_VISIBLE_STATUSES),
        ]

    async def list(self, category: str | None = None) -> list[IntegrationProviderRow]:
        stmt = self._select().order_by(IntegrationProviderRow.category, IntegrationProviderRow.id)
        if category is not None:
            stmt = stmt.where(IntegrationProviderRow.category == category)
        return await self._all(stmt)

    async def get(self, provider_id: str) -> IntegrationProviderRow:
        row: IntegrationProviderRow = await self._one(
            self._select().where(IntegrationProviderRow.id == provider_id), provider_id
        )
        return row

    async def set_status(self, provider_id: str, status: str) -> IntegrationProviderRow:
        """A super admin's change; it survives catalog reloads (``status_overridden``)."""
        self._require_system("set_status")
        if status not in PROVIDER_STATUSES:
            raise ValueError(f"unknown provider status {status!r}")
        return await self._set(provider_id, status=status, status_overridden=True)

    async def set_audience(self, provider_id: str, audience: str) -> IntegrationProviderRow:
        """A super admin's change; it survives catalog reloads (``audience_overridden``)."""
        self._require_system("set_audience")
        if audience not in PROVIDER_AUDIENCES:
            raise ValueError(f"unknown provider audience {audience!r}")
        return await self._set(provider_id, audience=audience, audience_overridden=True)

    async def upsert(
        self,
        *,
        provider_id: str,
        name: str,
        category: str,
        status: str,
        audience: str,
        auth_type: str,
        definition: dict[str, Any],
    ) -> IntegrationProviderRow:
        """Load one catalog entry (system scope). Status and audience a super admin has
        overridden are kept."""
        self._require_system("upsert")
        if status not in PROVIDER_STATUSES:
            raise ValueError(f"unknown provider status {status!r}")
        if audience not in PROVIDER_AUDIENCES:
            raise ValueError(f"unknown provider audience {audience!r}")
        existing = await self._first(self._select().where(IntegrationProviderRow.id == provider_id))
        if existing is None:
            row = IntegrationProviderRow(
                id=provider_id,
                name=name,
                category=category,
                status=status,
                audience=audience,
                auth_type=auth_type,
                definition=definition,
                status_overridden=False,
                audience_overridden=False,
            )
            return await self._add(row, conflict=f"provider {provider_id!r} already exists")
        values: dict[str, Any] = {
            "name": name,
            "category": category,
            "auth_type": auth_type,
            "definition": definition,
        }
        if not existing.status_overridden:
            values["status"] = status
        if not existing.audience_overridden:
            values["audience"] = audience
        return await self._set(provider_id, **values)

    async def _set(self, provider_id: str, **values: Any) -> IntegrationProviderRow:
        await self._execute(
            self._update()
            .where(IntegrationProviderRow.id == provider_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        row: IntegrationProviderRow = await self._fresh(
            self._select().where(IntegrationProviderRow.id == provider_id), provider_id
        )
        return row


__all__ = ["NotFoundError", "ProviderRepository"]
