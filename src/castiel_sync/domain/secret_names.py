"""Vault secret names, exactly as the specification gives them (DESIGN.md §2).

- system scope: ``system-{provider}-oauth``
- tenant scope: ``tenant-{tenantId}-{provider}-{instanceId}-oauth``
- user scope:   ``tenant-{tenantId}-user-{userId}-{provider}-{instanceId}-oauth``

and ``-apikey`` in place of ``-oauth`` for API keys, ``-webhook`` for the secret a
provider signs (or authenticates) an integration's webhook deliveries with.

A name is the only thing that separates one tenant's credentials from another's, so two
different integrations must never get the same name. The rules below make the name a
one-to-one function of its parts, for every backend:

- Azure Key Vault allows ``[0-9a-zA-Z-]``, 1-127 characters, and compares names
  *case-insensitively*; so components are lower case only (``Acme`` and ``acme`` would be
  one secret in Azure), never silently lower-cased.
- Tenant and user ids are single tokens (``[0-9a-z]+``): a ``-`` in a tenant id would let
  tenant ``a-b`` with provider ``c`` and tenant ``a`` with provider ``b_c`` share a name.
- Provider ids are snake_case and become kebab-case (``google_drive`` ->
  ``google-drive``); a provider id cannot start with the segment ``user`` (that word marks
  the user scope).
- Instance ids are kebab-case slugs (``sales-team``). Since both provider and instance may
  hold ``-``, a set of providers must not contain one whose segments start another's
  (``google`` beside ``google_drive``); :func:`check_provider_ids` checks a catalog for it.

Anything else raises :class:`ValueError` naming the component and the rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Literal

SecretKind = Literal["oauth", "apikey", "webhook"]
KINDS: tuple[SecretKind, ...] = ("oauth", "apikey", "webhook")
MAX_NAME_LENGTH = 127

_ID_TOKEN = re.compile(r"[0-9a-z]+")
_PROVIDER = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_SLUG = re.compile(r"[0-9a-z]+(?:-[0-9a-z]+)*")


def _id_token(what: str, value: str) -> str:
    if not _ID_TOKEN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot be used in a secret name: it must be lower-case letters "
            "and digits only (no '-': it would make the name ambiguous; no upper case: "
            "Key Vault names are case-insensitive)"
        )
    return value


def _provider(provider_id: str) -> str:
    if not _PROVIDER.fullmatch(provider_id):
        raise ValueError(
            f"provider id {provider_id!r} cannot be used in a secret name: it must be "
            "snake_case (lower-case letters and digits, single '_' between them)"
        )
    if provider_id.split("_", 1)[0] == "user":
        raise ValueError(
            f"provider id {provider_id!r} cannot be used in a secret name: a first segment "
            "'user' would read as a user-scoped name"
        )
    return provider_id.replace("_", "-")


def _instance(instance_id: str) -> str:
    if not _SLUG.fullmatch(instance_id):
        raise ValueError(
            f"instance id {instance_id!r} cannot be used in a secret name: it must be a "
            "lower-case slug (letters and digits, single '-' between them)"
        )
    return instance_id


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"secret kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def _checked(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"secret name {name!r} is {len(name)} characters; Key Vault allows at most "
            f"{MAX_NAME_LENGTH}: use shorter ids"
        )
    return name


def system_secret(provider_id: str, kind: SecretKind = "oauth") -> str:
    """``system-{provider}-{kind}``: a system connection's credentials."""
    return _checked(f"system-{_provider(provider_id)}-{_kind(kind)}")


def tenant_secret(
    tenant_id: str, provider_id: str, instance_id: str, kind: SecretKind = "oauth"
) -> str:
    """``tenant-{tenantId}-{provider}-{instanceId}-{kind}``: a tenant integration's."""
    return _checked(f"{integration_prefix(tenant_id, provider_id, instance_id)}{_kind(kind)}")


def user_secret(
    tenant_id: str,
    user_id: str,
    provider_id: str,
    instance_id: str,
    kind: SecretKind = "oauth",
) -> str:
    """``tenant-{tenantId}-user-{userId}-{provider}-{instanceId}-{kind}``: one user's."""
    prefix = integration_prefix(tenant_id, provider_id, instance_id, user_id=user_id)
    return _checked(f"{prefix}{_kind(kind)}")


def user_key(user_id: str) -> str:
    """A user id as it may appear in a secret name (``[0-9a-z]+``): itself when it fits,
    else a stable digest of it (IdP subjects like ``auth0|abc`` do not fit)."""
    if re.fullmatch(r"[0-9a-z]{1,40}", user_id):
        return user_id
    return "u" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


#: Starts the secret names of every tenant.
TENANTS_PREFIX = "tenant-"


def tenant_prefix(tenant_id: str) -> str:
    """``tenant-{tenantId}-``: lists every secret of the tenant, user-scoped ones included,
    and no other tenant's (tenant ids hold no ``-``, so ``abc`` never matches ``abc1``)."""
    return f"{TENANTS_PREFIX}{_id_token('tenant id', tenant_id)}-"


def user_prefix(tenant_id: str, user_id: str) -> str:
    """``tenant-{tenantId}-user-{userId}-``: every secret of one user of the tenant."""
    return f"{tenant_prefix(tenant_id)}user-{_id_token('user id', user_id)}-"


def integration_prefix(
    tenant_id: str, provider_id: str, instance_id: str, *, user_id: str | None = None
) -> str:
    """``tenant-{tenantId}-[user-{userId}-]{provider}-{instanceId}-``.

    Instance ids may hold ``-``, so this prefix also starts the names of instance
    ``{instanceId}-more``: :func:`owner_prefix` tells a name's integration exactly.
    """
    scope = tenant_prefix(tenant_id) if user_id is None else user_prefix(tenant_id, user_id)
    return f"{scope}{_provider(provider_id)}-{_instance(instance_id)}-"


_INTEGRATION_SECRET = re.compile(
    rf"(?P<tenant>{re.escape(TENANTS_PREFIX)}[0-9a-z]+-)(?:user-[0-9a-z]+-)?"
    r"(?P<integration>[0-9a-z]+(?:-[0-9a-z]+)*-)"
    rf"(?:{'|'.join(KINDS)})"
)


def owner_prefix(name: str) -> str | None:
    """The tenant-scope :func:`integration_prefix` of the integration that ``name``
    belongs to (a user's secret maps to its integration's), or None when ``name`` is no
    tenant integration's secret (``system-...``, PKCE verifiers). The user marker cannot be
    misread: no provider id starts with the segment ``user``."""
    match = _INTEGRATION_SECRET.fullmatch(name)
    if match is None:
        return None
    return match["tenant"] + match["integration"]


def check_provider_ids(provider_ids: Iterable[str]) -> None:
    """Refuse a set of provider ids that could give two integrations one secret name.

    With ``google`` and ``google_drive`` both present, ``google`` instance ``drive-x`` and
    ``google_drive`` instance ``x`` would share ``tenant-t-google-drive-x-oauth``.
    """
    segments = {pid: tuple(_provider(pid).split("-")) for pid in provider_ids}
    for short, short_segs in segments.items():
        for long, long_segs in segments.items():
            if len(short_segs) < len(long_segs) and long_segs[: len(short_segs)] == short_segs:
                raise ValueError(
                    f"provider ids {short!r} and {long!r} can produce the same secret name "
                    f"(instance ids hold '-'): rename one so neither starts the other"
                )
