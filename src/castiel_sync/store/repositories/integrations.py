"""Integration instances (container ``integrations``, partition key tenant_id)."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import func

from castiel_sync.domain.config import IntegrationSettings
from castiel_sync.store.base import utcnow
from castiel_sync.store.errors import ConflictError, NotFoundError
from castiel_sync.store.repositories._base import ScopedRepository
from castiel_sync.store.repositories.providers import ProviderRepository
from castiel_sync.store.tables import IntegrationRow

#: Columns that hold an :class:`IntegrationSettings` field (snake_case names match).
SETTINGS_COLUMNS = tuple(IntegrationSettings.model_fields)

#: Columns ``update`` may change besides the settings (pass ``settings=`` for those).
UPDATABLE_COLUMNS = frozenset(
    {
        "name",
        "status",
        "status_reason",
        "credential_secret_name",
        "webhook_secret_name",
        "last_sync_at",
        "next_sync_at",
        "cursors",
        *SETTINGS_COLUMNS,
    }
)

INTEGRATION_STATUSES = frozenset({"pending", "active", "paused", "error", "disabled"})


def settings_columns(settings: IntegrationSettings) -> dict[str, Any]:
    """An :class:`IntegrationSettings` as column values (JSON-ready, snake_case)."""
    dumped = settings.model_dump(mode="json", by_alias=False)
    return {name: dumped[name] for name in SETTINGS_COLUMNS}


class IntegrationRepository(ScopedRepository[IntegrationRow]):
    model = IntegrationRow
    object_type = "integration"

    @staticmethod
    def settings_of(row: IntegrationRow) -> IntegrationSettings:
        """The row's settings as the validated model (the one row -> model conversion)."""
        return IntegrationSettings.model_validate(
            {name: getattr(row, name) for name in SETTINGS_COLUMNS}
        )

    async def create(
        self,
        *,
        provider_id: str,
        name: str,
        instance_id: str,
        settings: IntegrationSettings,
        created_by: str | None,
    ) -> IntegrationRow:
        """A new instance (status ``pending``) of a provider this scope can see."""
        self._tenant_id("create")
        await self._sibling(ProviderRepository).get(provider_id)
        conflict = (
            f"an integration of provider {provider_id!r} with instance id "
            f"{instance_id!r} already exists"
        )
        taken = await self._first(
            self._select().where(
                IntegrationRow.provider_id == provider_id,
                IntegrationRow.instance_id == instance_id,
            )
        )
        if taken is not None:
            raise ConflictError(conflict)
        row = IntegrationRow(
            provider_id=provider_id,
            name=name,
            instance_id=instance_id,
            created_by=created_by,
            status="pending",
            row_version=1,
            cursors={},
            **settings_columns(settings),
        )
        return await self._add(row, conflict=conflict)

    async def get(self, integration_id: str) -> IntegrationRow:
        row: IntegrationRow = await self._one(
            self._select().where(IntegrationRow.id == integration_id), integration_id
        )
        return row

    async def list(
        self, *, provider_id: str | None = None, status: str | None = None
    ) -> list[IntegrationRow]:
        stmt = self._select().order_by(IntegrationRow.created_at, IntegrationRow.id)
        if provider_id is not None:
            stmt = stmt.where(IntegrationRow.provider_id == provider_id)
        if status is not None:
            stmt = stmt.where(IntegrationRow.status == status)
        return await self._all(stmt)

    async def update(
        self,
        integration_id: str,
        *,
        expected_row_version: int | None = None,
        **fields: Any,
    ) -> IntegrationRow:
        """Change columns (``settings=IntegrationSettings`` sets every settings column) and
        bump ``row_version``. With ``expected_row_version`` the write happens only if the
        row is still at that version, else :class:`ConflictError`."""
        values = dict(fields)
        settings = values.pop("settings", None)
        if settings is not None:
            values.update(settings_columns(settings))
        unknown = set(values) - UPDATABLE_COLUMNS
        if unknown:
            raise ValueError(f"integration fields that cannot be updated: {sorted(unknown)}")
        if "status" in values and values["status"] not in INTEGRATION_STATUSES:
            raise ValueError(f"unknown integration status {values['status']!r}")
        stmt = (
            self._update()
            .where(IntegrationRow.id == integration_id)
            .values(**values, row_version=IntegrationRow.row_version + 1, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if expected_row_version is not None:
            stmt = stmt.where(IntegrationRow.row_version == expected_row_version)
        result = await self._execute(stmt)
        if result.rowcount == 0:  # type: ignore[attr-defined]
            current = await self.get(integration_id)  # NotFoundError when not in scope
            raise ConflictError(
                f"integration {integration_id!r} was changed by someone else "
                f"(version {current.row_version}, expected {expected_row_version}); "
                "reload it and try again"
            )
        return await self._reload(integration_id)

    async def delete(self, integration_id: str) -> IntegrationRow:
        """Delete the instance (its connections, states and history cascade); returns the
        row as it was."""
        row = await self.get(integration_id)
        await self._execute(
            self._delete()
            .where(IntegrationRow.id == integration_id)
            .execution_options(synchronize_session=False)
        )
        self._forget(row)
        return row

    async def due(
        self, now: datetime, limit: int = 100, *, lock: bool = False
    ) -> builtins.list[IntegrationRow]:
        """Enabled, active integrations whose next sync is due, oldest first. Meant for the
        scheduler's SystemScope; a TenantScope sees only its own. ``lock=True`` locks the
        rows until the transaction ends and skips rows another scheduler holds
        (PostgreSQL ``FOR UPDATE SKIP LOCKED``; SQLite has one writer anyway)."""
        stmt = (
            self._select()
            .where(
                IntegrationRow.sync_enabled.is_(True),
                IntegrationRow.status == "active",
                IntegrationRow.next_sync_at.is_not(None),
                IntegrationRow.next_sync_at <= now,
            )
            .order_by(IntegrationRow.next_sync_at, IntegrationRow.id)
            .limit(limit)
        )
        if lock:
            stmt = stmt.with_for_update(skip_locked=True)
        return await self._all(stmt)

    async def claim_due(
        self, integration_id: str, due_at: datetime, next_at: datetime | None
    ) -> bool:
        """The scheduler's claim on one due run: move ``next_sync_at`` from ``due_at`` (the
        value it read) to ``next_at`` (None: no next run), only while the integration is
        still enabled and active. True for exactly one of several schedulers racing for
        the same run."""
        result = await self._execute(
            self._update()
            .where(
                IntegrationRow.id == integration_id,
                IntegrationRow.next_sync_at == due_at,
                IntegrationRow.sync_enabled.is_(True),
                IntegrationRow.status == "active",
            )
            .values(next_sync_at=next_at)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]

    async def count(self) -> int:
        return int((await self._execute(self._select(func.count(IntegrationRow.id)))).scalar_one())

    async def _reload(self, integration_id: str) -> IntegrationRow:
        row: IntegrationRow = await self._fresh(
            self._select().where(IntegrationRow.id == integration_id), integration_id
        )
        return row


__all__ = ["IntegrationRepository", "NotFoundError", "settings_columns"]
