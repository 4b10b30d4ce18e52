"""All configuration, in one place.

Every setting is read from an environment variable named ``CASTIEL_<FIELD>`` (upper
case), or from the TOML file named by ``CASTIEL_CONFIG_FILE``; the environment wins.
The README's configuration reference is generated from this class
(``castiel-sync config reference``), so the docstrings below are the documentation.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASTIEL_", extra="ignore")

    data_dir: Path = Field(
        Path("data"),
        description="Where the embedded default keeps its SQLite file and generated keys.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL. Default: SQLite file `<data_dir>/castiel.db`. "
        "PostgreSQL: `postgresql+asyncpg://user@host:5432/db`.",
    )
    bus_url: str = Field(
        "embedded",
        description="`embedded` (durable queue tables in the database) or "
        "`amqp://user:pass@host:5672/` (RabbitMQ).",
    )
    bus_namespace: str = Field(
        "",
        pattern=r"^[A-Za-z0-9._-]{0,64}$",
        description="Prefix of the RabbitMQ exchange and queue names, so several deployments "
        "(or test runs) can share one broker; e.g. `staging.`. Empty: the plain names.",
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="Event loop of the long-running processes: `auto` (uvloop where "
        "installed, else the standard loop), `asyncio` or `uvloop`.",
    )
    vault: Literal["local", "azure"] = Field(
        "local",
        description="Secret store backend: `local` (AES-256-GCM in the database) or `azure`.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="Local vault master key, 32 bytes base64url. Default: read from (or created "
        "in) `master_key_file`.",
    )
    master_key_file: Path | None = Field(
        None,
        description="Local vault master key file. Default: `<data_dir>/master.key` (mode 0600).",
    )
    azure_vault_url: str | None = Field(
        None, description="Azure Key Vault URL, with `vault=azure`."
    )
    jwt_algorithm: Literal["HS256", "RS256"] = Field(
        "HS256",
        description="Bearer token algorithm: HS256 with `jwt_secret`, RS256 with `jwt_jwks_url`.",
    )
    jwt_secret: SecretStr | None = Field(
        None,
        description="HS256 key. Default: read from (or created in) `<data_dir>/jwt.key` "
        "(mode 0600).",
    )
    jwt_jwks_url: str | None = Field(None, description="JWKS URL for RS256 tokens.")
    jwt_issuer: str = Field("castiel-sync", description="Expected `iss` claim.")
    jwt_audience: str = Field("castiel-sync", description="Expected `aud` claim.")
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL providers reach this service at (OAuth redirect, webhooks).",
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, description="Port the HTTP server listens on.")
    max_records_per_sync: int = Field(
        1000, ge=1, le=1000, description="Global default records per sync job (at most 1000)."
    )
    max_concurrent_syncs: int = Field(
        3, ge=1, le=10, description="Default concurrent syncs per tenant (at most 10)."
    )
    max_webhook_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest webhook body accepted; larger gets 413."
    )
    log_level: str = Field("INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field("console", description="Log output format.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CASTIEL_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'castiel.db').resolve()}"

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"


@lru_cache
def get_settings() -> Settings:
    return Settings()
