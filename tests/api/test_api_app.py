"""The app factory's lifespan on a fresh database, the docs, and the token command."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest
from typer.testing import CliRunner

from castiel_sync.api.app import create_app
from castiel_sync.api.auth import hs256_key
from castiel_sync.cli.main import app as cli
from castiel_sync.settings import Settings


async def test_lifespan_migrates_a_fresh_database_and_serves_docs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")  # embedded default: SQLite, key files
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200
            docs = await client.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            spec = (await client.get("/openapi.json")).json()
            assert "/integrations/{integration_id}/oauth/authorize" in spec["paths"]
            token = hs256_key(settings)
            assert (tmp_path / "data" / "jwt.key").stat().st_mode & 0o777 == 0o600
            assert token
            unauthenticated = await client.get("/providers")
            assert unauthenticated.status_code == 401
    assert (tmp_path / "data" / "castiel.db").exists()


def test_token_command_mints_a_token_the_service_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASTIEL_DATA_DIR", str(tmp_path))
    from castiel_sync.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, ["token", "--tenant", "acme", "--role", "tenant_admin", "--user", "u1"]
        )
        assert result.exit_code == 0, result.output
        token = result.output.strip()
        claims = jwt.decode(
            token,
            hs256_key(Settings(data_dir=tmp_path)),
            algorithms=["HS256"],
            audience="castiel-sync",
        )
        assert (claims["tenant_id"], claims["role"], claims["sub"]) == (
            "acme",
            "tenant_admin",
            "u1",
        )
        assert claims["exp"] - claims["iat"] == 3600
        bad = CliRunner().invoke(cli, ["token", "--tenant", "Not-Valid"])
        assert bad.exit_code == 2
        assert "lower-case" in bad.output
    finally:
        get_settings.cache_clear()
