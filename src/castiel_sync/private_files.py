"""Files that hold keys: created 0600 and published complete, refused when readable by
group or others. One implementation for every key file (vault master keys, JWT key)."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def read_private_file(
    path: Path, description: str, error: type[Exception]
) -> tuple[bytes, os.stat_result]:
    """The file's bytes and stat; ``error`` if it is not a regular file only its owner can
    read. FileNotFoundError passes through."""
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{description} is not a regular file")
        if st.st_mode & 0o077:
            raise error(
                f"{description} has mode {stat.S_IMODE(st.st_mode):04o}: group and others "
                f"must have no access to a key file; run: chmod 600 {path}"
            )
        return f.read(), st


def publish_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` unless it exists, never half-written: written to a
    private temporary file, then hard-linked into place. If another process got there
    first, theirs stays (read it back)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def replace_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (0600), durable once this returns."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp
