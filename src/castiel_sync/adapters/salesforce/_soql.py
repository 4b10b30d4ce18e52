"""SOQL text built from declared entities and structured filters, never from raw strings.

A tenant's pull filter is a :class:`FilterCondition` (field, op, value). Its field must be
one the entity declares; its value is rendered as a literal of that field's type, so no
value can leave its literal:

- strings are single-quoted and escaped with a backslash. ``'`` and ``\\`` are reserved
  (https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/
  sforce_api_calls_soql_select_reservedcharacters.htm); ``"``, newline, carriage return,
  tab, bell (``\\b``) and form feed have escapes too, and in a LIKE pattern ``\\%`` and
  ``\\_`` match themselves (sforce_api_calls_soql_select_quotedstringescapes.htm). Other
  control characters have no escape and are refused.
- dateTime literals are unquoted ``YYYY-MM-DDThh:mm:ssZ`` in UTC and date literals
  ``YYYY-MM-DD`` (sforce_api_calls_soql_select_dateformats.htm). A dateTime is floored to
  the second: with ``>=`` that can only include more records, never fewer.
- numbers are rendered from ``int``/``float``/``Decimal`` (or a numeric string) and
  checked against a plain decimal pattern; booleans are ``TRUE``/``FALSE``.
- AND and OR are never mixed without parentheses, as SOQL requires
  (sforce_api_calls_soql_select_logicaloperators.htm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from castiel_sync.adapters.salesforce._entities import EntitySpec, FieldType
from castiel_sync.sdk import AdapterValidationError, FilterCondition, parse_timestamp

STRING_TYPES: frozenset[FieldType] = frozenset(
    {"id", "reference", "string", "textarea", "picklist", "email", "phone", "url"}
)
NUMBER_TYPES: frozenset[FieldType] = frozenset({"int", "double", "currency", "percent"})

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")
_COMPARISONS = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# LIKE and IN hold at most this many characters / values (WHERE strings are capped at
# 4,000 characters by Salesforce); beyond it the tenant's filter is rejected, not truncated.
MAX_IN_VALUES = 200
MAX_WHERE_LENGTH = 4000


def invalid(message: str, detail: str | None = None) -> AdapterValidationError:
    return AdapterValidationError(message, detail=detail)


def escape_string(value: str, *, like: bool = False) -> str:
    """``value`` as the inside of a SOQL string literal (without the quotes)."""
    out: list[str] = []
    for char in value:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif like and char in "%_":
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            raise invalid("a filter value contains a control character SOQL cannot express")
        else:
            out.append(char)
    return "".join(out)


def quote(value: str, *, like: bool = False) -> str:
    return "'" + escape_string(value, like=like) + "'"


def datetime_literal(value: datetime | str) -> str:
    """A SOQL dateTime literal in UTC, floored to the second."""
    if isinstance(value, str):
        parsed = parse_timestamp(value)
        if parsed is None:
            raise invalid(f"{value!r} is not an ISO 8601 date and time")
        value = parsed
    if not isinstance(value, datetime):
        raise invalid("expected a date and time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def date_literal(value: date | str) -> str:
    if isinstance(value, datetime):
        raise invalid("expected a date without a time")
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise invalid(f"{value!r} is not an ISO 8601 date") from None
    if not isinstance(value, date):
        raise invalid("expected a date")
    return value.isoformat()


def number_literal(value: Any) -> str:
    if isinstance(value, bool):
        raise invalid("expected a number, not a boolean")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise invalid("expected a finite number")
        text = format(Decimal(repr(value)), "f")
    elif isinstance(value, Decimal | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise invalid(f"{value!r} is not a number") from None
        if not number.is_finite():
            raise invalid("expected a finite number")
        text = format(number, "f")
    else:
        raise invalid("expected a number")
    if not _NUMBER.fullmatch(text):
        raise invalid(f"{value!r} is not a plain decimal number")
    return text


def literal(value: Any, field_type: FieldType) -> str:
    """``value`` as a SOQL literal of ``field_type``; AdapterValidationError when it is not one."""
    if value is None:
        return "null"
    if field_type in STRING_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise invalid("expected text")
        text = str(value)
        if field_type in ("id", "reference") and not _ID.fullmatch(text):
            raise invalid(f"{text!r} is not a Salesforce record id")
        return quote(text)
    if field_type in NUMBER_TYPES:
        return number_literal(value)
    if field_type == "boolean":
        if not isinstance(value, bool):
            raise invalid("expected true or false")
        return "TRUE" if value else "FALSE"
    if field_type == "datetime":
        return datetime_literal(value)
    if field_type == "date":
        return date_literal(value)
    raise invalid(f"cannot filter on a field of type {field_type}")  # pragma: no cover


def render_condition(spec: EntitySpec, condition: FilterCondition) -> str:
    """One filter as a parenthesised SOQL field expression."""
    field = spec.canonical(condition.field)
    if field is None or field == "IsDeleted":
        raise invalid(
            f"{condition.field!r} is not a filterable {spec.name} field",
            detail=f"allowed: {', '.join(sorted(spec.all_fields))}",
        )
    field_type = spec.all_fields[field]
    op, value = condition.op, condition.value
    if op in _COMPARISONS:
        if value is None and op not in ("eq", "ne"):
            raise invalid(f"{op} needs a value")
        if op not in ("eq", "ne") and field_type == "boolean":
            raise invalid(f"{op} does not apply to a true/false field")
        return f"({field} {_COMPARISONS[op]} {literal(value, field_type)})"
    if op == "is_null":
        if not isinstance(value, bool) and value is not None:
            raise invalid("is_null takes true or false")
        return f"({field} {'=' if value in (None, True) else '!='} null)"
    if op == "in":
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise invalid("in takes a list of values")
        values = list(value)
        if not values or len(values) > MAX_IN_VALUES:
            raise invalid(f"in takes between 1 and {MAX_IN_VALUES} values")
        if field_type == "boolean":
            raise invalid("in does not apply to a true/false field")
        rendered = ", ".join(literal(v, field_type) for v in values if v is not None)
        if len(rendered) == 0:
            raise invalid("in takes non-null values")
        return f"({field} IN ({rendered}))"
    if op in ("contains", "starts_with"):
        if field_type not in STRING_TYPES or field_type in ("id", "reference"):
            raise invalid(f"{op} applies to text fields only")
        if not isinstance(value, str) or not value:
            raise invalid(f"{op} takes non-empty text")
        pattern = escape_string(value, like=True)
        pattern = f"%{pattern}%" if op == "contains" else f"{pattern}%"
        return f"({field} LIKE '{pattern}')"
    raise invalid(f"unsupported filter operator {op!r}")  # pragma: no cover


def build_select(
    spec: EntitySpec,
    *,
    fields: Sequence[str] | None = None,
    filters: Sequence[FilterCondition] = (),
    since: datetime | None = None,
    after: tuple[str, str] | None = None,
    include_deleted: bool = False,
    extra: Sequence[str] = (),
) -> str:
    """The SELECT for one fetch, ordered by ``SystemModstamp, Id`` (the tie-breaker).

    ``since`` keeps records modified at or after it; ``after`` = (SystemModstamp literal
    source, Id) continues strictly after the last record returned (keyset paging).
    """
    selected = select_list(spec, fields, include_deleted=include_deleted)
    where: list[str] = [render_condition(spec, f) for f in filters]
    where.extend(extra)
    if since is not None:
        where.append(f"(SystemModstamp >= {datetime_literal(since)})")
    if after is not None:
        stamp = datetime_literal(after[0])
        record_id = quote(after[1])
        where.append(
            f"((SystemModstamp > {stamp}) OR (SystemModstamp = {stamp} AND Id > {record_id}))"
        )
    # Every part is a validated field name or a rendered literal (see the module doc).
    soql = f"SELECT {', '.join(selected)} FROM {spec.sobject}"  # noqa: S608
    if where:
        clause = " AND ".join(where)
        if len(clause) > MAX_WHERE_LENGTH:
            raise invalid("the pull filters are too long for one Salesforce query")
        soql += f" WHERE {clause}"
    return soql + " ORDER BY SystemModstamp ASC, Id ASC"


def select_list(
    spec: EntitySpec, fields: Sequence[str] | None, *, include_deleted: bool = False
) -> list[str]:
    """Id and SystemModstamp always; the requested (validated) or all declared fields."""
    wanted: list[str] = ["Id", "SystemModstamp"]
    names = list(fields) if fields else list(spec.all_fields)
    for name in names:
        canonical = spec.canonical(name)
        if canonical is None:
            raise invalid(f"{name!r} is not a {spec.name} field")
        if canonical == "IsDeleted" and not include_deleted:
            continue
        if canonical not in wanted:
            wanted.append(canonical)
    if include_deleted and "IsDeleted" not in wanted:
        wanted.append("IsDeleted")
    return wanted
