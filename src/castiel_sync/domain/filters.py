"""Structured pull filters. Adapters render them in their own query language with proper
quoting (SOQL, OData, search APIs), so a tenant's filter can never inject."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FilterOp = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "starts_with", "is_null"]


class FilterCondition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
    op: FilterOp
    value: Any = None
