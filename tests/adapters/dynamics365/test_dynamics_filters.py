"""Pull filters rendered to OData $filter: typed literals, quotes doubled, wildcards made
literal, fields validated; hostile values stay inside their literal (the emulator parses
the documented syntax, so an escape mistake would change the result set)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from castiel_sync.adapters.dynamics365 import ENTITIES, Dynamics365Adapter, build_filter
from castiel_sync.sdk import AdapterValidationError, FetchOptions, FilterCondition
from castiel_sync.testing.emulators.dynamics365 import Dynamics365Emulator

ACCOUNT = ENTITIES["account"]


def cond(field: str, op: str, value: object = None) -> FilterCondition:
    return FilterCondition(field=field, op=op, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("name", "eq", "O'Bryan"), "name eq 'O''Bryan'"),
        (cond("name", "ne", "x' or name ne '"), "name ne 'x'' or name ne '''"),
        (cond("numberofemployees", "gte", 50), "numberofemployees ge 50"),
        (cond("revenue", "lt", "1000.50"), "revenue lt 1000.50"),
        (
            cond("modifiedon", "gt", datetime(2024, 5, 1, 12, 30, tzinfo=UTC)),
            "modifiedon gt 2024-05-01T12:30:00Z",
        ),
        (cond("name", "contains", "50%_off[1]"), "contains(name,'50[%][_]off[[]1]')"),
        (cond("name", "starts_with", "Ab'c"), "startswith(name,'Ab''c')"),
        (cond("telephone1", "is_null", True), "telephone1 eq null"),
        (cond("name", "in", ["a", "b'"]), "(name eq 'a' or name eq 'b''')"),
        (
            cond("accountid", "eq", "60C4E274-0D87-E711-80E5-00155DB19E6D"),
            "accountid eq 60c4e274-0d87-e711-80e5-00155db19e6d",
        ),
    ],
)
def test_conditions_render_documented_literals(condition: FilterCondition, expected: str) -> None:
    assert build_filter(ACCOUNT, [condition]) == expected


@pytest.mark.parametrize(
    "condition",
    [
        cond("nosuchcolumn", "eq", "x"),
        cond("numberofemployees", "eq", "12 or 1 eq 1"),
        cond("accountid", "eq", "not-a-guid) or (name ne null"),
        cond("numberofemployees", "contains", "1"),
        cond("modifiedon", "gt", "yesterday"),
        cond("revenue", "eq", float("nan")),
    ],
)
def test_invalid_conditions_are_refused(condition: FilterCondition) -> None:
    with pytest.raises(AdapterValidationError):
        build_filter(ACCOUNT, [condition])


def test_field_names_cannot_carry_expressions() -> None:
    with pytest.raises(ValueError):
        cond("name eq 'x' or name", "eq", "y")


def test_since_and_filters_are_and_ed() -> None:
    since = datetime(2024, 1, 2, tzinfo=UTC)
    assert build_filter(ACCOUNT, [cond("name", "eq", "a")], since=since) == (
        "(modifiedon ge 2024-01-02T00:00:00Z) and (name eq 'a')"
    )


async def test_hostile_values_match_only_themselves(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    store = emulator.store["account"]
    hostile = "x' or name ne '"
    store.create({"name": "Contoso"})
    store.create({"name": "Fabrikam"})
    target = store.create({"name": hostile})
    percent = store.create({"name": "50% off"})
    store.create({"name": "500 off"})

    result = await adapter.fetch_records(
        "account", FetchOptions(filters=[cond("name", "eq", hostile)])
    )
    assert [r.external_id for r in result.records] == [target.id]
    assert emulator.requests[-1].params["$filter"] == "name eq 'x'' or name ne '''"

    result = await adapter.fetch_records(
        "account", FetchOptions(filters=[cond("name", "contains", "0%")])
    )
    assert [r.external_id for r in result.records] == [percent.id]

    result = await adapter.fetch_records(
        "account", FetchOptions(filters=[cond("name", "ne", hostile)])
    )
    assert len(result.records) == 4


async def test_filters_are_case_insensitive_and_typed(
    adapter: Dynamics365Adapter, emulator: Dynamics365Emulator
) -> None:
    store = emulator.store["account"]
    big = store.create({"name": "Big", "numberofemployees": 5000})
    store.create({"name": "Small", "numberofemployees": 5})
    result = await adapter.fetch_records(
        "account",
        FetchOptions(
            filters=[cond("numberofemployees", "gte", 100), cond("name", "starts_with", "bi")]
        ),
    )
    assert [r.external_id for r in result.records] == [big.id]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        # The documented example, message verbatim (filter-rows.md).
        (
            "lastname eq 'O'Bryan'",
            "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''.",
        ),
        ("name eq 'unterminated", "There is an unterminated literal at position 21 in"),
        ("nosuch eq 'x'", "Could not find a property named 'nosuch'"),
        ("modifiedon ge 'yesterday'", "A binary operator with incompatible types"),
        ("name eq", "Expression expected"),
    ],
)
async def test_emulator_rejects_malformed_filters(
    emulator: Dynamics365Emulator, expression: str, message: str
) -> None:
    async with emulator.client() as client:
        response = await client.get(
            "/api/data/v9.2/contacts" if "lastname" in expression else "/api/data/v9.2/accounts",
            params={"$filter": expression},
            headers={"Authorization": f"Bearer {emulator.issue_token()}"},
        )
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
