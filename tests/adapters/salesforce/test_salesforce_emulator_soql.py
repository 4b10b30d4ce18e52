"""The emulator's SOQL subset follows the SOQL reference, independently of the adapter."""

from __future__ import annotations

import httpx
import pytest

from castiel_sync.testing.emulators.salesforce import (
    SalesforceEmulator,
    SoqlError,
    id18,
    normalize_id,
    parse_soql,
)


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Account WHERE Name = 'a' AND Type = 'b' OR Industry = 'c'",
         "MALFORMED_QUERY"),  # AND and OR mixed without parentheses
        ("SELECT Id FROM Account WHERE Name = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Name = 'a\\qb'", "MALFORMED_QUERY"),  # bad escape
        ("SELECT Id FROM Account WHERE Name = 'x' OR Name != '", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
        ("SELECT Id, FROM Account", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account; DELETE", "MALFORMED_QUERY"),
        ("SELECT Nope FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE Owner.Name = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Widget__c", "INVALID_TYPE"),
        ("SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
         "INVALID_FIELD"),  # dateTime literals are not quoted
        ("SELECT Id FROM Account WHERE Name = 42", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE AnnualRevenue LIKE '1%'",
         "INVALID_QUERY_FILTER_OPERATOR"),
    ],
)  # fmt: skip
def test_bad_queries_are_rejected_with_salesforce_codes(soql: str, code: str) -> None:
    with pytest.raises(SoqlError) as info:
        parse_soql(soql)
    assert info.value.code == code


def test_parentheses_make_mixed_logic_legal() -> None:
    query = parse_soql(
        "select id from account where (name = 'a' and type = 'b') or not industry = 'c' "
        "order by systemmodstamp desc nulls last, id limit 5 offset 1"
    )
    assert query.fields == ["Id"] and query.sobject.name == "Account"
    assert query.order == [("SystemModstamp", True, True), ("Id", False, False)]
    assert (query.limit, query.offset) == (5, 1)


def test_ids_have_the_documented_checksum() -> None:
    # The docs' example id 001D000000IqhSLIAZ is the 15-character id plus its suffix.
    assert id18("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normalize_id("001D000000IqhSL") == "001D000000IqhSLIAZ"
    assert normalize_id("001D000000IqhSLXXX") is None


async def test_query_semantics_over_http(emulator: SalesforceEmulator) -> None:
    emulator.seed("Account", {"Name": "Bob's BBQ", "AnnualRevenue": 10.0})
    emulator.seed("Account", {"Name": "Ter%", "AnnualRevenue": None})
    emulator.seed("Account", {"Name": "Terra", "AnnualRevenue": 30.0})
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with emulator.client(headers=headers) as client:

        async def names(soql: str) -> list[str]:
            response = await client.get("/services/data/v62.0/query/", params={"q": soql})
            assert response.status_code == 200, response.text
            assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")
            return [r["Name"] for r in response.json()["records"]]

        assert await names("SELECT Name FROM Account WHERE Name = 'bob\\'s bbq'") == ["Bob's BBQ"]
        assert await names("SELECT Name FROM Account WHERE Name LIKE 'Ter%' ORDER BY Name") == [
            "Ter%",
            "Terra",
        ]
        assert await names("SELECT Name FROM Account WHERE Name LIKE 'Ter\\%'") == ["Ter%"]
        assert await names(
            "SELECT Name FROM Account WHERE AnnualRevenue > 5 ORDER BY AnnualRevenue DESC"
        ) == ["Terra", "Bob's BBQ"]
        assert await names("SELECT Name FROM Account WHERE AnnualRevenue = null") == ["Ter%"]
        assert await names(
            "SELECT Name FROM Account ORDER BY AnnualRevenue ASC NULLS LAST LIMIT 2"
        ) == ["Bob's BBQ", "Terra"]
        bad = await client.get("/services/data/v62.0/query/", params={"q": "SELECT FROM"})
        assert bad.status_code == 400
        assert bad.json()[0]["errorCode"] == "MALFORMED_QUERY"
        assert set(bad.json()[0]) == {"message", "errorCode"}

    async with emulator.client() as anonymous:
        denied = await anonymous.get(
            "/services/data/v62.0/query/", params={"q": "SELECT Id FROM Account"}
        )
    assert denied.status_code == 401
    assert denied.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


async def test_batch_size_header_is_clamped_to_the_documented_range(
    emulator: SalesforceEmulator,
) -> None:
    for n in range(450):
        emulator.seed("Account", {"Name": f"A{n}"})
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with emulator.client(headers=headers) as client:
        sizes = {}
        for asked in ("batchSize=50", "batchSize=300", "batchSize=5000", None):
            extra = {"Sforce-Query-Options": asked} if asked else {}
            response = await client.get(
                "/services/data/v62.0/query/",
                params={"q": "SELECT Id FROM Account"},
                headers=extra,
            )
            body = response.json()
            sizes[asked] = len(body["records"])
            assert body["totalSize"] == 450
        assert sizes == {
            "batchSize=50": 200,
            "batchSize=300": 300,
            "batchSize=5000": 450,
            None: 450,
        }
        stale = await client.get("/services/data/v62.0/query/01gD000000AAAAAAAA-200")
        assert stale.status_code == 400 and stale.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_emulator_requests_are_plain_httpx() -> None:
    assert isinstance(SalesforceEmulator().transport(), httpx.ASGITransport)
