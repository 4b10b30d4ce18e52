"""What the routes share: opened once by the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from castiel_sync.api.auth import TokenVerifier
from castiel_sync.settings import Settings


@dataclass
class AppContext:
    """What the routes share, opened by the lifespan."""

    settings: Settings
    engine: Any
    store: Any
    vault: Any
    catalog: Any
    verifier: TokenVerifier
    # Where OAuth token requests go; tests point it at the emulated OAuth server.
    oauth_transport: httpx.AsyncBaseTransport | None = None
    # Adapter lookup (castiel_sync.sdk.get_adapter); replaceable in tests.
    get_adapter: Callable[[str], type[Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
