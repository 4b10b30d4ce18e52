"""Timestamps as CRM APIs send them, read in one place for every adapter."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(value: object, *, epoch_millis: bool = False) -> datetime | None:
    """An aware datetime from a provider's timestamp; None when absent or unreadable.

    Reads ISO 8601 with ``Z`` or an offset, with or without its colon: ``+00:00``
    (Dataverse, HubSpot) and ``+0000`` (Salesforce REST, ``2013-05-20T20:49:32.000+0000``;
    ``datetime.fromisoformat`` reads it since Python 3.11, so no rewriting is needed).
    Surrounding whitespace is ignored; a value without an offset is taken as UTC.

    ``epoch_millis=True`` also reads epoch milliseconds, as a number or a string of
    digits, as HubSpot sends them (``1572406217883``). It is off by default: a string of
    digits is also an ISO 8601 basic date (``20240501``), so only a caller that knows its
    provider sends milliseconds asks for them. A bool is never a timestamp.
    """
    if epoch_millis and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if epoch_millis and text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
