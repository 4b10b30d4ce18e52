"""Master key rotation: every secret stays readable before, during and after, from this
vault and from another process's vault that loaded the keyring before the rotation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.vault.base import MasterKeyError, SecretDecryptionError, VaultError
from castiel_sync.vault.keyring import EnvKey, KeyFile, encode_key, generate_master_key, key_id
from castiel_sync.vault.local import LocalVault, VaultSecretRow

T = VaultSecretRow.__table__


async def _fill(vault: LocalVault, count: int) -> dict[tuple[str, int], str]:
    expected = {}
    for i in range(count):
        name = f"tenant-t{i % 7}-salesforce-i{i}-oauth"
        for round_ in range(1 + i % 2):  # some secrets have two versions
            value = json.dumps({"access_token": f"at-{i}-{round_}"})
            expected[(name, await vault.put(name, value))] = value
    return expected


async def _key_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.scalars(select(T.c.key_id))).all())


async def _read_all(vault: LocalVault, expected: dict[tuple[str, int], str]) -> int:
    for (name, version), value in expected.items():
        assert await vault.get(name, version) == value
    latest = {name: max(v for n, v in expected if n == name) for name, _ in expected}
    for name, version in latest.items():
        assert await vault.get(name) == expected[(name, version)]
    return len(expected) + len(latest)


async def test_rotation_rewraps_everything_and_retires_the_old_key(
    engine: AsyncEngine, vault: LocalVault, key_path: Path
) -> None:
    expected = await _fill(vault, 25)
    old_id = vault.keyring.active
    async with engine.connect() as conn:
        ciphertexts = dict(
            ((r.name, r.version), r.ciphertext)
            for r in await conn.execute(select(T.c.name, T.c.version, T.c.ciphertext))
        )
    old_key = vault.keyring.active_key
    new_key = generate_master_key()

    report = await vault.rotate_master_key(new_key, batch_size=4)

    assert report.ok and report.new_key_id == key_id(new_key)
    assert report.retired_key_ids == (old_id,)
    assert report.rewrapped == len(expected)
    assert report.batches == -(-len(expected) // 4)
    assert await _key_ids(engine) == {key_id(new_key)}
    ring = KeyFile(key_path).load()
    assert ring.active == key_id(new_key) and set(ring.keys) == {key_id(new_key)}
    await _read_all(vault, expected)
    await _read_all(LocalVault(engine, KeyFile(key_path)), expected)  # a restart
    # Envelope encryption: only data keys were re-wrapped, values untouched.
    async with engine.connect() as conn:
        for r in await conn.execute(select(T.c.name, T.c.version, T.c.ciphertext)):
            assert r.ciphertext == ciphertexts[(r.name, r.version)]
    # The old key alone no longer opens anything.
    old_only = LocalVault(engine, EnvKey(SecretStr(encode_key(old_key))))
    with pytest.raises(SecretDecryptionError, match="wrong master key"):
        await old_only.get(next(iter(expected))[0])


async def test_reads_and_writes_go_on_while_rotating(
    engine: AsyncEngine, vault: LocalVault, key_path: Path
) -> None:
    """Between every batch, and concurrently with the rotation task: reads from this vault
    and from a second vault (another process: it loaded only the old keyring), writes from
    the second vault, and writes under the old key by a process that never learns the new
    one, behind the sweep's cursor."""
    expected = await _fill(vault, 30)
    old_id = vault.keyring.active
    other = LocalVault(engine, KeyFile(key_path))  # loaded before the rotation
    idle = LocalVault(engine, KeyFile(key_path))  # loaded before, first used after it
    stale = LocalVault(engine, EnvKey(SecretStr(encode_key(vault.keyring.active_key))))
    new_key = generate_master_key()
    new_id = key_id(new_key)
    mid_rotation: list[tuple[int, set[str]]] = []
    written: dict[tuple[str, int], str] = {}

    async def between_batches(done: int) -> None:
        # The keyring on disk holds both keys until every row is re-wrapped.
        assert set(KeyFile(key_path).load().keys) == {old_id, new_id}
        mid_rotation.append((done, await _key_ids(engine)))
        await _read_all(vault, expected)
        await _read_all(other, expected)
        name = f"tenant-late-gmail-i{done}-oauth"
        value = f"written-during-rotation-{done}"
        written[(name, await other.put(name, value))] = value
        if len(mid_rotation) <= 3:  # "a-..." sorts before every row already swept
            name = f"a-stale-{len(mid_rotation)}"
            written[(name, await stale.put(name, "stale-writer"))] = "stale-writer"

    rotating = asyncio.create_task(
        vault.rotate_master_key(new_key, batch_size=5, on_batch=between_batches)
    )
    concurrent_reads = 0
    while not rotating.done():
        concurrent_reads += await _read_all(other, expected)
        concurrent_reads += await _read_all(vault, expected)
    report = await rotating

    assert report.ok and report.retired_key_ids == (old_id,)
    assert concurrent_reads > 0
    # Batches really interleaved: some rows were still under the old key between batches.
    assert any(ids == {old_id, new_id} for _, ids in mid_rotation)
    assert len(mid_rotation) >= len(expected) // 5
    assert await _key_ids(engine) == {new_id}
    written[("after-rotation", await idle.put("after-rotation", "v"))] = "v"
    fresh = LocalVault(engine, KeyFile(key_path))
    assert set(fresh.keyring.keys) == {new_id}
    await _read_all(fresh, {**expected, **written})
    await _read_all(other, {**expected, **written})


async def test_a_row_that_cannot_be_unwrapped_keeps_the_old_key(
    engine: AsyncEngine, vault: LocalVault, key_path: Path
) -> None:
    expected = await _fill(vault, 6)
    await vault.put("broken", "value")
    async with engine.begin() as conn:
        await conn.execute(update(T).where(T.c.name == "broken").values(wrapped_key=b"\0" * 60))
    old_id = vault.keyring.active
    new_key = generate_master_key()

    report = await vault.rotate_master_key(new_key, batch_size=2)

    assert not report.ok and report.failed == ("broken@1",)
    assert report.retired_key_ids == ()
    assert report.rewrapped == len(expected)
    ring = KeyFile(key_path).load()
    assert ring.active == key_id(new_key) and set(ring.keys) == {old_id, key_id(new_key)}
    await _read_all(LocalVault(engine, KeyFile(key_path)), expected)

    # Once the broken secret is dealt with, the next rotation retires both older keys.
    await vault.delete("broken")
    newest = generate_master_key()
    report = await vault.rotate_master_key(newest, batch_size=2)
    assert report.ok and set(report.retired_key_ids) == {old_id, key_id(new_key)}
    await _read_all(LocalVault(engine, KeyFile(key_path)), expected)


async def test_one_rotation_at_a_time(
    engine: AsyncEngine, vault: LocalVault, key_path: Path
) -> None:
    await _fill(vault, 3)
    with KeyFile(key_path).exclusive():  # another process is rotating
        with pytest.raises(MasterKeyError, match="another master key rotation"):
            await vault.rotate_master_key(generate_master_key())
    assert set(KeyFile(key_path).load().keys) == {vault.keyring.active}

    async def second_rotation(_: int) -> None:
        with pytest.raises(VaultError, match="already running"):
            await vault.rotate_master_key(generate_master_key())

    report = await vault.rotate_master_key(generate_master_key(), on_batch=second_rotation)
    assert report.ok and len(KeyFile(key_path).load().keys) == 1


async def test_an_environment_key_cannot_be_rotated(engine: AsyncEngine) -> None:
    key = generate_master_key()
    vault = LocalVault(engine, EnvKey(SecretStr(encode_key(key))))
    await vault.put("s", "v")
    with pytest.raises(MasterKeyError, match=r"CASTIEL_MASTER_KEY.*needs a key file"):
        await vault.rotate_master_key(generate_master_key())
    assert vault.keyring.active == key_id(key)
    assert await _key_ids(engine) == {key_id(key)}
    assert await vault.get("s") == "v"


async def test_bad_arguments_change_nothing(vault: LocalVault, key_path: Path) -> None:
    before = await asyncio.to_thread(key_path.read_bytes)
    with pytest.raises(ValueError, match="32 bytes"):
        await vault.rotate_master_key(b"short")
    with pytest.raises(ValueError, match="batch_size"):
        await vault.rotate_master_key(generate_master_key(), batch_size=0)
    assert await asyncio.to_thread(key_path.read_bytes) == before
