"""Canonical JSON and content fingerprints, for no-op detection and echo suppression.

Two values that mean the same data give the same bytes, whatever their key order or
Python types; any change of value changes the bytes. The encoding:

- objects with keys sorted (at every depth), no whitespace, UTF-8, strings as orjson
  escapes them (only what JSON requires);
- numbers by value: an integral float or Decimal is an integer (``1.0`` -> ``1``, ``-0.0``
  -> ``0``); other floats in their shortest round-tripping form; a Decimal that a float
  cannot hold exactly becomes its normalised string. NaN and infinities are refused
  (orjson would silently write them as ``null``);
- ``bool`` stays distinct from ``int`` (``true`` is not ``1``);
- datetimes in UTC as ``YYYY-MM-DDTHH:MM:SS[.fff|.ffffff]Z`` (naive ones are taken as
  UTC), dates as ``YYYY-MM-DD``; tuples are lists; sets are sorted lists; UUIDs and enums
  by their value.

The fingerprint is the SHA-256 hex digest of that encoding. Changing the encoding changes
every stored fingerprint (one spurious write per record), so it is pinned by tests.
"""

from __future__ import annotations

import enum
import hashlib
import math
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["canonical_datetime", "canonical_json", "canonical_value", "fingerprint"]

_MAX_SAFE_INT = 2**53
_INT64 = 2**63


def canonical_datetime(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with ``Z``; fraction only when non-zero, as
    milliseconds when that is exact, else microseconds. Naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    micro = moment.microsecond
    if micro == 0:
        timespec = "seconds"
    elif micro % 1000 == 0:
        timespec = "milliseconds"
    else:
        timespec = "microseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def _float(value: float) -> int | float:
    if not math.isfinite(value):
        raise ValueError(f"{value!r} has no JSON form")
    if value.is_integer() and abs(value) < _MAX_SAFE_INT:
        return int(value)
    return value


def _decimal(value: Decimal) -> int | float | str:
    if not value.is_finite():
        raise ValueError(f"{value!r} has no JSON form")
    if value.adjusted() < 19 and value == value.to_integral_value():
        integral = int(value)
        if abs(integral) < _INT64:
            return integral
        return str(value.normalize())
    as_float = float(value)
    if Decimal(repr(as_float)) == value:
        return _float(as_float)
    return str(value.normalize())


def canonical_value(value: Any) -> Any:
    """``value`` rebuilt from JSON-native types in their canonical form (see module doc)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if abs(value) >= _INT64:
            raise ValueError(f"integer {value} does not fit in 64 bits")
        return value
    if kind is float:
        return _float(value)
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            out[key] = canonical_value(item)
        return out
    if kind is list or kind is tuple:
        return [canonical_value(item) for item in value]
    return _other(value)


def _other(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return canonical_value(value.value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return canonical_value(int(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime):
        return canonical_datetime(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return canonical_value(dict(value))
    if isinstance(value, list | tuple):
        return [canonical_value(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((canonical_value(item) for item in value), key=_dumps)
    raise TypeError(f"{type(value).__name__} has no canonical JSON form")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value``."""
    return _dumps(canonical_value(value))


def fingerprint(value: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
