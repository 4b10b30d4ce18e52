"""Per-tenant limits set by super admins, with a global row (``tenant_id='*'``) and the
:class:`~castiel_sync.settings.Settings` defaults behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from sqlalchemy import ColumnElement

from castiel_sync.domain.config import MAX_CONCURRENT_SYNCS, MAX_RECORDS_PER_SYNC
from castiel_sync.domain.tenancy import Scope, TenantScope
from castiel_sync.settings import Settings, get_settings
from castiel_sync.store.base import utcnow
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.tables import TenantSettingsRow

GLOBAL = "*"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: "Leave as it is" for the setters; ``None`` means "inherit" (clear the override).
UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Limits:
    max_records_per_sync: int
    max_concurrent_syncs: int


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    """What one row sets; None inherits from the next level."""

    max_records_per_sync: int | None = None
    max_concurrent_syncs: int | None = None


def _check(max_records_per_sync: Any, max_concurrent_syncs: Any) -> None:
    if max_records_per_sync not in (None, UNSET) and not (
        1 <= max_records_per_sync <= MAX_RECORDS_PER_SYNC
    ):
        raise ValueError(f"maxRecordsPerSync must be between 1 and {MAX_RECORDS_PER_SYNC}")
    if max_concurrent_syncs not in (None, UNSET) and not (
        1 <= max_concurrent_syncs <= MAX_CONCURRENT_SYNCS
    ):
        raise ValueError(f"concurrent syncs must be between 1 and {MAX_CONCURRENT_SYNCS}")


class TenantSettingsRepository(ScopedRepository[TenantSettingsRow]):
    model = TenantSettingsRow
    object_type = "tenant settings"
    system_tenant_id = GLOBAL

    def __init__(self, session: Any, scope: Scope, *, defaults: Settings | None = None) -> None:
        super().__init__(session, scope)
        self._defaults = defaults

    def for_tenant(self, tenant_id: str) -> Self:
        repo = super().for_tenant(tenant_id)
        repo._defaults = self._defaults
        return repo

    def _criteria(self, model: type[Any], *, write: bool) -> list[ColumnElement[bool]]:
        if self.is_system or write:
            return super()._criteria(model, write=write)
        assert isinstance(self.scope, TenantScope)
        # A tenant reads its own row and the global one, and writes only its own.
        return [TenantSettingsRow.tenant_id.in_([self.scope.tenant_id, GLOBAL])]

    async def effective(self) -> Limits:
        """This tenant's limits: its row, else the global row, else the settings."""
        tenant_id = self._tenant_id("effective")
        rows = {row.tenant_id: row for row in await self._all(self._select())}
        defaults = self._defaults or get_settings()

        def pick(name: str) -> int:
            for key in (tenant_id, GLOBAL):
                row = rows.get(key)
                if row is not None and getattr(row, name) is not None:
                    return int(getattr(row, name))
            return int(getattr(defaults, name))

        return Limits(
            max_records_per_sync=pick("max_records_per_sync"),
            max_concurrent_syncs=pick("max_concurrent_syncs"),
        )

    async def overrides(self) -> LimitOverrides:
        """What this tenant's own row sets."""
        return await self._overrides(self._tenant_id("overrides"))

    async def global_overrides(self) -> LimitOverrides:
        return await self._overrides(GLOBAL)

    async def set_limits(
        self, *, max_records_per_sync: Any = UNSET, max_concurrent_syncs: Any = UNSET
    ) -> LimitOverrides:
        """Set this tenant's overrides (None clears one, UNSET leaves it). The caller
        checks that the actor is a super admin."""
        tenant_id = self._tenant_id("set_limits")
        return await self._write(tenant_id, max_records_per_sync, max_concurrent_syncs)

    async def set_global_limits(
        self, *, max_records_per_sync: Any = UNSET, max_concurrent_syncs: Any = UNSET
    ) -> LimitOverrides:
        """Set the global row (system scope only)."""
        self._require_system("set_global_limits")
        return await self._write(GLOBAL, max_records_per_sync, max_concurrent_syncs)

    async def _overrides(self, key: str) -> LimitOverrides:
        row = await self._first(self._select().where(TenantSettingsRow.tenant_id == key))
        if row is None:
            return LimitOverrides()
        return LimitOverrides(row.max_records_per_sync, row.max_concurrent_syncs)

    async def _write(self, key: str, max_records: Any, max_concurrent: Any) -> LimitOverrides:
        _check(max_records, max_concurrent)
        values: dict[str, Any] = {}
        if max_records is not UNSET:
            values["max_records_per_sync"] = max_records
        if max_concurrent is not UNSET:
            values["max_concurrent_syncs"] = max_concurrent
        exists = await self._first(self._select().where(TenantSettingsRow.tenant_id == key))
        if exists is None:
            # The tenant comes from the scope: its own id, or "*" for a SystemScope.
            await self._add(
                TenantSettingsRow(**values), conflict="those limits were just set by someone else"
            )
        elif values:
            await self._execute(
                self._update()
                .where(TenantSettingsRow.tenant_id == key)
                .values(**values, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        return await self._overrides_fresh(key)

    async def _overrides_fresh(self, key: str) -> LimitOverrides:
        row = await self._first(
            self._select()
            .where(TenantSettingsRow.tenant_id == key)
            .execution_options(populate_existing=True)
        )
        if row is None:
            return LimitOverrides()
        return LimitOverrides(row.max_records_per_sync, row.max_concurrent_syncs)


__all__ = ["UNSET", "LimitOverrides", "Limits", "TenantSettingsRepository"]
