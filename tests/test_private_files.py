"""Key files: created 0600 and complete, first writer wins, loose permissions refused."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from castiel_sync.api.auth import JwtKeyFileError, hs256_key
from castiel_sync.private_files import (
    publish_private_file,
    read_private_file,
    replace_private_file,
)
from castiel_sync.settings import Settings


def test_publish_creates_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        publish_private_file(tmp_path / "k", b"one")
    finally:
        os.umask(old)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert read_private_file(tmp_path / "k", "k", ValueError)[0] == b"one"


def test_first_publisher_wins_and_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    payloads = [bytes([i]) * 4096 for i in range(1, 33)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda data: publish_private_file(path, data), payloads))
    content = path.read_bytes()
    assert content in payloads
    assert not [p for p in tmp_path.iterdir() if p.name != "k"]  # no temp files left


def test_replace_swaps_content_atomically(tmp_path: Path) -> None:
    path = tmp_path / "k"
    publish_private_file(path, b"old")
    replace_private_file(path, b"new")
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_loose_permissions_are_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"x")
    path.chmod(mode)
    with pytest.raises(ValueError, match="chmod 600"):
        read_private_file(path, "key file", ValueError)


def test_jwt_key_file_is_shared_by_concurrent_starts_and_refused_when_exposed(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: hs256_key(settings), range(16)))
    assert len(keys) == 1 and len(next(iter(keys))) >= 32
    (tmp_path / "jwt.key").chmod(0o644)
    with pytest.raises(JwtKeyFileError, match="chmod 600"):
        hs256_key(settings)
