from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from castiel_sync.domain.hashing import canonical_datetime, canonical_json, fingerprint

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def reorder(value: Any) -> Any:
    """The same data with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


def test_sorted_keys_at_every_depth_and_no_whitespace() -> None:
    data = {"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": "é"}
    assert canonical_json(data) == '{"a":"é","b":{"a":[{"x":2,"y":1}],"z":1}}'.encode()


def test_pinned_fingerprint() -> None:
    # Changing the encoding changes every stored fingerprint: make that a deliberate act.
    assert fingerprint({"name": "Acme", "n": 1, "at": 1.5, "tags": ["b", "a"]}) == (
        "37dfcffe648eaa32d9999ae21751a8690b330fdcf1af096404b3eb4ec89dbb18"
    )


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_fingerprint_is_sha256_of_the_canonical_bytes() -> None:
    assert fingerprint({"name": "Acme", "n": 1}) == _sha(b'{"n":1,"name":"Acme"}')
    assert len(fingerprint({})) == 64


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (1.0, b"1"),
        (-0.0, b"0"),
        (0.1, b"0.1"),
        (1e300, b"1e+300"),
        (2.0**60, b"1.152921504606847e+18"),  # beyond 2**53 a float stays a float
        (Decimal("1.10"), b"1.1"),
        (Decimal("100.00"), b"100"),
        (Decimal("0.1000000000000000000001"), b'"0.1000000000000000000001"'),
        (True, b"true"),
        (1, b"1"),
        (None, b"null"),
        (
            datetime(2024, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
            b'"2024-01-02T03:04:05Z"',
        ),
        (datetime(2024, 1, 2, 3, 4, 5), b'"2024-01-02T03:04:05Z"'),
        (datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), b'"2024-01-02T03:04:05.120Z"'),
        (datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=UTC), b'"2024-01-02T03:04:05.000007Z"'),
        (date(2024, 1, 2), b'"2024-01-02"'),
        ((1, 2), b"[1,2]"),
        ({3, 1, 2}, b"[1,2,3]"),
        (uuid.UUID(int=1), b'"00000000-0000-0000-0000-000000000001"'),
    ],
)
def test_stable_encodings(value: Any, encoded: bytes) -> None:
    assert canonical_json(value) == encoded


def test_enums_by_value() -> None:
    class Color(enum.Enum):
        RED = "red"

    assert canonical_json({"c": Color.RED}) == b'{"c":"red"}'


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), Decimal("NaN"), {1: "x"}, 2**70, object(), b"raw"]
)
def test_values_without_a_faithful_json_form_are_refused(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        canonical_json({"v": bad})


def test_equal_meaning_equal_hash_different_meaning_different_hash() -> None:
    assert fingerprint({"a": 1}) == fingerprint({"a": 1.0}) == fingerprint({"a": Decimal("1")})
    assert fingerprint({"a": 1}) != fingerprint({"a": True})
    assert fingerprint({"a": None}) != fingerprint({})
    assert fingerprint({"a": "1"}) != fingerprint({"a": 1})
    assert fingerprint([1, 2]) != fingerprint([2, 1])
    assert canonical_datetime(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00Z"


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_stable_under_key_order(value: Any) -> None:
    assert fingerprint(value) == fingerprint(reorder(value))


def _mutations(value: Any) -> list[Any]:
    """Copies of ``value`` each with one leaf or key changed."""
    out: list[Any] = []
    if isinstance(value, dict):
        for key in value:
            for changed in _mutations(value[key]):
                out.append({**value, key: changed})
            renamed = dict(value)
            renamed[key + "~"] = renamed.pop(key)
            if key + "~" not in value:
                out.append(renamed)
        out.append({**value, "\x00new": 0} if "\x00new" not in value else {})
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for changed in _mutations(item):
                out.append([*value[:i], changed, *value[i + 1 :]])
        out.append([*value, None])
    elif isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, int | float):
        out.append(value + 1 if abs(value) < 2**52 else value / 2)
    elif isinstance(value, str):
        out.append(value + "x")
    else:
        out.append(0)
    return out


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_sensitive_to_any_value_change(value: Any) -> None:
    original = fingerprint(value)
    for changed in _mutations(value):
        assert fingerprint(changed) != original, (value, changed)
