"""Bearer tokens: who is calling, for which tenant, in which role.

Claims: ``sub`` (user id), ``tenant_id``, ``role`` (``super_admin``, ``tenant_admin``,
``user``), ``iss``, ``aud``, ``exp``. HS256 with ``Settings.jwt_secret`` (default: a key
in ``<data_dir>/jwt.key``, created with mode 0600 on first use), or RS256 against the keys
at ``Settings.jwt_jwks_url``. Exactly one algorithm is accepted, so ``alg: none`` and
algorithm confusion are refused.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import jwt

from castiel_sync.api.problems import Unauthorized
from castiel_sync.domain.tenancy import TenantId, UserId
from castiel_sync.private_files import publish_private_file, read_private_file
from castiel_sync.settings import Settings

JWKS_CACHE_SECONDS = 300
JWKS_MIN_REFRESH_SECONDS = 30
LEEWAY_SECONDS = 30
#: Tenant ids become part of vault secret names, which allow only this (no '-': ambiguous).
TENANT_ID = re.compile(r"[0-9a-z]{1,64}")


class Role(StrEnum):
    SUPER_ADMIN = "super_admin"
    TENANT_ADMIN = "tenant_admin"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller. ``tenant_id`` is the tenant the token belongs to; a
    super admin acts on another tenant only by naming it explicitly."""

    user_id: UserId
    tenant_id: TenantId
    role: Role

    @property
    def is_super_admin(self) -> bool:
        return self.role is Role.SUPER_ADMIN

    @property
    def can_manage(self) -> bool:
        return self.role in (Role.SUPER_ADMIN, Role.TENANT_ADMIN)


def hs256_key(settings: Settings) -> str:
    """The HS256 key: the configured one, else the key file (created 0600 if missing)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = Path(settings.data_dir) / "jwt.key"
    try:
        data, _ = read_private_file(path, f"JWT key file {path}", JwtKeyFileError)
    except FileNotFoundError:
        publish_private_file(path, (secrets.token_urlsafe(48) + "\n").encode())
        data, _ = read_private_file(path, f"JWT key file {path}", JwtKeyFileError)
    return data.decode().strip()


class JwtKeyFileError(RuntimeError):
    """The JWT key file cannot be used (wrong type or permissions)."""


def mint_token(
    settings: Settings,
    *,
    tenant_id: str,
    role: Role | str,
    user_id: str = "admin",
    ttl_seconds: int = 3600,
) -> str:
    """An HS256 token for this service's own key (the ``castiel-sync token`` command)."""
    if settings.jwt_algorithm != "HS256":
        raise ValueError(
            "this service verifies RS256 tokens from an identity provider; "
            "mint tokens there, not with castiel-sync"
        )
    if not TENANT_ID.fullmatch(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} must be 1-64 lower-case letters and digits")
    now = int(time.time())
    claims = {
        "sub": user_id,
        "tenant_id": tenant_id,
        "role": str(Role(role)),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, hs256_key(settings), algorithm="HS256")


class TokenVerifier:
    """Checks a bearer token and returns the :class:`Principal` it names."""

    def __init__(self, settings: Settings, *, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._algorithm = settings.jwt_algorithm
        self._http = http
        self._hs_key: str | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_fetched = 0.0
        self._jwks_lock = asyncio.Lock()
        if self._algorithm == "HS256":
            self._hs_key = hs256_key(settings)
        elif not settings.jwt_jwks_url:
            raise ValueError("jwt_algorithm=RS256 needs jwt_jwks_url")

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a JWT") from None
        if header.get("alg") != self._algorithm:
            raise Unauthorized(f"tokens must be signed with {self._algorithm}")
        key: Any
        if self._algorithm == "HS256":
            key = self._hs_key
        else:
            key = await self._signing_key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self._algorithm],
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the bearer token has expired; get a new one") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"the bearer token is not meant for this service (aud must be "
                f"{self._settings.jwt_audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                f"the bearer token comes from an unknown issuer (iss must be "
                f"{self._settings.jwt_issuer!r})"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the bearer token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token's signature or format is invalid") from None
        return _principal(claims)

    async def _signing_key(self, kid: str | None) -> Any:
        jwks = await self._key_set(force=False)
        found = _find_key(jwks, kid)
        if found is None:
            # Keys rotate: look again, but not more often than every few seconds.
            jwks = await self._key_set(force=True)
            found = _find_key(jwks, kid)
        if found is None:
            raise Unauthorized("the bearer token is signed with a key this service does not know")
        return found.key

    async def _key_set(self, *, force: bool) -> jwt.PyJWKSet:
        async with self._jwks_lock:
            age = time.monotonic() - self._jwks_fetched
            fresh = self._jwks is not None and age < JWKS_CACHE_SECONDS
            if fresh and (not force or age < JWKS_MIN_REFRESH_SECONDS):
                assert self._jwks is not None
                return self._jwks
            url = self._settings.jwt_jwks_url
            assert url is not None
            try:
                if self._http is not None:
                    response = await self._http.get(url)
                else:
                    async with httpx.AsyncClient(timeout=10) as client:
                        response = await client.get(url)
                response.raise_for_status()
                self._jwks = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError):
                if self._jwks is not None:
                    return self._jwks  # keep serving with the keys we have
                raise Unauthorized(
                    "the identity provider's signing keys cannot be fetched right now"
                ) from None
            self._jwks_fetched = time.monotonic()
            return self._jwks


def _find_key(jwks: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    for key in jwks.keys:
        if kid is None or key.key_id == kid:
            return key
    return None


def _principal(claims: dict[str, Any]) -> Principal:
    sub, tenant, role = claims.get("sub"), claims.get("tenant_id"), claims.get("role")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("the bearer token's 'sub' claim must name the user")
    if not isinstance(tenant, str) or not tenant:
        raise Unauthorized("the bearer token lacks the 'tenant_id' claim")
    if not TENANT_ID.fullmatch(tenant):
        raise Unauthorized(
            "the bearer token's 'tenant_id' must be 1-64 lower-case letters and digits"
        )
    try:
        parsed_role = Role(str(role))
    except ValueError:
        raise Unauthorized(
            "the bearer token's 'role' must be one of super_admin, tenant_admin, user"
        ) from None
    return Principal(user_id=UserId(sub), tenant_id=TenantId(tenant), role=parsed_role)
