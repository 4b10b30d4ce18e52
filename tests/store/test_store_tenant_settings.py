from __future__ import annotations

import pytest
from store_helpers import SYSTEM, TENANT_A, TENANT_B

from castiel_sync.settings import Settings
from castiel_sync.store import Store
from castiel_sync.store.errors import ScopeError
from castiel_sync.store.repositories import LimitOverrides, Limits, TenantSettingsRepository

DEFAULTS = Settings(max_records_per_sync=900, max_concurrent_syncs=3)


async def test_effective_limits_fall_back_tenant_global_defaults(store: Store) -> None:
    async with store.transaction() as session:
        a = TenantSettingsRepository(session, TENANT_A, defaults=DEFAULTS)
        assert await a.effective() == Limits(900, 3)
        system = TenantSettingsRepository(session, SYSTEM, defaults=DEFAULTS)
        assert await system.set_global_limits(max_records_per_sync=500) == LimitOverrides(500, None)
        assert await a.effective() == Limits(500, 3)
        await system.for_tenant("tenant-a").set_limits(max_concurrent_syncs=7)
        assert await a.effective() == Limits(500, 7)
        assert await a.set_limits(max_records_per_sync=1000) == LimitOverrides(1000, 7)
        assert await a.effective() == Limits(1000, 7)
        assert await a.set_limits(max_records_per_sync=None) == LimitOverrides(None, 7)
        assert await a.effective() == Limits(500, 7)
        assert await a.overrides() == LimitOverrides(None, 7)
        assert await system.global_overrides() == LimitOverrides(500, None)
        b = TenantSettingsRepository(session, TENANT_B, defaults=DEFAULTS)
        assert await b.effective() == Limits(500, 3)  # A's row does not leak to B
        assert await b.overrides() == LimitOverrides()


async def test_limits_are_bounded(store: Store) -> None:
    async with store.transaction() as session:
        a = TenantSettingsRepository(session, TENANT_A, defaults=DEFAULTS)
        with pytest.raises(ValueError, match="1000"):
            await a.set_limits(max_records_per_sync=1001)
        with pytest.raises(ValueError, match="10"):
            await a.set_limits(max_concurrent_syncs=11)
        with pytest.raises(ValueError):
            await a.set_limits(max_concurrent_syncs=0)


async def test_scope_rules(store: Store) -> None:
    async with store.transaction() as session:
        a = TenantSettingsRepository(session, TENANT_A, defaults=DEFAULTS)
        with pytest.raises(ScopeError):
            await a.set_global_limits(max_records_per_sync=1)
        system = TenantSettingsRepository(session, SYSTEM, defaults=DEFAULTS)
        with pytest.raises(ScopeError):
            await system.effective()
        with pytest.raises(ScopeError):
            await system.set_limits(max_records_per_sync=1)
        assert await system.global_overrides() == LimitOverrides()
        # B writing its own limits never touches A's row or the global one.
        await TenantSettingsRepository(session, TENANT_B, defaults=DEFAULTS).set_limits(
            max_records_per_sync=10
        )
        assert await a.effective() == Limits(900, 3)
        assert await system.global_overrides() == LimitOverrides()
