"""Ids are time-ordered UUIDs (version 7): B-tree friendly on every table."""

from __future__ import annotations

import os
import uuid

from castiel_sync.store.base import new_id, new_ids


def test_ids_are_version_7_uuid_strings() -> None:
    value = new_id()
    assert len(value) == 36
    parsed = uuid.UUID(value)
    assert str(parsed) == value
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    ids = [new_id() for _ in range(20_000)]  # many per millisecond: the counter carries
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_random_tails_differ() -> None:
    tails = {new_id()[19:] for _ in range(2_000)}
    assert len(tails) == 2_000


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    new_id()  # the parent's random pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, ",".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    ours = {new_id() for _ in range(50)}
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    theirs = set(b"".join(chunks).decode().split(","))
    assert len(theirs) == 50
    assert not ours & theirs
    assert {i[19:] for i in ours}.isdisjoint({i[19:] for i in theirs})


def test_ids_made_at_once_are_the_same_kind_and_keep_the_order() -> None:
    before = new_id()
    batch = new_ids(5_000)
    after = new_id()
    assert [before, *batch, after] == sorted([before, *batch, after])
    assert len(set(batch)) == 5_000
    for value in batch[:3] + batch[-3:]:
        parsed = uuid.UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 7, uuid.RFC_4122)
    assert len({value[19:] for value in batch}) == 5_000
    assert new_ids(0) == []
