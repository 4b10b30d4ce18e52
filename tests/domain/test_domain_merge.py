from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castiel_sync.domain.merge import (
    Conflict,
    FieldDecision,
    resolve_conflict,
    three_way_merge,
)
from castiel_sync.domain.paths import MISSING, compile_path

T0 = datetime(2024, 1, 1, tzinfo=UTC)
EARLY, LATE = T0, T0 + timedelta(minutes=5)

BASE = {"f": "base"}
SIDE_VALUE = {"castiel": "from castiel", "external": "from external"}


def side(state: str, who: str) -> dict[str, Any]:
    if state == "unchanged":
        return {"f": "base"}
    if state == "changed":
        return {"f": SIDE_VALUE[who]}
    if state == "same":  # changed, to the value the other side also chose
        return {"f": "agreed"}
    assert state == "removed"
    return {}


# Which side wins for each (castiel, external) state; MODE: the conflict mode decides.
TABLE = {
    ("unchanged", "unchanged"): "none",
    ("unchanged", "changed"): "external",
    ("unchanged", "removed"): "external",
    ("changed", "unchanged"): "castiel",
    ("removed", "unchanged"): "castiel",
    ("same", "same"): "both",
    ("removed", "removed"): "both",
    ("changed", "changed"): "MODE",
    ("changed", "removed"): "MODE",
    ("removed", "changed"): "MODE",
}

# mode, castiel time, external time -> winner when both changed differently
MODES = [
    ("castiel_wins", None, None, "castiel"),
    ("external_wins", None, None, "external"),
    ("manual", LATE, EARLY, "pending"),
    ("last_write_wins", LATE, EARLY, "castiel"),
    ("last_write_wins", EARLY, LATE, "external"),
    ("last_write_wins", EARLY, EARLY, "external"),  # tie
    ("last_write_wins", LATE, None, "external"),  # a time unknown
    ("last_write_wins", None, None, "external"),
]


@pytest.mark.parametrize(("states", "expected"), TABLE.items())
@pytest.mark.parametrize(("mode", "castiel_at", "external_at", "mode_winner"), MODES)
def test_every_combination_of_changes_and_modes(
    states: tuple[str, str],
    expected: str,
    mode: Any,
    castiel_at: datetime | None,
    external_at: datetime | None,
    mode_winner: str,
) -> None:
    ours, theirs = side(states[0], "castiel"), side(states[1], "external")
    base, ours_copy, theirs_copy = copy.deepcopy(BASE), copy.deepcopy(ours), copy.deepcopy(theirs)
    result = three_way_merge(
        base, ours, theirs, mode, castiel_modified_at=castiel_at, external_modified_at=external_at
    )
    assert (base, ours, theirs) == (BASE, ours_copy, theirs_copy)  # inputs untouched
    winner = mode_winner if expected == "MODE" else expected
    [decision] = result.decisions
    assert decision.winner == winner
    assert decision.castiel == {"same": "changed"}.get(states[0], states[0])
    assert decision.external == {"same": "changed"}.get(states[1], states[1])

    if winner == "castiel":
        assert result.merged == ours
        assert (result.outbound_fields, result.inbound_fields) == (["f"], [])
        assert result.next_base == ours
    elif winner == "external":
        assert result.merged == theirs
        assert (result.outbound_fields, result.inbound_fields) == ([], ["f"])
        assert result.next_base == theirs
    elif winner == "pending":
        assert result.merged == ours  # the shard keeps its Castiel value meanwhile
        assert (result.outbound_fields, result.inbound_fields) == ([], [])
        assert result.next_base == BASE  # so the next sync meets the same conflict
        [conflict] = result.conflicts
        assert (conflict.field, conflict.base) == ("f", "base")
        assert conflict.castiel == ours.get("f", MISSING)
        assert conflict.external == theirs.get("f", MISSING)
    else:  # none / both: the sides already agree
        assert result.merged == ours == theirs
        assert (result.outbound_fields, result.inbound_fields) == ([], [])
        assert result.next_base == ours
    if winner != "pending":
        assert result.conflicts == []


def test_decision_log_entry_shape() -> None:
    result = three_way_merge({"phone": "1"}, {"phone": "2"}, {"phone": "1"}, "manual")
    assert [d.to_dict() for d in result.decisions] == [
        {
            "field": "phone",
            "castiel": "changed",
            "external": "unchanged",
            "winner": "castiel",
            "reason": "only castiel changed",
        }
    ]


@pytest.mark.parametrize("mode", ["last_write_wins", "external_wins", "castiel_wins", "manual"])
def test_edits_to_different_fields_both_survive(mode: Any) -> None:
    base = {"name": "Acme", "phone": "1", "city": "Paris"}
    ours = {**base, "phone": "2"}
    theirs = {**base, "city": "Lyon"}
    result = three_way_merge(base, ours, theirs, mode)
    assert result.merged == {"name": "Acme", "phone": "2", "city": "Lyon"}
    assert result.outbound_fields == ["phone"]
    assert result.inbound_fields == ["city"]
    assert result.outbound_patch() == {"phone": "2"}
    assert result.inbound_patch() == {"city": "Lyon"}
    assert result.conflicts == []
    assert {d.field for d in result.changes} == {"phone", "city"}


def test_added_fields_and_none_versus_missing() -> None:
    base: dict[str, Any] = {"cleared": "x"}
    ours = {"cleared": None, "new_here": 1}  # None: a cleared value, not an absent one
    theirs = {"new_there": 2}  # cleared removed on the external side
    result = three_way_merge(base, ours, theirs, "manual")
    by_field = {d.field: d for d in result.decisions}
    assert by_field["new_here"].castiel == "added"
    assert by_field["new_here"].winner == "castiel"
    assert by_field["new_there"].external == "added"
    assert by_field["new_there"].winner == "external"
    assert (by_field["cleared"].castiel, by_field["cleared"].external) == ("changed", "removed")
    assert by_field["cleared"].winner == "pending"
    assert result.merged == {"cleared": None, "new_here": 1, "new_there": 2}


def test_a_removal_that_wins_is_deleted_and_patched_as_none() -> None:
    result = three_way_merge({"a": 1, "b": 2}, {"b": 2}, {"a": 5, "b": 2}, "castiel_wins")
    assert result.merged == {"b": 2}
    assert result.outbound_patch() == {"a": None}
    result = three_way_merge({"a": 1}, {"a": 5}, {}, "external_wins")
    assert result.merged == {}
    assert result.inbound_patch() == {"a": None}


def test_json_type_matters_but_int_and_float_agree() -> None:
    result = three_way_merge({"a": 1}, {"a": 1.0}, {"a": True}, "manual")
    [decision] = result.decisions
    assert (decision.castiel, decision.external) == ("unchanged", "changed")


def test_nested_fields_by_dotted_path_and_untouched_extras() -> None:
    base = {"address": {"city": "Paris", "zip": "75001"}, "name": "Acme"}
    ours = {"address": {"city": "Paris", "zip": "75002"}, "name": "Acme", "notes": "mine"}
    theirs = {"address": {"city": "Lyon", "zip": "75001"}, "name": "ACME"}
    result = three_way_merge(
        base, ours, theirs, "castiel_wins", fields=["address.city", "address.zip", "name"]
    )
    assert result.merged == {
        "address": {"city": "Lyon", "zip": "75002"},
        "name": "ACME",
        "notes": "mine",  # not a mapped field: left alone
    }
    assert result.next_base == {"address": {"city": "Lyon", "zip": "75002"}, "name": "ACME"}


def test_last_write_wins_compares_instants_across_zones_and_naive_as_utc() -> None:
    paris = timezone(timedelta(hours=1))
    base, ours, theirs = {"a": 0}, {"a": 1}, {"a": 2}
    # 10:30 in Paris is 09:30 UTC: earlier than 10:00 UTC
    result = three_way_merge(
        base,
        ours,
        theirs,
        "last_write_wins",
        castiel_modified_at=datetime(2024, 1, 1, 10, 30, tzinfo=paris),
        external_modified_at=datetime(2024, 1, 1, 10, 0),
    )
    assert result.merged == {"a": 2}


# --- properties -------------------------------------------------------------------------

FIELDS = ["a", "b", "c"]
values = st.sampled_from([MISSING, None, 0, 1, "x", "y", [1], {"k": 1}])


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = draw(values)
        if value is not MISSING:
            out[name] = value
    return out


def fields_of(data: dict[str, Any]) -> dict[str, Any]:
    return {f: compile_path(f).get(data) for f in FIELDS}


@settings(max_examples=300, deadline=None)
@given(records(), records(), records(), st.booleans())
def test_swapping_the_sides_swaps_the_outcome(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any], castiel_later: bool
) -> None:
    swapped_modes = [("castiel_wins", "external_wins"), ("external_wins", "castiel_wins")]
    for mode, mirror in swapped_modes:
        one = three_way_merge(base, ours, theirs, mode, fields=FIELDS)  # type: ignore[arg-type]
        two = three_way_merge(base, theirs, ours, mirror, fields=FIELDS)  # type: ignore[arg-type]
        assert fields_of(one.merged) == fields_of(two.merged)
        assert one.outbound_fields == two.inbound_fields
        assert one.inbound_fields == two.outbound_fields
    early, late = (EARLY, LATE) if castiel_later else (LATE, EARLY)
    one = three_way_merge(
        base,
        ours,
        theirs,
        "last_write_wins",
        fields=FIELDS,
        castiel_modified_at=late,
        external_modified_at=early,
    )
    two = three_way_merge(
        base,
        theirs,
        ours,
        "last_write_wins",
        fields=FIELDS,
        castiel_modified_at=early,
        external_modified_at=late,
    )
    assert fields_of(one.merged) == fields_of(two.merged)
    one = three_way_merge(base, ours, theirs, "manual", fields=FIELDS)
    two = three_way_merge(base, theirs, ours, "manual", fields=FIELDS)
    assert [c.field for c in one.conflicts] == [c.field for c in two.conflicts]


@settings(max_examples=300, deadline=None)
@given(
    records(),
    records(),
    records(),
    st.sampled_from(["last_write_wins", "external_wins", "castiel_wins", "manual"]),
)
def test_applying_the_result_converges(
    base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any], mode: Any
) -> None:
    """Write the result to both sides, merge again: nothing left to do but open conflicts."""
    result = three_way_merge(
        base,
        ours,
        theirs,
        mode,
        fields=FIELDS,
        castiel_modified_at=LATE,
        external_modified_at=EARLY,
    )
    external_after = copy.deepcopy(theirs)
    for name in result.outbound_fields:
        value = compile_path(name).get(result.merged)
        if value is MISSING:
            compile_path(name).delete(external_after)
        else:
            compile_path(name).set(external_after, value)
    again = three_way_merge(result.next_base, result.merged, external_after, mode, fields=FIELDS)
    assert again.outbound_fields == [] and again.inbound_fields == []
    assert [c.field for c in again.conflicts] == [c.field for c in result.conflicts]
    assert again.conflicts == [
        Conflict(c.field, c.base, c.castiel, c.external, c.castiel_change, c.external_change)
        for c in result.conflicts
    ]
    if mode != "manual":
        assert fields_of(result.merged) == fields_of(external_after)


@settings(max_examples=200, deadline=None)
@given(
    records(),
    records(),
    st.sampled_from(["last_write_wins", "external_wins", "castiel_wins", "manual"]),
)
def test_a_one_sided_edit_wins_in_every_mode(
    base: dict[str, Any], edited: dict[str, Any], mode: Any
) -> None:
    one = three_way_merge(base, edited, base, mode, fields=FIELDS)
    two = three_way_merge(base, base, edited, mode, fields=FIELDS)
    assert fields_of(one.merged) == fields_of(two.merged) == fields_of(edited)
    assert one.conflicts == two.conflicts == []


# --- manual resolution ------------------------------------------------------------------


def conflict() -> Conflict:
    result = three_way_merge({"phone": "1"}, {"phone": "2"}, {"phone": "3"}, "manual")
    [found] = result.conflicts
    return found


def test_resolve_by_choosing_castiel() -> None:
    resolution = resolve_conflict(conflict(), "castiel")
    assert (resolution.value, resolution.write_castiel, resolution.write_external) == (
        "2",
        False,
        True,
    )
    assert resolution.decision == FieldDecision(
        "phone", "changed", "changed", "castiel", "resolved manually: castiel value"
    )


def test_resolve_by_choosing_external() -> None:
    resolution = resolve_conflict(conflict(), "external")
    assert (resolution.value, resolution.write_castiel, resolution.write_external) == (
        "3",
        True,
        False,
    )
    assert resolution.decision.winner == "external"


@pytest.mark.parametrize(
    ("value", "writes"), [("4", (True, True)), ("2", (False, True)), (None, (True, True))]
)
def test_resolve_with_a_value(value: Any, writes: tuple[bool, bool]) -> None:
    resolution = resolve_conflict(conflict(), "value", value)
    assert resolution.value == value
    assert (resolution.write_castiel, resolution.write_external) == writes
    assert resolution.decision.winner == "admin"


def test_resolve_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="needs a value"):
        resolve_conflict(conflict(), "value")
    with pytest.raises(ValueError, match="only given"):
        resolve_conflict(conflict(), "castiel", "x")
    with pytest.raises(ValueError, match="choice must be"):
        resolve_conflict(conflict(), "both")  # type: ignore[arg-type]


def test_conflict_to_dict_marks_absent_values() -> None:
    [found] = three_way_merge({"a": 1}, {}, {"a": 2}, "manual").conflicts
    assert found.to_dict() == {
        "field": "a",
        "base": {"value": 1},
        "castiel": {},
        "external": {"value": 2},
        "castielChange": "removed",
        "externalChange": "changed",
    }
