"""One module per resource; :data:`ROUTERS` is what the app mounts."""

from castiel_sync.api.routes import audit, credentials, health, integrations, limits, providers

ROUTERS = [
    health.router,
    providers.router,
    integrations.router,
    credentials.router,
    limits.router,
    audit.router,
]

__all__ = ["ROUTERS"]
