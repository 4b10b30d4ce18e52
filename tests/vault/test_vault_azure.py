"""The Azure Key Vault backend, against an in-memory double of the SDK's async
``SecretClient``. Azure itself cannot be reached here: these tests cover what is ours
(name validation, version numbering, error mapping, delete + purge), not Key Vault."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from castiel_sync.settings import Settings
from castiel_sync.vault import open_vault
from castiel_sync.vault.azure import AzureVault, number_versions
from castiel_sync.vault.base import InvalidSecretNameError, SecretNotFoundError, VaultError


class FakeHttpError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class Props:
    name: str
    version: str
    created_on: datetime
    tags: dict[str, str] | None = None


@dataclass
class Secret:
    value: str
    properties: Props


@dataclass
class FakeSecretClient:
    """Key Vault's observable behaviour: case-insensitive names, opaque version ids,
    second-resolution timestamps, soft delete, listing in no particular order."""

    purge_allowed: bool = True
    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    live: dict[str, list[Secret]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    async def set_secret(
        self, name: str, value: str, *, tags: dict[str, str] | None = None
    ) -> Secret:
        self.calls.append("set")
        if name.lower() in self.deleted:
            raise FakeHttpError(409, "Secret is currently in a deleted but recoverable state")
        self.now += timedelta(seconds=random.choice([0, 1]))  # several per second happen
        version_id = f"{random.getrandbits(128):032x}"
        secret = Secret(value, Props(name, version_id, self.now, tags))
        self.live.setdefault(name.lower(), []).append(secret)
        return secret

    async def get_secret(self, name: str, version: str | None = None) -> Secret:
        self.calls.append("get")
        versions = self.live.get(name.lower())
        if not versions:
            raise FakeHttpError(404, "SecretNotFound")
        if version is None:
            return versions[-1]
        for s in versions:
            if s.properties.version == version:
                return s
        raise FakeHttpError(404, "SecretVersionNotFound")

    async def list_properties_of_secret_versions(self, name: str) -> AsyncIterator[Props]:
        self.calls.append("list_versions")
        props = [s.properties for s in self.live.get(name.lower(), [])]
        random.shuffle(props)
        for p in props:
            yield p

    async def list_properties_of_secrets(self) -> AsyncIterator[Props]:
        self.calls.append("list")
        for versions in self.live.values():
            yield versions[-1].properties

    async def delete_secret(self, name: str) -> None:
        self.calls.append("delete")
        if name.lower() not in self.live:
            raise FakeHttpError(404, "SecretNotFound")
        del self.live[name.lower()]
        self.deleted.add(name.lower())

    async def purge_deleted_secret(self, name: str) -> None:
        self.calls.append("purge")
        if not self.purge_allowed:
            raise FakeHttpError(403, "purge protection")
        self.deleted.discard(name.lower())


@pytest.fixture
def client() -> FakeSecretClient:
    return FakeSecretClient()


@pytest.fixture
def vault(client: FakeSecretClient) -> AzureVault:
    return AzureVault(client=client)


async def test_versions_are_numbered_in_creation_order(
    vault: AzureVault, client: FakeSecretClient
) -> None:
    name = "tenant-acme-salesforce-sales-oauth"
    for i in range(1, 9):
        assert await vault.put(name, f"v{i}") == i
    assert await vault.get(name) == "v8"
    for i in range(1, 9):
        assert await vault.get(name, i) == f"v{i}"
    with pytest.raises(SecretNotFoundError, match=f"version 9 of secret '{name}'"):
        await vault.get(name, 9)


async def test_versions_created_elsewhere_count_by_position(
    vault: AzureVault, client: FakeSecretClient
) -> None:
    """An operator set the first two versions in the portal (no tag, one per second)."""
    name = "system-salesforce-oauth"
    for value in ("portal-1", "portal-2"):
        client.now += timedelta(seconds=1)
        await client.set_secret(name, value)
    assert await vault.get(name, 1) == "portal-1"
    assert await vault.put(name, "ours-3") == 3
    assert await vault.get(name, 2) == "portal-2"
    assert await vault.get(name, 3) == "ours-3"
    assert await vault.get(name) == "ours-3"


def test_numbering_uses_tags_then_position_among_untagged_versions() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    props = [
        Props("n", "b", t, {"castiel-version": "3"}),
        Props("n", "a", t, None),  # same second as "b": order between them is unknowable
        Props("n", "z", t - timedelta(seconds=1), None),
        Props("n", "c", t + timedelta(seconds=1), {"castiel-version": "4"}),
        Props("n", "d", t + timedelta(seconds=2), {"castiel-version": "4"}),  # raced "c"
        Props("n", "e", t + timedelta(seconds=3), None),  # number 3 is taken by a tag
    ]
    assert number_versions(props) == {1: "z", 2: "a", 3: "b", 4: "d"}
    assert number_versions(reversed(props)) == number_versions(props)


async def test_not_found_maps_to_the_vault_error(vault: AzureVault) -> None:
    with pytest.raises(SecretNotFoundError, match="secret 'system-gong-apikey' does not exist"):
        await vault.get("system-gong-apikey")
    with pytest.raises(SecretNotFoundError, match="version 1 of secret"):
        await vault.get("system-gong-apikey", 1)


async def test_delete_purges_and_is_idempotent(vault: AzureVault, client: FakeSecretClient) -> None:
    await vault.put("a", "1")
    await vault.put("a", "2")
    await vault.delete("a")
    assert client.calls[-2:] == ["delete", "purge"]
    with pytest.raises(SecretNotFoundError):
        await vault.get("a")
    await vault.delete("a")  # absent: no error
    assert await vault.put("a", "again") == 1


async def test_a_soft_deleted_name_gives_a_clear_error(client: FakeSecretClient) -> None:
    client.purge_allowed = False
    vault = AzureVault(client=client)
    await vault.put("a", "1")
    await vault.delete("a")  # purge refused: logged, not raised
    with pytest.raises(VaultError, match="'a' is deleted but not purged"):
        await vault.put("a", "2")


async def test_list_filters_by_prefix(vault: AzureVault) -> None:
    for name in ["tenant-abc-gmail-x-oauth", "tenant-abc1-gmail-x-oauth", "system-zoom-oauth"]:
        await vault.put(name, "v")
    assert await vault.list("tenant-abc-") == ["tenant-abc-gmail-x-oauth"]
    assert await vault.list() == [
        "system-zoom-oauth",
        "tenant-abc-gmail-x-oauth",
        "tenant-abc1-gmail-x-oauth",
    ]


@pytest.mark.parametrize("bad", ["", "Upper-Case", "under_score", "a" * 128, "a.b"])
async def test_names_key_vault_would_refuse_or_fold_never_reach_it(
    vault: AzureVault, client: FakeSecretClient, bad: str
) -> None:
    for call in (vault.get(bad), vault.put(bad, "v"), vault.delete(bad)):
        with pytest.raises(InvalidSecretNameError):
            await call
    assert client.calls == []


def test_open_vault_picks_azure(tmp_path: Path) -> None:
    with pytest.raises(VaultError, match="CASTIEL_AZURE_VAULT_URL"):
        open_vault(Settings(vault="azure", data_dir=tmp_path), engine=None)  # type: ignore[arg-type]
    settings = Settings(
        vault="azure", azure_vault_url="https://kv-castiel-test.vault.azure.net", data_dir=tmp_path
    )
    try:
        import azure.keyvault.secrets  # noqa: F401
    except ImportError:
        with pytest.raises(VaultError, match=r"pip install 'castiel-sync\[azure\]'"):
            open_vault(settings, engine=None)  # type: ignore[arg-type]
    else:
        assert isinstance(open_vault(settings, engine=None), AzureVault)  # type: ignore[arg-type]
    assert not (tmp_path / "master.key").exists()
