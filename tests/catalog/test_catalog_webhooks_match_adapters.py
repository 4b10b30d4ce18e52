"""The catalog tells the truth about webhooks: an installed adapter that parses webhooks
(overrides ``parse_webhook``) has ``webhooks.supported: true`` in its catalog entry, and an
entry that says so has an adapter that does."""

from __future__ import annotations

import pytest

from castiel_sync.catalog import load_catalog
from castiel_sync.sdk import IntegrationAdapter, available_adapters

ADAPTERS = available_adapters()
CATALOG = load_catalog()


def _parses_webhooks(adapter: type[IntegrationAdapter]) -> bool:
    return adapter.parse_webhook is not IntegrationAdapter.parse_webhook


def test_the_shipped_adapters_are_installed() -> None:
    assert {"salesforce", "dynamics365", "hubspot"} <= set(ADAPTERS)


@pytest.mark.parametrize("provider_id", sorted(ADAPTERS))
def test_catalog_webhook_support_matches_the_adapter(provider_id: str) -> None:
    if provider_id not in CATALOG.ids():
        pytest.skip(f"{provider_id} is not in the packaged catalog (a third-party adapter)")
    spec = CATALOG.get(provider_id)
    assert spec.webhooks.supported == _parses_webhooks(ADAPTERS[provider_id]), provider_id


@pytest.mark.parametrize(
    ("provider_id", "signature"),
    [
        ("salesforce", "salesforce_outbound_message"),
        ("dynamics365", "dataverse_webhook_key"),
        ("hubspot", "hubspot_v3"),
    ],
)
def test_the_shipped_crms_name_their_adapters_verification(
    provider_id: str, signature: str
) -> None:
    webhooks = CATALOG.get(provider_id).webhooks
    assert webhooks.supported and webhooks.signature == signature
    assert webhooks.handshake == "none"  # none of the three has a subscription handshake
