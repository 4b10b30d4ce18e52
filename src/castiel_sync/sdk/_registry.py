"""Adapter discovery through the ``castiel_sync.adapters`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from castiel_sync.sdk._adapter import IntegrationAdapter

ENTRY_POINT_GROUP = "castiel_sync.adapters"


class AdapterNotFoundError(LookupError):
    pass


def available_adapters() -> dict[str, type[IntegrationAdapter]]:
    """Every installed adapter class, by provider id."""
    found: dict[str, type[IntegrationAdapter]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, IntegrationAdapter)):
            raise TypeError(f"entry point {ep.name!r} is not an IntegrationAdapter subclass")
        found[cls.provider_id] = cls
    return found


def get_adapter(provider_id: str) -> type[IntegrationAdapter]:
    """The adapter class for ``provider_id``; AdapterNotFoundError when none is installed."""
    try:
        return available_adapters()[provider_id]
    except KeyError:
        message = f"no adapter is installed for provider {provider_id!r}"
        raise AdapterNotFoundError(message) from None
