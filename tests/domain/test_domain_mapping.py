from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from castiel_sync.domain.config import EntityMapping, FieldMapping, TransformSpec
from castiel_sync.domain.mapping import (
    FieldError,
    MappingConfigError,
    TransformError,
    compile_mappings,
    compile_transform,
    map_inbound,
    map_outbound,
)


def transform(name: str, **args: Any) -> Any:
    return compile_transform(TransformSpec(name=name, args=args))  # type: ignore[arg-type]


def fm(external: str, castiel: str, *transforms: Any, direction: str = "both") -> FieldMapping:
    return FieldMapping.model_validate(
        {
            "external": external,
            "castiel": castiel,
            "transforms": list(transforms),
            "direction": direction,
        }
    )


def strict_equal(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 != 1.0 != True here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- each transform, forward (inbound) and reverse (outbound) ---------------------------

FORWARD = [
    ("trim", {}, "  Acme \n", "Acme"),
    ("lower", {}, "A@X.Com", "a@x.com"),
    ("upper", {}, "fr", "FR"),
    ("number", {}, "1234.5", 1234.5),
    ("number", {}, " -12 ", -12),
    ("number", {}, "1e3", 1000),
    ("number", {}, "0.1", 0.1),
    ("number", {}, 42, 42),
    ("number", {}, 2.0, 2),
    ("number", {}, 2.5, 2.5),
    ("number", {}, Decimal("19.99"), 19.99),
    ("number", {}, Decimal("100.00"), 100),
    ("number", {}, "", None),
    ("number", {"thousandsSeparator": ","}, "1,234.5", 1234.5),
    ("number", {"thousandsSeparator": ".", "decimalSeparator": ","}, "1.234,5", 1234.5),
    ("integer", {}, "12", 12),
    ("integer", {}, "12.0", 12),
    ("integer", {}, 7.0, 7),
    ("boolean", {}, "true", True),
    ("boolean", {}, "No", False),
    ("boolean", {}, " YES ", True),
    ("boolean", {}, "0", False),
    ("boolean", {}, 1, True),
    ("boolean", {}, False, False),
    ("boolean", {}, "", None),
    ("boolean", {"true": "Y", "false": "N"}, "y", True),
    ("date", {}, "2024-01-02", "2024-01-02"),
    ("date", {}, "2024-01-02T00:00:00Z", "2024-01-02"),
    ("date", {}, date(2024, 1, 2), "2024-01-02"),
    ("date", {"format": "%m/%d/%Y"}, "01/02/2024", "2024-01-02"),
    ("date", {"format": "epoch_ms"}, 1704153600000, "2024-01-02"),
    ("datetime", {}, "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
    ("datetime", {}, "2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05Z"),
    ("datetime", {}, "2024-01-02T03:04:05.123+0000", "2024-01-02T03:04:05.123Z"),
    ("datetime", {}, "2024-01-02T04:04:05+01:00", "2024-01-02T03:04:05Z"),
    ("datetime", {}, "2024-01-02T03:04:05", "2024-01-02T03:04:05Z"),  # naive is UTC
    ("datetime", {}, "2024-01-02T03:04:05.000001Z", "2024-01-02T03:04:05.000001Z"),
    ("datetime", {}, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "salesforce"}, "2024-01-02T03:04:05.000+0000", "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "epoch_ms"}, 1704164645000, "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "epoch_ms"}, "1704164645000", "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "epoch_s"}, 1704164645, "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "epoch_ms"}, 8775249414036, "2248-01-29T09:16:54.036Z"),  # exact
    ("datetime", {"format": "%d.%m.%Y %H:%M"}, "02.01.2024 03:04", "2024-01-02T03:04:00Z"),
    ("value_map", {"map": {"Hot": "high", "Cold": "low"}}, "Hot", "high"),
    ("value_map", {"map": {"true": "yes"}}, True, "yes"),
    ("value_map", {"map": {"1": "one"}}, 1, "one"),
    ("value_map", {"map": {"a": "A"}, "keepUnknown": True}, "z", "z"),
    ("join", {}, ["a", "b"], "a;b"),
    ("join", {"separator": ", "}, ["a", "b"], "a, b"),
    ("join", {}, [], ""),
    ("split", {}, "a;b;c", ["a", "b", "c"]),
    ("split", {"separator": ","}, "a,b", ["a", "b"]),
    ("split", {}, "", []),
    ("default", {"value": "basic"}, "gold", "gold"),
    ("default", {"value": "basic"}, None, "basic"),
    ("default", {"value": "basic"}, "", "basic"),
]


@pytest.mark.parametrize(("name", "args", "value", "expected"), FORWARD)
def test_forward(name: str, args: dict[str, Any], value: Any, expected: Any) -> None:
    assert strict_equal(transform(name, **args).forward(value), expected)


REVERSE = [
    ("trim", {}, "Acme", "Acme"),
    ("lower", {}, "a@x.com", "a@x.com"),
    ("number", {}, 1234.5, 1234.5),
    ("integer", {}, 12, 12),
    ("boolean", {}, True, True),
    ("boolean", {"true": "Y", "false": "N"}, False, "N"),
    ("boolean", {"true": 1, "false": 0}, True, 1),
    ("date", {}, "2024-01-02", "2024-01-02"),
    ("date", {"format": "%m/%d/%Y"}, "2024-01-02", "01/02/2024"),
    ("date", {"format": "epoch_ms"}, "2024-01-02", 1704153600000),
    ("datetime", {}, "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
    ("datetime", {"format": "salesforce"}, "2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000+0000"),
    (
        "datetime",
        {"format": "salesforce"},
        "2024-01-02T03:04:05.123Z",
        "2024-01-02T03:04:05.123+0000",
    ),
    ("datetime", {"format": "epoch_ms"}, "2024-01-02T03:04:05Z", 1704164645000),
    ("datetime", {"format": "epoch_s"}, "2024-01-02T03:04:05.5Z", 1704164645.5),
    ("datetime", {"format": "%d.%m.%Y %H:%M"}, "2024-01-02T03:04:00Z", "02.01.2024 03:04"),
    ("value_map", {"map": {"Hot": "high", "Cold": "low"}}, "low", "Cold"),
    ("value_map", {"map": {"a": "A"}, "keepUnknown": True}, "z", "z"),
    ("join", {}, "a;b", ["a", "b"]),
    ("join", {}, "", []),
    ("split", {}, ["a", "b"], "a;b"),
    ("default", {"value": "basic"}, "basic", "basic"),
]


@pytest.mark.parametrize(("name", "args", "value", "expected"), REVERSE)
def test_reverse(name: str, args: dict[str, Any], value: Any, expected: Any) -> None:
    assert strict_equal(transform(name, **args).reverse(value), expected)


FAILURES = [
    ("trim", {}, 5, "needs text"),
    ("upper", {}, ["a"], "needs text"),
    ("number", {}, "1,234.5", "thousandsSeparator"),  # no locale guessing
    ("number", {}, "12abc", "not a number"),
    ("number", {}, "NaN", "not a number"),
    ("number", {}, "Infinity", "not a number"),
    ("number", {}, float("nan"), "finite"),
    ("number", {}, True, "boolean"),
    ("number", {}, "0.1000000000000000000001", "refusing to round"),
    ("number", {}, "1e999999999", "range"),
    ("number", {}, 2**70, "64-bit"),
    ("number", {"decimalSeparator": ","}, "1.5", "'.'"),
    ("integer", {}, "12.5", "whole"),
    ("integer", {}, 1.5, "whole"),
    ("boolean", {}, "maybe", "not a boolean"),
    ("boolean", {}, 2, "not a boolean"),
    ("boolean", {}, 1.0, "not a boolean"),
    ("date", {}, "yesterday", "ISO 8601"),
    ("date", {}, "2024-01-02T03:04:05Z", "not a date"),
    ("date", {}, 1704153600000, "not a date or time"),  # an epoch needs an epoch format
    ("datetime", {}, "2024-13-02T00:00:00Z", "ISO 8601"),
    ("datetime", {}, 1704164645000, "not a date or time"),
    ("value_map", {"map": {"Hot": "high"}}, "Warm", "no entry"),
    ("join", {}, "a;b", "needs a list"),
    ("join", {}, ["a", 1], "item 1 is int"),
    ("split", {}, ["a"], "needs text"),
]


@pytest.mark.parametrize(("name", "args", "value", "reason"), FAILURES)
def test_forward_failures(name: str, args: dict[str, Any], value: Any, reason: str) -> None:
    with pytest.raises(TransformError, match=reason):
        transform(name, **args).forward(value)


REVERSE_FAILURES = [
    ("date", {}, "soon", "ISO 8601"),
    ("datetime", {"format": "salesforce"}, "later", "ISO 8601"),
    ("boolean", {"true": "Y", "false": "N"}, "Y", "not a boolean"),
    ("value_map", {"map": {"Hot": "high"}}, "medium", "no entry"),
    ("split", {}, "a;b", "needs a list"),
]


@pytest.mark.parametrize(("name", "args", "value", "reason"), REVERSE_FAILURES)
def test_reverse_failures(name: str, args: dict[str, Any], value: Any, reason: str) -> None:
    with pytest.raises(TransformError, match=reason):
        transform(name, **args).reverse(value)


BAD_ARGS = [
    ("trim", {"x": 1}, "unknown args"),
    ("number", {"thousandsSeparator": ",", "decimalSeparator": ","}, "differ"),
    ("number", {"thousandsSeparator": ""}, "non-empty"),
    ("boolean", {"true": "Y"}, "both"),
    ("boolean", {"true": "no", "false": "N"}, "clash"),
    ("date", {"format": "salesforce"}, "format"),
    ("datetime", {"format": "whenever"}, "format"),
    ("value_map", {}, "missing args"),
    ("value_map", {"map": {}}, "non-empty"),
    ("value_map", {"map": {"a": ["x"]}}, "map values"),
    ("value_map", {"map": {"a": "x", "b": "x"}}, "cannot be reversed"),
    ("value_map", {"map": {"a": 1, "b": 1.0}}, "cannot be reversed"),
    ("join", {"separator": 5}, "non-empty text"),
    ("default", {}, "missing args"),
]


@pytest.mark.parametrize(("name", "args", "reason"), BAD_ARGS)
def test_bad_args_are_refused_when_compiled(name: str, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(MappingConfigError, match=reason):
        transform(name, **args)


def test_a_value_map_true_and_one_stay_apart() -> None:
    t = transform("value_map", map={"a": True, "b": 1})
    assert strict_equal(t.reverse(True), "a")
    assert strict_equal(t.reverse(1), "b")


# --- plans ------------------------------------------------------------------------------


def test_inbound_and_outbound_with_nested_paths_and_list_indexes() -> None:
    mappings = [
        fm("Name", "name", "trim"),
        fm("BillingAddress.City", "address.city"),
        fm("Emails.0.Address", "contact.email", "lower"),
        fm("Rating", "rating", {"name": "value_map", "args": {"map": {"Hot": "high"}}}),
    ]
    record = {
        "Name": " Acme ",
        "BillingAddress": {"City": "Paris"},
        "Emails": [{"Address": "A@X.COM"}],
        "Rating": "Hot",
    }
    inbound = map_inbound(record, mappings)
    assert inbound.ok
    assert inbound.data == {
        "name": "Acme",
        "address": {"city": "Paris"},
        "contact": {"email": "a@x.com"},
        "rating": "high",
    }
    outbound = map_outbound(inbound.data, mappings)
    assert outbound.ok
    assert outbound.data == {
        "Name": "Acme",
        "BillingAddress": {"City": "Paris"},
        "Emails": [{"Address": "a@x.com"}],
        "Rating": "Hot",
    }


def test_a_failing_field_is_reported_and_the_rest_still_maps() -> None:
    plan = compile_mappings(
        [fm("Amount", "amount", "number"), fm("Name", "name"), fm("Close", "close", "date")]
    )
    out = plan.inbound({"Amount": "12 EUR" + "x" * 300, "Name": "Deal", "Close": "2024-02-30"})
    assert out.data == {"name": "Deal"}
    assert not out.ok
    assert [(e.field, e.transform) for e in out.errors] == [
        ("Amount", "number"),
        ("Close", "date"),
    ]
    first = out.errors[0]
    assert first.reason.startswith("not a number")
    assert len(first.value) <= 120 and first.value.endswith("…")
    assert first.to_dict() == {
        "field": "Amount",
        "value": first.value,
        "reason": first.reason,
        "transform": "number",
    }


def test_outbound_builds_dicts_for_names_and_lists_for_indexes() -> None:
    out = compile_mappings([fm("Emails.first", "email")]).outbound({"email": "e"})
    assert out.data == {"Emails": {"first": "e"}}
    out = compile_mappings([fm("Emails.0", "email")]).outbound({"email": "e"})
    assert out.data == {"Emails": ["e"]}


def test_missing_sources_are_skipped_and_none_is_written() -> None:
    plan = compile_mappings([fm("A", "a", "number"), fm("B", "b", "trim"), fm("C", "c")])
    out = plan.inbound({"A": None, "C": "x"})
    assert out.ok
    assert out.data == {"a": None, "c": "x"}  # B absent: not written at all


def test_default_fills_missing_and_none_inbound_only() -> None:
    plan = compile_mappings([fm("Tier", "tier", {"name": "default", "args": {"value": "std"}})])
    assert plan.inbound({}).data == {"tier": "std"}
    assert plan.inbound({"Tier": None}).data == {"tier": "std"}
    assert plan.outbound({}).data == {}  # no reverse: nothing invented outbound
    assert plan.outbound({"tier": None}).data == {"Tier": None}


def test_direction_filters_mappings() -> None:
    plan = compile_mappings(
        [
            fm("In", "in_only", direction="inbound"),
            fm("Out", "out_only", direction="outbound"),
            fm("Both", "both"),
        ]
    )
    assert plan.inbound({"In": 1, "Out": 2, "Both": 3}).data == {"in_only": 1, "both": 3}
    assert plan.outbound({"in_only": 1, "out_only": 2, "both": 3}).data == {"Out": 2, "Both": 3}
    assert plan.castiel_fields == ("in_only", "both")
    assert plan.external_fields == ("Out", "Both")


def test_transforms_run_in_order_inbound_and_reversed_outbound() -> None:
    plan = compile_mappings(
        [
            fm(
                "Tags",
                "tags",
                "split",
                {"name": "value_map", "args": {"map": {"a": "A"}, "keepUnknown": True}},
            )
        ]
    )
    # value_map applies to the whole list value, which is unknown and kept
    assert plan.inbound({"Tags": "a;b"}).data == {"tags": ["a", "b"]}
    plan = compile_mappings([fm("Tags", "tags", "trim", "split")])
    assert plan.inbound({"Tags": " a;b "}).data == {"tags": ["a", "b"]}
    assert plan.outbound({"tags": ["a", "b"]}).data == {"Tags": "a;b"}


def test_a_non_injective_value_map_is_fine_inbound_only() -> None:
    vm = {"name": "value_map", "args": {"map": {"Hot": "high", "Warm": "high"}}}
    plan = compile_mappings([fm("Rating", "rating", vm, direction="inbound")])
    assert plan.inbound({"Rating": "Warm"}).data == {"rating": "high"}
    assert plan.reversible  # inbound-only mappings do not count
    with pytest.raises(ValidationError, match="cannot be reversed"):
        fm("Rating", "rating", vm)  # direction both: refused when the settings are saved


def test_reversible_flag() -> None:
    assert compile_mappings([fm("a", "a", "number"), fm("b", "b", "split")]).reversible
    assert not compile_mappings([fm("a", "a", "trim")]).reversible
    assert compile_mappings([fm("a", "a", "trim", direction="inbound")]).reversible


@pytest.mark.parametrize(
    ("first", "second", "side"),
    [
        (("A", "name"), ("B", "name"), "castiel"),
        (("A", "address"), ("B", "address.city"), "castiel"),
        (("Name", "a"), ("Name", "b"), "external"),
    ],
)
def test_overlapping_targets_are_refused(
    first: tuple[str, str], second: tuple[str, str], side: str
) -> None:
    with pytest.raises(MappingConfigError, match=side):
        compile_mappings([fm(*first), fm(*second)])
    with pytest.raises(ValidationError, match="overlapping"):
        EntityMapping.model_validate(
            {
                "entity": "Account",
                "shardType": "c_company",
                "fieldMappings": [
                    {"external": first[0], "castiel": first[1]},
                    {"external": second[0], "castiel": second[1]},
                ],
            }
        )


def test_one_source_may_feed_two_targets_inbound_only() -> None:
    plan = compile_mappings([fm("Name", "a", direction="inbound"), fm("Name", "b")])
    assert plan.inbound({"Name": "x"}).data == {"a": "x", "b": "x"}


def test_field_mapping_validation_checks_args_and_paths() -> None:
    with pytest.raises(ValidationError, match="unknown args"):
        fm("A", "a", {"name": "trim", "args": {"x": 1}})
    with pytest.raises(ValidationError, match="not a dotted path"):
        fm("A..B", "a")
    camel = FieldMapping.model_validate(
        {
            "external": "A",
            "castiel": "a",
            "transforms": [{"name": "number", "args": {"thousandsSeparator": ","}}],
        }
    )
    assert camel.model_dump(by_alias=True)["transforms"][0]["args"] == {"thousandsSeparator": ","}


def test_field_error_is_a_value() -> None:
    assert FieldError("a", "1", "bad") == FieldError("a", "1", "bad", None)
