"""Test kit for adapters: provider emulators, an emulated OAuth server, and the adapter
conformance suite (DESIGN.md §5). Third-party adapter authors use it too.

    from castiel_sync.testing import FakeClock, ProviderEmulator, OAuthEmulator
    from castiel_sync.testing.conformance import AdapterConformance
"""

from castiel_sync.testing._kit import (
    EntityStore,
    FakeClock,
    Faults,
    ProviderEmulator,
    RecordedRequest,
    RecordStore,
    StoredRecord,
    send_webhook,
)
from castiel_sync.testing.oauth import (
    CLIENT_SECRET_BASIC,
    CLIENT_SECRET_POST,
    OAuthClient,
    OAuthEmulator,
    TokenCall,
    s256,
)

__all__ = [
    "CLIENT_SECRET_BASIC",
    "CLIENT_SECRET_POST",
    "EntityStore",
    "FakeClock",
    "Faults",
    "OAuthClient",
    "OAuthEmulator",
    "ProviderEmulator",
    "RecordStore",
    "RecordedRequest",
    "StoredRecord",
    "TokenCall",
    "s256",
    "send_webhook",
]
