"""Master keys of the local vault: a keyring with one active key, and where it is kept.

A keyring maps key ids to 32-byte AES keys; the active key wraps new data keys, the others
only unwrap old ones. A key id is a fingerprint of its key (``k`` + 16 hex digits of a
SHA-256), so the same key always has the same id, wherever it comes from, and a wrong key
shows up as an unknown id instead of a failed decryption.

Sources:

- :class:`EnvKey`: ``CASTIEL_MASTER_KEY``, one key (base64url, 32 bytes). Read-only.
- :class:`KeyFile`: ``<data_dir>/master.key`` by default. Created on first use with mode
  0600 (never chmod-ed afterwards); refused if group or others may access it. Holds JSON
  ``{"format": ..., "active": id, "keys": {id: base64url}}``; a file holding one bare
  base64url key is read too (that is how an operator moves an env key into a file).
  Saved atomically (temporary file, fsync, rename), so a reader sees the old keyring or
  the new one, never half of one.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from castiel_sync.private_files import (
    publish_private_file,
    read_private_file,
    replace_private_file,
)
from castiel_sync.vault.base import MasterKeyError

KEY_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
FORMAT = "castiel-sync-keyring/1"


def generate_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    return "k" + hashlib.sha256(b"castiel-sync master key id\x00" + key).hexdigest()[:16]


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def decode_key(text: str, source: str) -> bytes:
    """A 32-byte key from base64url (padding optional). Errors never quote the text."""
    text = text.strip().rstrip("=")
    if not _BASE64URL.fullmatch(text):  # the decoder itself skips stray characters
        raise MasterKeyError(f"{source} is not base64url")
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{source} is not base64url") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{source} must be {KEY_BYTES} bytes, base64url (got {len(key)})")
    return key


@dataclass(frozen=True)
class Keyring:
    active: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise MasterKeyError(f"the keyring's active key {self.active!r} is not in it")

    def __repr__(self) -> str:  # never the key bytes
        return f"Keyring(active={self.active!r}, ids={sorted(self.keys)!r})"

    @classmethod
    def of(cls, key: bytes) -> Keyring:
        kid = key_id(key)
        return cls(kid, {kid: key})

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active]

    def with_active(self, key: bytes) -> Keyring:
        """This keyring plus ``key``, which becomes the active key."""
        kid = key_id(key)
        return Keyring(kid, {**self.keys, kid: key})

    def only_active(self) -> Keyring:
        return Keyring.of(self.active_key)

    def dumps(self) -> bytes:
        keys = {kid: encode_key(key) for kid, key in sorted(self.keys.items())}
        return json.dumps({"format": FORMAT, "active": self.active, "keys": keys}).encode()

    @classmethod
    def loads(cls, data: bytes, source: str) -> Keyring:
        text = data.decode("utf-8", errors="replace").strip()
        if not text.startswith("{"):
            return cls.of(decode_key(text, source))
        try:
            doc = json.loads(text)
            fmt, active, encoded = doc["format"], doc["active"], doc["keys"]
        except (ValueError, KeyError, TypeError):
            raise MasterKeyError(f"{source} is not a castiel-sync keyring") from None
        if fmt != FORMAT or not isinstance(encoded, dict):
            raise MasterKeyError(f"{source} has an unknown keyring format {fmt!r}")
        keys = {}
        for kid, value in encoded.items():
            key = decode_key(str(value), f"{source}: key {kid!r}")
            if key_id(key) != kid:
                raise MasterKeyError(f"{source}: key {kid!r} does not match its id")
            keys[kid] = key
        return cls(active, keys)


class KeySource(ABC):
    """Where a keyring is kept: load it, notice a change, save a new one."""

    description: str

    @abstractmethod
    def load(self) -> Keyring: ...

    def changed(self) -> bool:
        """Whether the kept keyring may differ from the one last loaded (cheap)."""
        return False

    def save(self, ring: Keyring) -> None:
        raise MasterKeyError(
            f"the master key comes from {self.description}, which cannot be rewritten; "
            "rotation needs a key file: write the key to one (mode 0600), set "
            "CASTIEL_MASTER_KEY_FILE to it and unset CASTIEL_MASTER_KEY"
        )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while rotating, so two rotations never interleave."""
        yield


class EnvKey(KeySource):
    description = "CASTIEL_MASTER_KEY"

    def __init__(self, value: SecretStr) -> None:
        self._ring = Keyring.of(decode_key(value.get_secret_value(), self.description))

    def load(self) -> Keyring:
        return self._ring


class KeyFile(KeySource):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"key file {path}"
        self._seen: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        return self._signature() != self._seen

    def load(self) -> Keyring:
        try:
            data, st = read_private_file(self.path, self.description, MasterKeyError)
        except FileNotFoundError:
            publish_private_file(self.path, Keyring.of(generate_master_key()).dumps())
            data, st = read_private_file(self.path, self.description, MasterKeyError)
        self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        return Keyring.loads(data, self.description)

    def save(self, ring: Keyring) -> None:
        replace_private_file(self.path, ring.dumps())
        self._seen = self._signature()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        import fcntl  # POSIX; the local vault's key file permissions are POSIX too

        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MasterKeyError(
                    f"another master key rotation holds {lock_path}; wait for it to finish"
                ) from None
            yield
        finally:
            os.close(fd)
