"""The local vault on SQLite and PostgreSQL: the Vault contract, the envelope encryption,
the master key's handling, and that the database never holds a secret in clear."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.domain.secret_names import tenant_prefix, tenant_secret, user_secret
from castiel_sync.settings import Settings
from castiel_sync.store.schema import metadata
from castiel_sync.vault import open_vault
from castiel_sync.vault.base import (
    InvalidSecretNameError,
    MasterKeyError,
    SecretDecryptionError,
    SecretNotFoundError,
)
from castiel_sync.vault.keyring import EnvKey, KeyFile, encode_key, generate_master_key, key_id
from castiel_sync.vault.local import LocalVault, VaultSecretRow

T = VaultSecretRow.__table__


async def test_round_trip_and_versions(vault: LocalVault) -> None:
    name = tenant_secret("acme", "salesforce", "sales-team")
    token = json.dumps({"access_token": "at-1", "refresh_token": "rt-1", "note": "ünï ✓"})
    assert await vault.put(name, token) == 1
    assert await vault.get(name) == token
    assert await vault.put(name, "second") == 2
    assert await vault.put(name, "") == 3
    assert await vault.get(name) == ""
    assert await vault.get(name, 1) == token
    assert await vault.get(name, 2) == "second"
    with pytest.raises(SecretNotFoundError, match=f"version 4 of secret '{name}' does not exist"):
        await vault.get(name, 4)
    with pytest.raises(ValueError, match="versions start at 1"):
        await vault.get(name, 0)


async def test_missing_secret_names_the_secret(vault: LocalVault) -> None:
    with pytest.raises(SecretNotFoundError, match="secret 'system-gong-apikey' does not exist"):
        await vault.get("system-gong-apikey")


async def test_delete_removes_every_version_and_is_idempotent(vault: LocalVault) -> None:
    await vault.put("a", "1")
    await vault.put("a", "2")
    await vault.put("b", "keep")
    await vault.delete("a")
    for version in (None, 1, 2):
        with pytest.raises(SecretNotFoundError):
            await vault.get("a", version)
    await vault.delete("a")  # a retried handler deletes again: no error
    assert await vault.get("b") == "keep"
    assert await vault.put("a", "fresh") == 1  # numbering starts over for a new secret


async def test_list_by_prefix_keeps_tenants_apart(vault: LocalVault) -> None:
    names = [
        tenant_secret("abc", "salesforce", "sales"),
        tenant_secret("abc", "salesforce", "sales", "apikey"),
        user_secret("abc", "u1", "gmail", "personal"),
        tenant_secret("abc1", "salesforce", "sales"),
        "system-salesforce-oauth",
    ]
    for n in names:
        await vault.put(n, "v")
    await vault.put(names[0], "v2")  # two versions, listed once
    assert await vault.list(tenant_prefix("abc")) == sorted(names[:3])
    assert await vault.list(tenant_prefix("abc1")) == [names[3]]
    assert await vault.list("system-") == ["system-salesforce-oauth"]
    assert await vault.list() == sorted(names)
    assert await vault.list("nothing-") == []


@pytest.mark.parametrize("bad", ["", "Upper", "under_score", "sp ace", "a" * 128, "a%", "é"])
async def test_invalid_names_are_refused_before_any_io(vault: LocalVault, bad: str) -> None:
    for call in (vault.get(bad), vault.put(bad, "v"), vault.delete(bad)):
        with pytest.raises(InvalidSecretNameError, match="invalid secret name"):
            await call
    with pytest.raises(InvalidSecretNameError):
        await vault.list("a_%")
    async with vault._engine.connect() as conn:
        assert (await conn.execute(select(T))).first() is None


async def test_concurrent_puts_get_distinct_versions(vault: LocalVault) -> None:
    versions = await asyncio.gather(*(vault.put("busy", f"v{i}") for i in range(12)))
    assert sorted(versions) == list(range(1, 13))
    values = {await vault.get("busy", v) for v in versions}
    assert values == {f"v{i}" for i in range(12)}


async def test_wrong_master_key_fails_cleanly(engine: AsyncEngine, vault: LocalVault) -> None:
    await vault.put("creds", "the-real-token")
    other_key = generate_master_key()
    stranger = LocalVault(engine, EnvKey(SecretStr(encode_key(other_key))))
    with pytest.raises(SecretDecryptionError) as info:
        await stranger.get("creds")
    message = str(info.value)
    assert "'creds'" in message and "wrong master key" in message
    assert vault.keyring.active in message and key_id(other_key) in message
    assert "the-real-token" not in message
    assert await stranger.list() == ["creds"]  # names are not secret
    assert await vault.get("creds") == "the-real-token"


async def _row(engine: AsyncEngine, name: str, version: int = 1) -> dict[str, object]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(T).where(T.c.name == name, T.c.version == version))).one()
    return dict(row._mapping)


async def _overwrite(engine: AsyncEngine, name: str, version: int, **values: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(T).where(T.c.name == name, T.c.version == version).values(**values)
        )


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


@pytest.mark.parametrize(
    ("column", "at", "expected"),
    [
        ("ciphertext", 20, "ciphertext was modified"),  # the encrypted value
        ("ciphertext", -1, "ciphertext was modified"),  # its GCM tag
        ("ciphertext", 0, "ciphertext was modified"),  # its nonce
        ("wrapped_key", 20, "data key of version 1"),  # the wrapped data key
    ],
)
async def test_tampered_rows_fail_authentication(
    engine: AsyncEngine, vault: LocalVault, column: str, at: int, expected: str
) -> None:
    await vault.put("victim", "secret-value")
    row = await _row(engine, "victim")
    await _overwrite(engine, "victim", 1, **{column: _flip(row[column], at)})  # type: ignore[arg-type]
    with pytest.raises(SecretDecryptionError, match=expected) as info:
        await vault.get("victim")
    assert "'victim'" in str(info.value) and "secret-value" not in str(info.value)


async def test_rows_copied_between_names_or_versions_do_not_decrypt(
    engine: AsyncEngine, vault: LocalVault
) -> None:
    """The name and version are authenticated: an attacker who can write the table cannot
    make one tenant's secret read as another's (or an old version as the latest)."""
    await vault.put("tenant-a-gmail-x-oauth", "a-token")
    await vault.put("tenant-b-gmail-x-oauth", "b-token")
    await vault.put("tenant-b-gmail-x-oauth", "b-token-2")
    a = await _row(engine, "tenant-a-gmail-x-oauth")
    b1 = await _row(engine, "tenant-b-gmail-x-oauth", 1)
    whole = {k: a[k] for k in ("key_id", "wrapped_key", "ciphertext")}

    await _overwrite(engine, "tenant-b-gmail-x-oauth", 2, **whole)
    with pytest.raises(SecretDecryptionError, match="copied from another secret"):
        await vault.get("tenant-b-gmail-x-oauth")

    # Only the ciphertext swapped in (b's own wrapped key kept): wrong data key.
    await _overwrite(engine, "tenant-b-gmail-x-oauth", 2, ciphertext=a["ciphertext"])
    with pytest.raises(SecretDecryptionError):
        await vault.get("tenant-b-gmail-x-oauth", 2)

    # Version 1 of the same secret moved to version 2.
    await _overwrite(
        engine,
        "tenant-b-gmail-x-oauth",
        2,
        **{k: b1[k] for k in ("key_id", "wrapped_key", "ciphertext")},
    )
    with pytest.raises(SecretDecryptionError):
        await vault.get("tenant-b-gmail-x-oauth", 2)
    assert await vault.get("tenant-b-gmail-x-oauth", 1) == "b-token"
    assert await vault.get("tenant-a-gmail-x-oauth") == "a-token"


async def test_the_database_never_holds_a_secret_in_clear(
    engine: AsyncEngine, vault: LocalVault, db_url: str, key_path: Path
) -> None:
    access = "at-" + secrets.token_hex(20)
    refresh = "rt-" + secrets.token_hex(20)
    name = tenant_secret("acme", "hubspot", "main")
    await vault.put(name, json.dumps({"access_token": access, "refresh_token": refresh}))
    await vault.put(name, json.dumps({"access_token": access + "x", "refresh_token": refresh}))
    await vault.put("deleted-one", access)
    await vault.delete("deleted-one")
    master = KeyFile(key_path).load().active_key
    needles = [access.encode(), refresh.encode(), master, encode_key(master).encode()]
    needles += [access.encode("utf-16-le"), access.encode().hex().encode()]

    if engine.dialect.name == "sqlite":
        db_file = Path(db_url.split("///", 1)[1])
        files = [p for p in db_file.parent.iterdir() if p.name.startswith(db_file.name)]
        assert db_file in files
        raw = b"".join(p.read_bytes() for p in files)  # the database, its WAL and shm
    else:
        chunks = []
        async with engine.connect() as conn:
            for table in metadata().sorted_tables:
                # Table names come from our own metadata, not from input.
                query = f'SELECT t::text FROM "{table.name}" t'  # noqa: S608
                rows = await conn.execute(text(query))
                chunks += [r[0].encode() for r in rows]
            rows = await conn.execute(select(T.c.wrapped_key, T.c.ciphertext))
            chunks += [bytes(blob) for r in rows for blob in r]
        raw = b"\n".join(chunks)
    assert name.encode() in raw  # the scan reads the stored data: names are in clear
    for needle in needles:
        assert needle not in raw


def test_key_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "master.key"
    old = os.umask(0)
    try:
        ring = KeyFile(path).load()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyFile(path).load() == ring  # the same key on the next start
    assert len(ring.active_key) == 32


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    KeyFile(path).load()
    before = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match=f"mode 0{mode:o}.*chmod 600"):
        KeyFile(path).load()
    assert path.read_bytes() == before


def test_malformed_key_material_is_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"c2hvcnQta2V5LXNlY3JldA")  # base64url, but 17 bytes
    os.close(fd)
    with pytest.raises(MasterKeyError, match="must be 32 bytes") as info:
        KeyFile(path).load()
    assert "c2hvcnQt" not in str(info.value)
    with pytest.raises(MasterKeyError, match="CASTIEL_MASTER_KEY is not base64url") as info:
        EnvKey(SecretStr("not base64 at all!"))
    assert "at all" not in str(info.value)


def test_a_bare_key_file_is_read(tmp_path: Path) -> None:
    key = generate_master_key()
    path = tmp_path / "master.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, encode_key(key).encode() + b"\n")
    os.close(fd)
    assert KeyFile(path).load().active == key_id(key)


async def test_open_vault_uses_the_key_file_or_the_environment(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    by_file = open_vault(Settings(data_dir=tmp_path), engine)
    assert isinstance(by_file, LocalVault)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    await by_file.put("shared", "value")

    key = KeyFile(tmp_path / "master.key").load().active_key
    by_env = open_vault(
        Settings(data_dir=tmp_path / "elsewhere", master_key=SecretStr(encode_key(key))), engine
    )
    assert await by_env.get("shared") == "value"
    assert not (tmp_path / "elsewhere").exists()
