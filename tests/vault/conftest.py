"""Fixtures of the vault suite: a local vault on each database backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.vault.keyring import KeyFile
from castiel_sync.vault.local import LocalVault


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "master.key"


@pytest.fixture
def vault(engine: AsyncEngine, key_path: Path) -> LocalVault:
    return LocalVault(engine, KeyFile(key_path))
