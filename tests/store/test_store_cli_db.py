from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from castiel_sync.cli.main import app
from castiel_sync.store.migrate import head_revision


def test_db_upgrade_on_a_fresh_sqlite_file_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTIEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("CASTIEL_DATABASE_URL", raising=False)
    runner = CliRunner()
    before = runner.invoke(app, ["db", "current"])
    assert before.exit_code == 0, before.output
    assert "empty" in before.output and "behind" in before.output
    for _ in range(2):
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert f"database at revision {head_revision()}" in result.output
    assert (tmp_path / "data" / "castiel.db").exists()
    after = runner.invoke(app, ["db", "current"])
    assert after.exit_code == 0 and f"{head_revision()}: up to date" in after.output


def test_db_upgrade_with_an_explicit_url(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    result = CliRunner().invoke(app, ["db", "upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "other.db").exists()
