"""Property: for a reversible plan, outbound(inbound(x)) == x for records whose values are
in the external system's canonical form (the form the reverse transforms write)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from castiel_sync.domain.config import FieldMapping
from castiel_sync.domain.hashing import canonical_datetime
from castiel_sync.domain.mapping import compile_mappings
from castiel_sync.domain.paths import set_path

text = st.text(max_size=12)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ _-", min_size=1, max_size=8)
int64 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
fraction = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
moments = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
millis = moments.map(lambda m: m.replace(microsecond=m.microsecond // 1000 * 1000))
days = st.dates(min_value=datetime(1000, 1, 1).date(), max_value=datetime(9999, 12, 31).date())
epoch_ms = st.integers(min_value=0, max_value=253402300799000)


@st.composite
def value_maps(draw: st.DrawFn) -> tuple[list[Any], Any]:
    keys = draw(st.lists(word, min_size=1, max_size=5, unique=True))
    values = draw(st.lists(word, min_size=len(keys), max_size=len(keys), unique=True))
    spec = {"name": "value_map", "args": {"map": dict(zip(keys, values, strict=True))}}
    return [spec], st.sampled_from(keys)


# (transforms, strategy of external values in canonical form)
KINDS: list[tuple[list[Any], Any]] = [
    ([], st.one_of(text, int64, fraction, st.booleans())),
    (["number"], st.one_of(int64, fraction)),
    (["integer"], int64),
    (["boolean"], st.booleans()),
    ([{"name": "boolean", "args": {"true": "Y", "false": "N"}}], st.sampled_from(["Y", "N"])),
    (["datetime"], moments.map(canonical_datetime)),
    (
        [{"name": "datetime", "args": {"format": "salesforce"}}],
        millis.map(lambda m: m.replace(tzinfo=None).isoformat(timespec="milliseconds") + "+0000"),
    ),
    ([{"name": "datetime", "args": {"format": "epoch_ms"}}], epoch_ms),
    (["date"], days.map(lambda d: d.isoformat())),
    (
        [{"name": "date", "args": {"format": "%m/%d/%Y"}}],
        days.map(lambda d: d.strftime("%m/%d/%Y")),
    ),
    (
        [{"name": "date", "args": {"format": "epoch_ms"}}],
        days.map(
            lambda d: int(
                (datetime(d.year, d.month, d.day, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC))
                / timedelta(milliseconds=1)
            )
        ),
    ),
    (["split"], st.text(alphabet="ab; ", max_size=10)),
    ([{"name": "split", "args": {"separator": ", "}}], st.text(alphabet="ab, ", max_size=10)),
    (
        ["join"],
        st.lists(st.text(alphabet="ab ", max_size=4), max_size=4).filter(
            lambda items: items != [""]
        ),
    ),
    (["split", "join"], st.text(alphabet="ab;", max_size=8)),  # inbound: split then join again
]

EXTERNAL_PATHS = ["F{i}", "Obj{i}.Inner", "List{i}.0.Value", "Deep{i}.a.b"]
CASTIEL_PATHS = ["f{i}", "group.f{i}", "x{i}.y.z"]


@st.composite
def plans_and_records(draw: st.DrawFn) -> tuple[list[FieldMapping], dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=8))
    mappings: list[FieldMapping] = []
    record: dict[str, Any] = {}
    for i in range(count):
        kind = draw(st.sampled_from([*KINDS, None]))  # None: a value map
        if kind is None:
            transforms, values = draw(value_maps())
        else:
            transforms, values = kind
        external = draw(st.sampled_from(EXTERNAL_PATHS)).format(i=i)
        castiel = draw(st.sampled_from(CASTIEL_PATHS)).format(i=i)
        mappings.append(
            FieldMapping.model_validate(
                {"external": external, "castiel": castiel, "transforms": transforms}
            )
        )
        presence = draw(st.sampled_from(["value", "value", "none", "absent"]))
        if presence == "value":
            set_path(record, external, draw(values))
        elif presence == "none":
            set_path(record, external, None)
    return mappings, record


def strict_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(plans_and_records())
def test_outbound_inverts_inbound(case: tuple[list[FieldMapping], dict[str, Any]]) -> None:
    mappings, record = case
    plan = compile_mappings(mappings)
    assert plan.reversible
    inbound = plan.inbound(record)
    assert inbound.errors == []
    outbound = plan.outbound(inbound.data)
    assert outbound.errors == []
    assert strict_equal(outbound.data, record), (record, inbound.data, outbound.data)


@settings(max_examples=200, deadline=None)
@given(plans_and_records())
def test_inbound_is_idempotent_through_a_round_trip(
    case: tuple[list[FieldMapping], dict[str, Any]],
) -> None:
    """The castiel side is stable too: inbound(outbound(inbound(x))) == inbound(x)."""
    mappings, record = case
    plan = compile_mappings(mappings)
    once = plan.inbound(record).data
    again = plan.inbound(plan.outbound(once).data).data
    assert strict_equal(again, once)
