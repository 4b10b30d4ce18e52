"""parse_timestamp: every timestamp form the adapters read, in one table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from castiel_sync.sdk import parse_timestamp

MILLIS = datetime(2019, 10, 30, 3, 30, 17, 883000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # ISO 8601 with Z (Dataverse, HubSpot) and with a colon offset.
        ("2019-10-30T03:30:17.883Z", MILLIS),
        ("2024-05-01T12:30:00+00:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        (
            "2024-05-01T12:30:00-05:30",
            datetime(2024, 5, 1, 12, 30, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
        ),
        # Salesforce REST: an offset without its colon.
        ("2013-05-20T20:49:32.000+0000", datetime(2013, 5, 20, 20, 49, 32, tzinfo=UTC)),
        (
            "2013-05-20T20:49:32.000-0700",
            datetime(2013, 5, 20, 20, 49, 32, tzinfo=timezone(-timedelta(hours=7))),
        ),
        # No offset: UTC. A date alone: midnight UTC.
        ("2024-05-01T12:30:00", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        # Surrounding whitespace is ignored.
        ("  2024-05-01T12:30:00Z\n", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
        # Digits are an ISO 8601 basic date unless epoch milliseconds are asked for.
        ("20240501", datetime(2024, 5, 1, tzinfo=UTC)),
        ("1572406217883", None),
        (1572406217883, None),
        # Absent or unreadable.
        (None, None),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("2024-13-01T00:00:00Z", None),
        ("2024-01-0221", None),
        (True, None),
        ({"at": "2024-05-01"}, None),
    ],
)
def test_parse_timestamp(value: object, expected: datetime | None) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.tzinfo is not None
        assert parsed.utcoffset() == expected.utcoffset()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1572406217883, MILLIS),
        (1572406217883.0, MILLIS),
        ("1572406217883", MILLIS),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        # ISO 8601 still reads; a bool is not a number of milliseconds.
        ("2019-10-30T03:30:17.883Z", MILLIS),
        ("2013-05-20T20:49:32.000+0000", datetime(2013, 5, 20, 20, 49, 32, tzinfo=UTC)),
        (True, None),
        ("", None),
        ("12ab", None),
    ],
)
def test_parse_timestamp_epoch_millis(value: object, expected: datetime | None) -> None:
    assert parse_timestamp(value, epoch_millis=True) == expected
