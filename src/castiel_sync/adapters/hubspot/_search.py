"""Rendering pull filters as CRM search filters, and the incremental scan's checkpoint.

Search request bodies are JSON (``filterGroups[].filters[]`` of ``propertyName``,
``operator``, ``value``/``values``), so there is no query language to escape; a tenant
could still smuggle structure (a dict where a value goes), an invalid property name, or a
``*`` wildcard into ``CONTAINS_TOKEN``. Every value is therefore typed here into the
string HubSpot expects and anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from castiel_sync.sdk import AdapterValidationError, FilterCondition

# CRM search limits (search docs "Limitations" and the changelog "Expanded filtering
# capabilities ... in HubSpot's Search API", 2024-08-26): up to 5 filterGroups, 10
# filters per group, 25 in all; page ``limit`` at most 200; 10,000 results per query.
MAX_FILTERS_PER_GROUP = 10
MAX_SEARCH_LIMIT = 200
SEARCH_RESULT_CAP = 10_000
# Property internal names are lowercase identifiers; custom ones may carry digits and _.
_PROPERTY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_MAX_VALUE_LENGTH = 1000
_MAX_IN_VALUES = 100

_OPERATORS = {
    "eq": "EQ",
    "ne": "NEQ",
    "gt": "GT",
    "gte": "GTE",
    "lt": "LT",
    "lte": "LTE",
    "in": "IN",
    "contains": "CONTAINS_TOKEN",
    "starts_with": "CONTAINS_TOKEN",
}


def property_name(name: str) -> str:
    """A validated property name; accepts the mapping form ``properties.x``."""
    bare = name.removeprefix("properties.")
    if not _PROPERTY.fullmatch(bare):
        raise AdapterValidationError(
            "a HubSpot filter names an invalid property", detail=f"property {name[:120]!r}"
        )
    return bare


def to_millis(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def filter_value(value: Any) -> str:
    """One filter operand as HubSpot takes it: strings; dates as epoch milliseconds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AdapterValidationError("a HubSpot filter value is not a finite number")
        return repr(value)
    if isinstance(value, datetime):
        return str(to_millis(value))
    if isinstance(value, date):
        return str(to_millis(datetime(value.year, value.month, value.day, tzinfo=UTC)))
    if isinstance(value, str):
        if len(value) > _MAX_VALUE_LENGTH or any(ord(c) < 32 for c in value):
            raise AdapterValidationError(
                "a HubSpot filter value is too long or has control characters"
            )
        return value
    raise AdapterValidationError(
        "a HubSpot filter value must be a string, number, boolean or date",
        detail=f"got {type(value).__name__}",
    )


def render_filter(condition: FilterCondition) -> dict[str, Any]:
    """One ``FilterCondition`` as a search filter."""
    name = property_name(condition.field)
    op = condition.op
    if op == "is_null":
        # value True (or None): the property is unset; False: it is set.
        operator = "HAS_PROPERTY" if condition.value is False else "NOT_HAS_PROPERTY"
        return {"propertyName": name, "operator": operator}
    if op == "in":
        values = condition.value
        if not isinstance(values, list | tuple) or not values or len(values) > _MAX_IN_VALUES:
            raise AdapterValidationError(f"the 'in' filter on {name} needs 1-100 values")
        return {"propertyName": name, "operator": "IN", "values": [filter_value(v) for v in values]}
    if op not in _OPERATORS:
        raise AdapterValidationError(f"HubSpot search has no operator for {op!r}")
    value = filter_value(condition.value)
    if op in ("contains", "starts_with"):
        # CONTAINS_TOKEN treats ``*`` as a wildcard; a tenant's literal must not become one.
        if "*" in value or not value.strip():
            raise AdapterValidationError(f"the {op} filter on {name} cannot contain '*'")
        if op == "starts_with":
            if any(c.isspace() for c in value):
                raise AdapterValidationError("starts_with on HubSpot takes a single token")
            value += "*"
    return {"propertyName": name, "operator": _OPERATORS[op], "value": value}


def render_filters(conditions: list[FilterCondition]) -> list[dict[str, Any]]:
    rendered = [render_filter(c) for c in conditions]
    # The scan adds up to two filters of its own to the same group.
    if len(rendered) > MAX_FILTERS_PER_GROUP - 2:
        raise AdapterValidationError(
            f"HubSpot takes at most {MAX_FILTERS_PER_GROUP - 2} pull filters per entity"
        )
    return rendered


@dataclass
class ScanState:
    """Where a fetch is, carried in ``FetchResult.next_cursor`` (base64url JSON).

    phases: ``list`` (full fetch, list API ``after``), ``search`` (keyset over the
    modified date), ``ties`` (one timestamp, keyset over ``hs_object_id``) and
    ``archived`` (tombstones), in that order.
    """

    phase: str
    after: str | None = None  # list/archived: the list API's paging.next.after
    lo: int | None = None  # search: lower bound of the modified date, epoch ms
    open: bool = False  # search: GT instead of GTE
    skip: list[str] = field(default_factory=list)  # ids at ``lo`` already returned
    tie: int | None = None  # ties: the shared timestamp
    last_id: str | None = None  # ties: the last hs_object_id returned

    def encode(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v not in (None, False, [])}
        return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> ScanState:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = orjson.loads(raw)
            state = cls(**data)
        except (binascii.Error, ValueError, TypeError):
            raise AdapterValidationError("the HubSpot page cursor is not valid") from None
        ok = (
            state.phase in ("list", "search", "ties", "archived")
            and all(isinstance(v, str | None) for v in (state.after, state.last_id))
            and all(isinstance(v, int | None) for v in (state.lo, state.tie))
            and isinstance(state.open, bool)
            and isinstance(state.skip, list)
            and all(isinstance(s, str) for s in state.skip)
        )
        if not ok:
            raise AdapterValidationError("the HubSpot page cursor is not valid")
        return state
