"""The local vault: AES-256-GCM envelope encryption in the project's own database.

Each version of a secret is one row of ``vault_secrets``:

- ``ciphertext`` = nonce || AES-256-GCM(data key, value), with a fresh random 256-bit
  data key and 96-bit nonce per version;
- ``wrapped_key`` = nonce || AES-256-GCM(master key, data key);
- ``key_id``: which master key wrapped the data key (see :mod:`castiel_sync.vault.keyring`).

Both encryptions authenticate the secret's name and version as associated data (and the
wrapping, the master key id), so bytes copied from one row to another, or to another
version, fail authentication instead of decrypting as the wrong secret. The database holds
names in clear, never a value or a data key.

Master key rotation (:meth:`LocalVault.rotate_master_key`) re-wraps only the data keys,
batch by batch; values are never re-encrypted, and reads and writes go on meanwhile:

1. the new key is saved to the keyring as active, beside the old ones, *before* any row is
   re-wrapped, so every process can unwrap both (a process that meets an unknown key id
   reloads the keyring once; one that writes reloads it when the key file changed);
2. rows not under the new key are re-wrapped in short transactions, each row
   compare-and-swapped on its key id, until a pass finds none;
3. only then are the old keys dropped from the keyring, followed by one last pass for a
   row a stale writer may have added meanwhile (the rotating process still holds the old
   keys in memory). If any row cannot be re-wrapped, the old keys stay.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Integer,
    LargeBinary,
    String,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Mapped, mapped_column

from castiel_sync.settings import Settings
from castiel_sync.store.base import Base, UTCDateTime, utcnow
from castiel_sync.vault.base import (
    SecretDecryptionError,
    SecretNotFoundError,
    Vault,
    VaultError,
    validate_name,
    validate_prefix,
    validate_version,
)
from castiel_sync.vault.keyring import KEY_BYTES, EnvKey, KeyFile, Keyring, KeySource, key_id

NONCE_BYTES = 12
PUT_ATTEMPTS = 50  # concurrent puts to one name retry on the version's unique key


class VaultSecretRow(Base):
    """One version of one secret, encrypted. Private to the local vault."""

    __tablename__ = "vault_secrets"

    name: Mapped[str] = mapped_column(String(127), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key_id: Mapped[str] = mapped_column(String(32))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


_t = cast(Table, VaultSecretRow.__table__)


def _aad(purpose: bytes, name: str, version: int, kid: str = "") -> bytes:
    # Names hold only [0-9a-z-] and key ids [0-9a-f k], so NUL separates unambiguously.
    return b"\x00".join(
        (b"castiel-sync/vault/v1", purpose, name.encode(), str(version).encode(), kid.encode())
    )


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _wrap(ring: Keyring, name: str, version: int, data_key: bytes) -> dict[str, Any]:
    aad = _aad(b"data-key", name, version, ring.active)
    return {"key_id": ring.active, "wrapped_key": _encrypt(ring.active_key, data_key, aad)}


def _unwrap(ring: Keyring, name: str, version: int, kid: str, wrapped: bytes) -> bytes:
    master = ring.keys.get(kid)
    if master is None:
        raise SecretDecryptionError(
            f"version {version} of secret {name!r} is wrapped by master key {kid!r}, which "
            f"this vault does not hold (keyring has {sorted(ring.keys)}): wrong master key?"
        )
    try:
        return AESGCM(master).decrypt(
            wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(b"data-key", name, version, kid)
        )
    except InvalidTag:
        raise SecretDecryptionError(
            f"the data key of version {version} of secret {name!r} failed authentication: "
            "the row was modified or copied from another secret"
        ) from None


def _seal(ring: Keyring, name: str, version: int, value: str) -> dict[str, Any]:
    data_key = AESGCM.generate_key(bit_length=256)
    ciphertext = _encrypt(data_key, value.encode(), _aad(b"value", name, version))
    return {"name": name, "version": version, "ciphertext": ciphertext} | _wrap(
        ring, name, version, data_key
    )


def _open(ring: Keyring, row: Any) -> str:
    data_key = _unwrap(ring, row.name, row.version, row.key_id, row.wrapped_key)
    ct = row.ciphertext
    try:
        plaintext = AESGCM(data_key).decrypt(
            ct[:NONCE_BYTES], ct[NONCE_BYTES:], _aad(b"value", row.name, row.version)
        )
    except InvalidTag:
        raise SecretDecryptionError(
            f"version {row.version} of secret {row.name!r} failed authentication: its "
            "ciphertext was modified or copied from another secret"
        ) from None
    return plaintext.decode()


@dataclass(frozen=True)
class RotationReport:
    new_key_id: str
    retired_key_ids: tuple[str, ...]
    rewrapped: int  # data keys re-wrapped under the new key
    batches: int
    failed: tuple[str, ...]  # "name@version" that could not be unwrapped; old keys kept

    @property
    def ok(self) -> bool:
        return not self.failed


class LocalVault(Vault):
    def __init__(self, engine: AsyncEngine, keys: KeySource) -> None:
        self._engine = engine
        self._keys = keys
        self._ring = keys.load()
        self._rotating = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, engine: AsyncEngine) -> LocalVault:
        if settings.master_key is not None:
            return cls(engine, EnvKey(settings.master_key))
        return cls(engine, KeyFile(settings.resolved_master_key_file))

    @property
    def keyring(self) -> Keyring:
        return self._ring

    async def _fetch(self, name: str, version: int | None) -> Any:
        query = select(_t).where(_t.c.name == name)
        if version is None:
            query = query.order_by(_t.c.version.desc()).limit(1)
        else:
            query = query.where(_t.c.version == version)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).first()

    async def get(self, name: str, version: int | None = None) -> str:
        validate_name(name)
        validate_version(version)
        for attempt in range(2):
            row = await self._fetch(name, version)
            if row is None:
                raise SecretNotFoundError(name, version)
            if row.key_id not in self._ring.keys:
                # Re-wrapped under a key another process added since we loaded the keyring.
                self._ring = self._keys.load()
            if row.key_id in self._ring.keys or attempt:
                break
            # Or re-wrapped again (and its old key retired) since we read it: read it again.
            version = row.version
        return _open(self._ring, row)

    async def put(self, name: str, value: str) -> int:
        validate_name(name)
        if not isinstance(value, str):
            raise TypeError("secret values are strings (store JSON for structured values)")
        if self._keys.changed():  # a rotation elsewhere may have made a new key active
            self._ring = self._keys.load()
        for _ in range(PUT_ATTEMPTS):
            try:
                async with self._engine.begin() as conn:
                    latest = await conn.scalar(
                        select(func.max(_t.c.version)).where(_t.c.name == name)
                    )
                    version = (latest or 0) + 1
                    await conn.execute(insert(_t).values(_seal(self._ring, name, version, value)))
                return version
            except IntegrityError:
                continue  # another writer took this version number
        raise VaultError(f"could not store a new version of secret {name!r}: too many writers")

    async def delete(self, name: str) -> None:
        validate_name(name)
        async with self._engine.begin() as conn:
            await conn.execute(delete(_t).where(_t.c.name == name))

    async def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        query = select(_t.c.name).distinct().order_by(_t.c.name)
        if prefix:
            query = query.where(_t.c.name.startswith(prefix, autoescape=True))
        async with self._engine.connect() as conn:
            return list((await conn.scalars(query)).all())

    async def rotate_master_key(
        self,
        new_key: bytes,
        *,
        batch_size: int = 500,
        on_batch: Callable[[int], Awaitable[None]] | None = None,
    ) -> RotationReport:
        """Make ``new_key`` the master key and re-wrap every data key under it.

        ``on_batch`` is awaited after each committed batch with the count re-wrapped so far.
        """
        if len(new_key) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes (got {len(new_key)})")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self._rotating.locked():
            raise VaultError("a master key rotation is already running in this process")
        async with self._rotating:
            with self._keys.exclusive():
                return await self._rotate(new_key, batch_size, on_batch)

    async def _rotate(
        self,
        new_key: bytes,
        batch_size: int,
        on_batch: Callable[[int], Awaitable[None]] | None,
    ) -> RotationReport:
        staged = self._keys.load().with_active(new_key)  # fresh: the file is the truth
        self._keys.save(staged)
        self._ring = staged
        new_id = key_id(new_key)
        rewrapped = batches = 0
        failed: list[str] = []

        async def sweep() -> int:
            nonlocal rewrapped, batches
            done = 0
            after: tuple[str, int] = ("", 0)
            while True:
                rows, count, bad = await self._rewrap_batch(staged, new_id, after, batch_size)
                if not rows:
                    return done
                after = (rows[-1].name, rows[-1].version)
                done += count
                rewrapped += count
                batches += 1
                failed.extend(bad)
                if on_batch is not None:
                    await on_batch(rewrapped)

        while await sweep() and not failed:
            pass  # again, until a pass finds nothing left to re-wrap
        retired = tuple(sorted(set(staged.keys) - {new_id}))
        if failed or not retired:
            return RotationReport(new_id, (), rewrapped, batches, tuple(failed))
        final = staged.only_active()
        self._keys.save(final)
        self._ring = final
        await sweep()
        if failed:  # a late row we could not re-wrap: keep the old keys after all
            self._keys.save(staged)
            self._ring = staged
            retired = ()
        return RotationReport(new_id, retired, rewrapped, batches, tuple(failed))

    async def _rewrap_batch(
        self, ring: Keyring, new_id: str, after: tuple[str, int], batch_size: int
    ) -> tuple[Sequence[Any], int, Sequence[str]]:
        name, version = after
        query = (
            select(_t.c.name, _t.c.version, _t.c.key_id, _t.c.wrapped_key)
            .where(
                _t.c.key_id != new_id,
                or_(_t.c.name > name, and_(_t.c.name == name, _t.c.version > version)),
            )
            .order_by(_t.c.name, _t.c.version)
            .limit(batch_size)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        updates: list[tuple[Any, dict[str, Any]]] = []
        failed: list[str] = []
        for row in rows:
            try:
                data_key = _unwrap(ring, row.name, row.version, row.key_id, row.wrapped_key)
            except SecretDecryptionError:
                failed.append(f"{row.name}@{row.version}")
                continue
            updates.append((row, _wrap(ring, row.name, row.version, data_key)))
        count = 0
        if updates:
            async with self._engine.begin() as conn:
                for row, values in updates:
                    result = await conn.execute(
                        update(_t)
                        .where(
                            _t.c.name == row.name,
                            _t.c.version == row.version,
                            _t.c.key_id == row.key_id,  # unless deleted or re-wrapped meanwhile
                        )
                        .values(values)
                    )
                    count += result.rowcount
        return rows, count, failed
