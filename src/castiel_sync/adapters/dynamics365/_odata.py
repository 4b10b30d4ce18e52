"""Pull filters rendered as OData v4 ``$filter`` expressions, safely.

Literal syntax (Dataverse "Filter rows using OData", webapi/query/filter-rows.md):

- comparison operators ``eq ne gt ge lt le``; ``and``/``or``/``not``; parentheses;
- strings in single quotes, a quote inside doubled (``'O''Bryan'``) - an unescaped quote
  is "There is an unterminated literal at position N in '...'";
- ``contains``/``startswith`` take T-SQL wildcards (``%``, ``_``, ``[]``), so a tenant's
  literal ``%`` or ``_`` is bracketed (``[%]``) to match itself (wildcard-characters.md);
- date/time values unquoted ISO 8601 (``modifiedon ge 2024-01-01T00:00:00Z``), numbers and
  ``true``/``false``/``null`` bare;
- the query string is URL-encoded by the HTTP client (``+``, ``&``... become ``%2B``...).

Field names are checked against the entity's declared columns (or a custom column name),
so a filter can name only a column, never an expression.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from castiel_sync.adapters.dynamics365._entities import CUSTOM_COLUMN, ColumnType, EntitySpec
from castiel_sync.sdk import AdapterValidationError, FilterCondition, parse_timestamp

_OPS = {"eq": "eq", "ne": "ne", "gt": "gt", "gte": "ge", "lt": "lt", "lte": "le"}


def invalid(message: str) -> AdapterValidationError:
    return AdapterValidationError(message, detail=message, status_code=400)


def escape_string(value: str) -> str:
    """An OData string literal: single-quoted, quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def escape_like(value: str) -> str:
    """A value for ``contains``/``startswith`` with its wildcard characters made literal."""
    return "".join(f"[{ch}]" if ch in "%_[" else ch for ch in value)


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def literal(value: Any, kind: ColumnType | None = None) -> str:
    """``value`` as an OData literal of the column's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        if kind not in (None, "bool"):
            raise invalid(f"a true/false value cannot be compared with a {kind} column")
        return "true" if value else "false"
    if kind == "bool":
        raise invalid("a true/false column needs a boolean value")
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if kind in ("datetime", "date") and isinstance(value, str):
        parsed = parse_timestamp(value)
        if parsed is None:
            raise invalid(f"{value!r} is not an ISO 8601 date/time")
        is_date = kind == "date" and len(value.strip()) == 10
        return parsed.date().isoformat() if is_date else iso(parsed)
    if isinstance(value, uuid.UUID) or kind == "guid":
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise invalid(f"{value!r} is not a GUID") from None
    if isinstance(value, (int, float, Decimal)):
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid("a number filter value must be finite")
        if kind in ("string", "memo"):
            return escape_string(str(value))
        return str(value)
    if isinstance(value, str):
        if kind in ("int", "decimal", "money"):
            try:
                number = Decimal(value)
            except ArithmeticError:
                raise invalid(f"{value!r} is not a number") from None
            if not number.is_finite():
                raise invalid("a number filter value must be finite")
            return str(number)
        return escape_string(value)
    raise invalid(f"a {type(value).__name__} cannot be a filter value")


def column(spec: EntitySpec, name: str) -> ColumnType:
    kind = spec.column_type(name)
    if kind is not None:
        return kind
    if CUSTOM_COLUMN.fullmatch(name):
        return "string"
    raise invalid(f"{name!r} is not a filterable {spec.name} column")


def condition(spec: EntitySpec, cond: FilterCondition) -> str:
    """One tenant condition as an OData boolean expression."""
    name = cond.field
    kind = column(spec, name)
    op, value = cond.op, cond.value
    if op in _OPS:
        if value is None and op not in ("eq", "ne"):
            raise invalid(f"{op} needs a value")
        return f"{name} {_OPS[op]} {literal(value, kind)}"
    if op == "is_null":
        return f"{name} {'eq' if value in (None, True) else 'ne'} null"
    if op == "in":
        if not isinstance(value, (list, tuple, set, frozenset)) or not value:
            raise invalid("'in' needs a non-empty list of values")
        if len(value) > 100:
            raise invalid("'in' takes at most 100 values")
        return "(" + " or ".join(f"{name} eq {literal(v, kind)}" for v in value) + ")"
    if op in ("contains", "starts_with"):
        if kind not in ("string", "memo") or not isinstance(value, str) or not value:
            raise invalid(f"{op} needs a text column and a non-empty text value")
        function = "contains" if op == "contains" else "startswith"
        return f"{function}({name},{escape_string(escape_like(value))})"
    raise invalid(f"the filter operator {op!r} is not supported for Dataverse")


def build_filter(
    spec: EntitySpec,
    filters: Iterable[FilterCondition] = (),
    *,
    since: datetime | None = None,
) -> str | None:
    """``$filter`` for the tenant's conditions (all must hold) and the incremental mark."""
    parts = [f"modifiedon ge {iso(since)}"] if since is not None else []
    parts += [condition(spec, c) for c in filters]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return " and ".join(f"({p})" for p in parts)
