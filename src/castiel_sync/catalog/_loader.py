"""Reading ``providers.yaml`` into validated :class:`ProviderSpec` entries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from castiel_sync.catalog.schema import ProviderSpec

CATALOG_PACKAGE = "castiel_sync.catalog"
CATALOG_FILE = "providers.yaml"


class CatalogError(ValueError):
    """The catalog file is malformed or an entry does not validate.

    The message names the provider (or the entry's position when it has no usable id)
    and the field, e.g. ``provider 'hubspot', field 'oauth.token_url': ...``.
    """


class UnknownProviderError(LookupError):
    """No catalog entry has the requested provider id."""

    def __init__(self, provider_id: str, known: list[str]) -> None:
        super().__init__(
            f"unknown provider {provider_id!r}; the catalog has: {', '.join(sorted(known))}"
        )
        self.provider_id = provider_id


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated within one mapping: PyYAML would silently
    keep the last one, hiding e.g. two ``status:`` lines in one entry."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise CatalogError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


class HasVisibility(Protocol):
    """A catalog entry or a stored ``integration_providers`` row (whose status and
    audience a super admin may have overridden)."""

    @property
    def status(self) -> str: ...

    @property
    def audience(self) -> str: ...


def tenant_visible(provider: HasVisibility) -> bool:
    """Whether tenant admins see (and may configure) this provider: audience ``tenant``
    and status ``active`` or ``beta``."""
    return provider.audience == "tenant" and provider.status in ("active", "beta")


@dataclass(frozen=True)
class Catalog:
    """The validated provider catalog, in file order."""

    _providers: Mapping[str, ProviderSpec] = field(repr=False)

    def get(self, provider_id: str) -> ProviderSpec:
        try:
            return self._providers[provider_id]
        except KeyError:
            raise UnknownProviderError(provider_id, list(self._providers)) from None

    def all(self) -> list[ProviderSpec]:
        return list(self._providers.values())

    def ids(self) -> list[str]:
        return list(self._providers)

    def tenant_visible(self) -> list[ProviderSpec]:
        return [spec for spec in self._providers.values() if tenant_visible(spec)]

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._providers

    def __iter__(self) -> Iterator[ProviderSpec]:
        return iter(self._providers.values())

    def __len__(self) -> int:
        return len(self._providers)


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(entry)"
    return f"field {location!r}: {error['msg']}"


def parse_catalog(text: str, source: str = CATALOG_FILE) -> Catalog:
    """Validate a catalog document: a top-level ``providers`` list of entries."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or set(document) != {"providers"}:
        raise CatalogError(f"{source}: expected a single top-level key 'providers'")
    entries = document["providers"]
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{source}: 'providers' must be a non-empty list")

    providers: dict[str, ProviderSpec] = {}
    for position, entry in enumerate(entries, start=1):
        label = f"entry #{position}"
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            label = f"provider {entry['id']!r}"
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: {label} is not a mapping")
        try:
            spec = ProviderSpec.model_validate(entry)
        except ValidationError as exc:
            details = "; ".join(_describe(error) for error in exc.errors())
            raise CatalogError(f"{source}: {label}, {details}") from exc
        if spec.id in providers:
            raise CatalogError(f"{source}: {label}, field 'id': declared more than once")
        providers[spec.id] = spec
    return Catalog(providers)


def read_packaged_catalog_text() -> str:
    """The shipped ``providers.yaml``, read through importlib.resources (works from a
    wheel or a zip, not only from a source checkout)."""
    return resources.files(CATALOG_PACKAGE).joinpath(CATALOG_FILE).read_text(encoding="utf-8")
