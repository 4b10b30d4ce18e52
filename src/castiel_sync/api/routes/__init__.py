"""One module per resource; :data:`ROUTERS` is what the app mounts."""

from castiel_sync.api.routes import (
    audit,
    conflicts,
    credentials,
    executions,
    health,
    integrations,
    limits,
    providers,
    shards,
    sync,
)

ROUTERS = [
    health.router,
    providers.router,
    integrations.router,
    credentials.router,
    limits.router,
    audit.router,
    shards.router,
    conflicts.router,
    executions.router,
    sync.router,
]

__all__ = ["ROUTERS"]
