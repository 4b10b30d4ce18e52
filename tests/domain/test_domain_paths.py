from __future__ import annotations

import pickle

import pytest

from castiel_sync.domain.paths import (
    MISSING,
    Path,
    PathError,
    compile_path,
    delete_path,
    get_path,
    set_path,
)

RECORD = {
    "Name": "Acme",
    "BillingAddress": {"City": "Paris", "Street": None},
    "Emails": [{"Address": "a@x.com"}, {"Address": "b@x.com"}],
    "Owner": None,
    "Count": 3,
    "0": "a key that looks like an index",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("Name", "Acme"),
        ("BillingAddress.City", "Paris"),
        ("BillingAddress.Street", None),  # present and null
        ("BillingAddress.Zip", MISSING),  # absent
        ("Emails.0.Address", "a@x.com"),
        ("Emails.1.Address", "b@x.com"),
        ("Emails.2.Address", MISSING),  # past the end
        ("Emails.first", MISSING),  # not an index into a list
        ("Owner.Name", None),  # a null parent clears its children
        ("Count.value", MISSING),  # a scalar in the middle
        ("Nope.deeper", MISSING),
        ("0", "a key that looks like an index"),  # digits are keys on dicts
    ],
)
def test_get(path: str, expected: object) -> None:
    assert get_path(RECORD, path) is expected or get_path(RECORD, path) == expected


def test_missing_is_a_falsy_singleton_distinct_from_none() -> None:
    assert not MISSING
    assert MISSING is not None
    assert repr(MISSING) == "MISSING"
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING  # noqa: S301 - our own bytes
    assert type(MISSING)() is MISSING


def test_set_creates_intermediate_dicts() -> None:
    data: dict[str, object] = {}
    set_path(data, "address.city", "Paris")
    set_path(data, "address.zip", "75001")
    set_path(data, "name", "Acme")
    assert data == {"address": {"city": "Paris", "zip": "75001"}, "name": "Acme"}


def test_set_creates_lists_for_index_segments_and_pads_with_none() -> None:
    data: dict[str, object] = {}
    set_path(data, "Emails.1.Address", "b@x.com")
    set_path(data, "Emails.0.Address", "a@x.com")
    assert data == {"Emails": [{"Address": "a@x.com"}, {"Address": "b@x.com"}]}


def test_set_replaces_a_null_parent_but_refuses_a_scalar_one() -> None:
    data: dict[str, object] = {"a": None, "b": 5}
    set_path(data, "a.x", 1)
    assert data["a"] == {"x": 1}
    with pytest.raises(PathError, match="'b' holds a int"):
        set_path(data, "b.x", 1)


def test_set_refuses_a_key_into_a_list() -> None:
    data: dict[str, object] = {"a": [1]}
    with pytest.raises(PathError):
        set_path(data, "a.x", 1)


def test_set_stores_none_as_a_value() -> None:
    data: dict[str, object] = {}
    set_path(data, "a.b", None)
    assert get_path(data, "a.b") is None
    assert get_path(data, "a.c") is MISSING


def test_delete() -> None:
    data = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert delete_path(data, "a.b") is True
    assert delete_path(data, "a.b") is False
    assert delete_path(data, "x.y") is False
    assert delete_path(data, "l.1") is True  # items become None, indexes stay put
    assert data == {"a": {"c": 2}, "l": [1, None]}


@pytest.mark.parametrize("bad", ["", ".", "a.", ".a", "a..b"])
def test_malformed_paths(bad: str) -> None:
    with pytest.raises(PathError):
        Path(bad)


def test_compiled_paths_are_cached_and_comparable() -> None:
    assert compile_path("a.b") is compile_path("a.b")
    assert Path("a.b") == Path("a.b")
    assert hash(Path("a.b")) == hash(Path("a.b"))
    assert Path("a.b").parts == ("a", "b")
