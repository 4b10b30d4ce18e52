"""Pull filters become typed, escaped SOQL; hostile values stay inside their literal.

The end-to-end cases run the rendered SOQL through the emulator's independent SOQL parser,
so a value that escaped its literal would change which records come back (or fail to
parse) rather than pass unnoticed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from castiel_sync.adapters.salesforce import SalesforceAdapter, build_select, entity_spec
from castiel_sync.adapters.salesforce._soql import escape_string, literal, render_condition
from castiel_sync.sdk import AdapterValidationError, FetchOptions, FilterCondition
from castiel_sync.testing.emulators.salesforce import SalesforceEmulator, parse_soql

ACCOUNT = entity_spec("Account")


def cond(field: str, op: str, value: object = None) -> FilterCondition:
    return FilterCondition(field=field, op=op, value=value)  # type: ignore[arg-type]


def test_reserved_characters_are_backslash_escaped() -> None:
    # The docs' own example: Bob's BBQ -> 'Bob\'s BBQ'.
    assert literal("Bob's BBQ", "string") == "'Bob\\'s BBQ'"
    assert escape_string("a\\b") == "a\\\\b"
    assert escape_string('say "hi"\n\t') == 'say \\"hi\\"\\n\\t'
    assert escape_string("50%_off", like=True) == "50\\%\\_off"
    assert escape_string("50%_off") == "50%_off"


def test_control_characters_without_an_escape_are_refused() -> None:
    with pytest.raises(AdapterValidationError):
        escape_string("a\x00b")


@pytest.mark.parametrize(
    ("field_type", "value", "expected"),
    [
        ("datetime", datetime(2024, 5, 1, 12, 30, 15, 999_000, tzinfo=UTC), "2024-05-01T12:30:15Z"),
        (
            "datetime",
            datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T12:00:00Z",
        ),
        ("datetime", "2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
        ("date", date(2024, 5, 1), "2024-05-01"),
        ("currency", 1500.5, "1500.5"),
        ("int", 42, "42"),
        ("double", "3.25", "3.25"),
        ("boolean", True, "TRUE"),
        ("string", None, "null"),
    ],
)
def test_literals_are_typed(field_type: str, value: object, expected: str) -> None:
    assert literal(value, field_type) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field_type", "value"),
    [
        ("currency", "1 OR Name != null"),
        ("currency", float("nan")),
        ("int", True),
        ("boolean", "TRUE"),
        ("datetime", "2024-05-01 OR Id != null"),
        ("date", "yesterday"),
        ("reference", "001' OR Id != '"),
        ("string", ["a"]),
    ],
)
def test_values_that_are_not_of_the_field_type_are_refused(field_type: str, value: object) -> None:
    with pytest.raises(AdapterValidationError):
        literal(value, field_type)  # type: ignore[arg-type]


def test_field_names_must_be_declared_and_are_canonicalised() -> None:
    assert render_condition(ACCOUNT, cond("industry", "eq", "Tech")) == "(Industry = 'Tech')"
    for hostile in ("Name FROM User", "Secret__c", "Owner.Email", "IsDeleted"):
        with pytest.raises((AdapterValidationError, ValueError)):
            render_condition(ACCOUNT, cond(hostile, "eq", "x"))


def test_every_operator_renders() -> None:
    rendered = [
        render_condition(ACCOUNT, c)
        for c in (
            cond("Name", "ne", "a"),
            cond("AnnualRevenue", "gte", 10),
            cond("NumberOfEmployees", "lt", 5),
            cond("Industry", "in", ["Tech", "O'Reilly"]),
            cond("Name", "contains", "50%"),
            cond("Name", "starts_with", "Ac_"),
            cond("Website", "is_null", True),
            cond("Website", "is_null", False),
        )
    ]
    assert rendered == [
        "(Name != 'a')",
        "(AnnualRevenue >= 10)",
        "(NumberOfEmployees < 5)",
        "(Industry IN ('Tech', 'O\\'Reilly'))",
        "(Name LIKE '%50\\%%')",
        "(Name LIKE 'Ac\\_%')",
        "(Website = null)",
        "(Website != null)",
    ]


def test_build_select_orders_by_modstamp_then_id_and_parses() -> None:
    soql = build_select(
        ACCOUNT,
        fields=["Name"],
        filters=[cond("Industry", "eq", "Tech"), cond("Name", "starts_with", "A")],
        since=datetime(2024, 1, 2, tzinfo=UTC),
        after=("2024-01-03T00:00:00+00:00", "0015e0000004C96AAE"),
    )
    assert soql == (
        "SELECT Id, SystemModstamp, Name FROM Account WHERE (Industry = 'Tech') AND "
        "(Name LIKE 'A%') AND (SystemModstamp >= 2024-01-02T00:00:00Z) AND "
        "((SystemModstamp > 2024-01-03T00:00:00Z) OR (SystemModstamp = 2024-01-03T00:00:00Z "
        "AND Id > '0015e0000004C96AAE')) ORDER BY SystemModstamp ASC, Id ASC"
    )
    # The emulator's parser (which rejects AND/OR mixed without parentheses) accepts it.
    query = parse_soql(soql)
    assert query.fields == ["Id", "SystemModstamp", "Name"]


HOSTILE = [
    "x' OR Name != '",
    "x\\' OR Name != \\'",
    "\\",
    "'",
    "x%' OR Name LIKE '%",
    "') OR (Name != '",
    "Robert'); DELETE FROM Account; --",
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_match_only_themselves(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator, value: str
) -> None:
    emulator.seed("Account", {"Name": "Innocent"})
    emulator.seed("Account", {"Name": "Bystander"})
    target = emulator.seed("Account", {"Name": value})
    for op in ("eq", "contains", "starts_with"):
        result = await adapter.fetch_records(
            "Account", FetchOptions(filters=[cond("Name", op, value)])
        )
        assert [r.external_id for r in result.records] == [target], op
    result = await adapter.fetch_records(
        "Account", FetchOptions(filters=[cond("Name", "in", [value, "nobody"])])
    )
    assert [r.external_id for r in result.records] == [target]


async def test_like_wildcards_in_values_are_literal(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    emulator.seed("Account", {"Name": "Acme 50% off"})
    emulator.seed("Account", {"Name": "Acme 50 cents"})
    result = await adapter.fetch_records(
        "Account", FetchOptions(filters=[cond("Name", "contains", "50%")])
    )
    assert [r.data["Name"] for r in result.records] == ["Acme 50% off"]


async def test_an_undeclared_filter_field_fails_before_any_request(
    adapter: SalesforceAdapter, emulator: SalesforceEmulator
) -> None:
    with pytest.raises(AdapterValidationError):
        await adapter.fetch_records(
            "Account", FetchOptions(filters=[cond("Password__c", "eq", "x")])
        )
    assert emulator.requests_to("/services/data") == []
