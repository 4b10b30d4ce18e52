"""``castiel-sync vault rotate-master-key`` through typer's CliRunner: on the embedded
default (a SQLite file in the data dir) and on any CASTIEL_DATABASE_URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import delete
from typer.testing import CliRunner

from castiel_sync.cli.main import app
from castiel_sync.store.base import create_engine
from castiel_sync.store.schema import create_all
from castiel_sync.vault.keyring import KeyFile, encode_key, generate_master_key
from castiel_sync.vault.local import LocalVault, VaultSecretRow

SECRETS = {f"tenant-acme-salesforce-i{i}-oauth": f"token-{i}" for i in range(5)}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in [v for v in os.environ if v.startswith("CASTIEL_")]:
        monkeypatch.delenv(var)


async def _seed(url: str, key_file: Path) -> str:
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            await create_all(engine)
        else:  # the session's shared PostgreSQL database: start from an empty vault
            async with engine.begin() as conn:
                await conn.execute(delete(VaultSecretRow.__table__))
        vault = LocalVault(engine, KeyFile(key_file))
        for name, value in SECRETS.items():
            await vault.put(name, "old-" + value)
            await vault.put(name, value)
        return vault.keyring.active
    finally:
        await engine.dispose()


async def _read_back(url: str, key_file: Path) -> dict[str, str]:
    engine = create_engine(url)
    try:
        vault = LocalVault(engine, KeyFile(key_file))
        return {name: await vault.get(name) for name in await vault.list()}
    finally:
        await engine.dispose()


def test_rotate_on_the_embedded_default(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'castiel.db'}"
    old_id = asyncio.run(_seed(url, tmp_path / "master.key"))

    result = CliRunner().invoke(
        app,
        ["vault", "rotate-master-key", "--batch-size", "3"],
        env={"CASTIEL_DATA_DIR": str(tmp_path)},
    )

    assert result.exit_code == 0, result.output
    ring = KeyFile(tmp_path / "master.key").load()
    assert old_id not in ring.keys and len(ring.keys) == 1
    assert f"Re-wrapped 10 data keys in 4 batches under master key {ring.active}" in result.output
    assert f"Retired master keys: {old_id}" in result.output
    assert encode_key(ring.active_key) not in result.output
    assert asyncio.run(_read_back(url, tmp_path / "master.key")) == SECRETS


def test_rotate_on_a_database_url(db_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "vault.key"
    old_id = asyncio.run(_seed(db_url, key_file))

    result = CliRunner().invoke(
        app,
        ["vault", "rotate-master-key"],
        env={
            "CASTIEL_DATABASE_URL": db_url,
            "CASTIEL_MASTER_KEY_FILE": str(key_file),
            "CASTIEL_DATA_DIR": str(tmp_path / "unused"),
        },
    )

    assert result.exit_code == 0, result.output
    assert "Re-wrapped 10 data keys in 1 batch under" in result.output
    assert old_id not in KeyFile(key_file).load().keys
    assert asyncio.run(_read_back(db_url, key_file)) == SECRETS
    assert not (tmp_path / "unused").exists()


def test_a_missing_database_or_table_changes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["vault", "rotate-master-key"], env={"CASTIEL_DATA_DIR": str(data)}
    )
    assert result.exit_code == 1
    assert "no database in" in result.output and "db upgrade" in result.output
    assert not data.exists()

    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(
        app,
        ["vault", "rotate-master-key"],
        env={"CASTIEL_DATABASE_URL": url, "CASTIEL_DATA_DIR": str(data)},
    )
    assert result.exit_code == 1
    assert "has no vault_secrets table" in result.output
    assert not data.exists()  # no key file created either


def test_an_exposed_key_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'castiel.db'}"
    asyncio.run(_seed(url, tmp_path / "master.key"))
    (tmp_path / "master.key").chmod(0o644)
    before = (tmp_path / "master.key").read_bytes()

    result = CliRunner().invoke(
        app, ["vault", "rotate-master-key"], env={"CASTIEL_DATA_DIR": str(tmp_path)}
    )

    assert result.exit_code == 1
    assert "mode 0644" in result.output and "chmod 600" in result.output
    assert (tmp_path / "master.key").read_bytes() == before


def test_an_environment_key_is_refused(tmp_path: Path) -> None:
    key = encode_key(generate_master_key())
    result = CliRunner().invoke(
        app,
        ["vault", "rotate-master-key"],
        env={"CASTIEL_DATA_DIR": str(tmp_path), "CASTIEL_MASTER_KEY": key},
    )
    assert result.exit_code == 2
    assert "CASTIEL_MASTER_KEY" in result.output and key not in result.output
