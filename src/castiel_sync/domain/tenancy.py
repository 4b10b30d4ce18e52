"""Tenancy in the types.

Every repository is constructed with a :data:`Scope`. A :class:`TenantScope` confines
every read and write to one tenant; a :class:`SystemScope` is the explicit, named
exception for system work (the scheduler scanning all tenants, the catalog loader).
There is no third way to build a repository, so a query that forgets the tenant cannot
be written by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

TenantId = NewType("TenantId", str)
UserId = NewType("UserId", str)


@dataclass(frozen=True, slots=True)
class TenantScope:
    tenant_id: TenantId

    def __post_init__(self) -> None:
        if not self.tenant_id:
            raise ValueError("a tenant scope needs a tenant id")


@dataclass(frozen=True, slots=True)
class SystemScope:
    """System-wide access. ``reason`` names the caller, for logs and review."""

    reason: str


Scope = TenantScope | SystemScope
