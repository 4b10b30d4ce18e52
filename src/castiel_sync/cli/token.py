"""``castiel-sync token``: mint a bearer token for this service's own HS256 key."""

from __future__ import annotations

from typing import Annotated

import typer

from castiel_sync.api.auth import Role, mint_token
from castiel_sync.settings import get_settings


def token(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id the token acts for.")],
    role: Annotated[Role, typer.Option("--role", help="Role claim.")] = Role.TENANT_ADMIN,
    user: Annotated[str, typer.Option("--user", help="User id (the `sub` claim).")] = "admin",
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds.")] = 3600,
) -> None:
    """Print a bearer token (use it as `Authorization: Bearer <token>`)."""
    try:
        value = mint_token(
            get_settings(), tenant_id=tenant, role=role, user_id=user, ttl_seconds=ttl
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(value)
