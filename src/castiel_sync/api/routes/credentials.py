"""Connecting an integration: OAuth 2 authorization code with PKCE, API keys, and a
connection test.

Secrets go to the vault only, under the specification's names; the database keeps the
name (``credentialSecretName``) and the connection's metadata. Vault calls run outside
database transactions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Response

from castiel_sync.api.deps import Access, ContextDep, TenantAccessDep, TenantAdminDep
from castiel_sync.api.problems import (
    BadGateway,
    BadRequest,
    ConflictProblem,
    Forbidden,
    UnprocessableProblem,
)
from castiel_sync.api.routes.integrations import IntegrationId, spec_of, user_key
from castiel_sync.api.schemas import (
    ApiKeyIn,
    AuthorizeIn,
    AuthorizeOut,
    CallbackOut,
    ConnectionScope,
    ConnectionTestOut,
    WebhookSecretIn,
)
from castiel_sync.catalog import ProviderSpec, TemplateError
from castiel_sync.domain import secret_names
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import (
    AuditRepository,
    ConnectionRepository,
    IntegrationRepository,
    OAuthStateRepository,
)
from castiel_sync.store.tables import IntegrationRow
from castiel_sync.vault.base import SecretNotFoundError
from castiel_sync.vault.orphans import VERIFIER_PREFIX

with warnings.catch_warnings():  # Authlib announces a future httpx2 split on import
    import authlib.deprecate  # noqa: F401 - installs an "always" filter; ours goes in front

    warnings.simplefilter("ignore")
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

log = logging.getLogger("castiel_sync.api.credentials")

router = APIRouter(tags=["credentials"])

STATE_TTL = timedelta(minutes=10)
CALLBACK_PATH = "/oauth/callback"


def _verifier_secret(state: str) -> str:
    return VERIFIER_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:48]


def _secret_name(
    access_tenant: str, row: IntegrationRow, scope: ConnectionScope, user: str, kind: str
) -> str:
    if scope == "user":
        return secret_names.user_secret(
            access_tenant,
            user,
            row.provider_id,
            row.instance_id,
            kind,  # type: ignore[arg-type]
        )
    return secret_names.tenant_secret(
        access_tenant,
        row.provider_id,
        row.instance_id,
        kind,  # type: ignore[arg-type]
    )


def _check_scope(access: Access, scope: ConnectionScope) -> str:
    """The user key for a user-scoped connection ('' for tenant scope)."""
    if scope == "tenant":
        if not access.principal.can_manage:
            raise Forbidden(
                "only a tenant admin connects an integration for the whole tenant; "
                "connect your own account with scope 'user'"
            )
        return ""
    return user_key(access.principal.user_id)


async def _oauth_client(access_ctx: Any, spec: ProviderSpec) -> dict[str, str]:
    name = secret_names.system_secret(spec.id, "oauth")
    try:
        raw = await access_ctx.vault.get(name)
        value = json.loads(raw)
        return {"client_id": str(value["client_id"]), "client_secret": str(value["client_secret"])}
    except SecretNotFoundError:
        raise ConflictProblem(
            f"no OAuth client is configured for {spec.id}: a super admin sets it with "
            f"PUT /providers/{spec.id}/oauth-client"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise ConflictProblem(
            f"the OAuth client stored for {spec.id} is malformed: a super admin sets it again "
            f"with PUT /providers/{spec.id}/oauth-client"
        ) from None


@dataclass(frozen=True)
class _Endpoints:
    authorization_url: str
    token_url: str
    scopes: list[str]


def _resolve(spec: ProviderSpec, values: dict[str, str]) -> _Endpoints:
    """The OAuth endpoints and scopes with the connection's template values filled in."""
    assert spec.oauth is not None
    try:
        return _Endpoints(
            authorization_url=spec.render(spec.oauth.authorization_url, values),
            token_url=spec.render(spec.oauth.token_url, values),
            scopes=[spec.render(scope, values) for scope in spec.oauth.scopes],
        )
    except TemplateError as exc:
        raise UnprocessableProblem(
            f"body.templateValues: {exc}",
            errors=[{"field": "body.templateValues", "message": str(exc), "code": "template"}],
        ) from None


@router.post(
    "/integrations/{integration_id}/oauth/authorize",
    summary="Start the OAuth flow: returns the provider URL to send the user to",
    description="Authorization code with PKCE (S256) and a single-use `state` valid for 10 "
    "minutes. The provider redirects to `/oauth/callback`.",
)
async def authorize(
    access: TenantAccessDep, integration_id: IntegrationId, body: AuthorizeIn | None = None
) -> AuthorizeOut:
    body = body or AuthorizeIn()
    user = _check_scope(access, body.scope)
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
    spec = spec_of(access, row)
    if spec.auth_type != "oauth2" or spec.oauth is None:
        raise ConflictProblem(
            f"{spec.name} does not use OAuth; send its key with PUT "
            f"/integrations/{integration_id}/credentials/api-key"
        )
    endpoints = _resolve(spec, body.template_values)
    client_info = await _oauth_client(access.ctx, spec)
    redirect_uri = access.ctx.settings.public_url.rstrip("/") + CALLBACK_PATH
    state = generate_token(43)
    verifier = generate_token(64)
    client = AsyncOAuth2Client(
        client_id=client_info["client_id"],
        scope=spec.oauth.scope_separator.join(endpoints.scopes) or None,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, _ = client.create_authorization_url(
        endpoints.authorization_url,
        state=state,
        code_verifier=verifier,
        **spec.oauth.authorize_params,
    )
    await client.aclose()
    verifier_name = _verifier_secret(state)
    pending = {
        "code_verifier": verifier,
        "template_values": body.template_values,
        "actor_user_id": access.principal.user_id,
        "actor_role": str(access.principal.role),
    }
    expires_at = datetime.now(UTC) + STATE_TTL
    # The row first, then the verifier it names: the vault sweep deletes verifiers no row
    # names, so a crash between leaves a row the expiry purge removes, never a lost secret.
    async with access.transaction() as repos:
        await repos.oauth_states.create(
            integration_id=integration_id,
            redirect_uri=redirect_uri,
            verifier_secret_name=verifier_name,
            expires_at=expires_at,
            scope=body.scope,
            user_id=user,
            state=state,
        )
    await access.ctx.vault.put(verifier_name, json.dumps(pending))
    return AuthorizeOut(authorization_url=url, state=state, expires_at=expires_at)


def _expiry(token: dict[str, Any]) -> datetime | None:
    expires_at = token.get("expires_at")
    if isinstance(expires_at, int | float):
        return datetime.fromtimestamp(expires_at, UTC)
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float):
        return datetime.now(UTC) + timedelta(seconds=expires_in)
    return None


@router.get(
    CALLBACK_PATH,
    summary="Where the provider sends the user back (exchanges the code)",
    description="Needs no bearer token: the single-use `state` identifies the pending "
    "authorization. Tokens go to the vault; the response carries only their name.",
)
async def oauth_callback(
    ctx: ContextDep,
    state: Annotated[str, Query(min_length=1, max_length=200)],
    code: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> CallbackOut:
    store = ctx.store
    vault = ctx.vault
    states = SystemScope("oauth callback: the state names the tenant")
    unknown = BadRequest(
        "this authorization is unknown, expired or already used; start again with "
        "POST /integrations/{id}/oauth/authorize"
    )
    # 1. Read the verifier while the state still names it (the vault sweep deletes
    #    verifiers no state names), then take the state in its own transaction: it is
    #    gone whatever happens next, and so is the verifier.
    try:
        async with store.transaction() as session:
            pending = await OAuthStateRepository(session, states).pending(state)
    except NotFoundError:
        raise unknown from None
    try:
        stash: dict[str, Any] | None = json.loads(await vault.get(pending.verifier_secret_name))
    except (SecretNotFoundError, ValueError):
        stash = None
    try:
        async with store.transaction() as session:
            pending = await OAuthStateRepository(session, states).consume(state)
    except NotFoundError:
        raise unknown from None
    finally:
        await vault.delete(pending.verifier_secret_name)
    if stash is None:
        raise BadRequest("this authorization can no longer be completed; start again")
    if error is not None or code is None:
        reason = "".join(ch for ch in (error or "no code") if ch.isalnum() or ch in "_ -")[:60]
        raise BadRequest(f"the provider did not authorize the connection ({reason}); start again")

    tenant = TenantScope(TenantId(pending.tenant_id))
    async with store.transaction() as session:
        row = await IntegrationRepository(session, tenant).get(pending.integration_id)
    spec: ProviderSpec = ctx.catalog.get(row.provider_id)
    assert spec.oauth is not None
    endpoints = _resolve(spec, stash.get("template_values") or {})
    client_info = await _oauth_client(ctx, spec)

    # 2. Exchange the code (PKCE verifier, client authentication as the catalog says).
    client = AsyncOAuth2Client(
        client_id=client_info["client_id"],
        client_secret=client_info["client_secret"],
        token_endpoint_auth_method=spec.oauth.client_auth,
        redirect_uri=pending.redirect_uri,
        code_challenge_method="S256",
        transport=ctx.oauth_transport,
        timeout=30,
    )
    try:
        token = dict(
            await client.fetch_token(
                endpoints.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=stash["code_verifier"],
                redirect_uri=pending.redirect_uri,
            )
        )
    except OAuthError as exc:
        raise BadRequest(
            f"{spec.name} refused the authorization code ({exc.error}); start again with "
            f"POST /integrations/{row.id}/oauth/authorize"
        ) from None
    except (httpx.HTTPError, ValueError):
        log.warning("token exchange with %s failed", spec.id, exc_info=False)
        raise BadGateway(
            f"{spec.name}'s token endpoint failed or could not be reached; try again"
        ) from None
    finally:
        await client.aclose()
    if not token.get("access_token"):
        raise BadGateway(f"{spec.name} answered without an access token; try again")

    # 3. The tokens go to the vault; the database keeps only the name.
    scope: ConnectionScope = "user" if pending.scope == "user" else "tenant"
    name = _secret_name(pending.tenant_id, row, scope, pending.user_id, "oauth")
    if stash.get("template_values"):
        token["template_values"] = stash["template_values"]
        if "instance_url" not in token:
            try:
                token["instance_url"] = spec.render(spec.api_base_url, stash["template_values"])
            except TemplateError:
                pass  # the API's address comes later (e.g. from the token response)
    expires = _expiry(token)
    await vault.put(name, json.dumps(token))
    async with store.transaction() as session:
        await ConnectionRepository(session, tenant).upsert(
            row.id,
            scope=scope,
            user_id=pending.user_id,
            credential_secret_name=name,
            token_expires_at=expires,
        )
        if scope == "tenant" and row.credential_secret_name != name:
            await IntegrationRepository(session, tenant).update(row.id, credential_secret_name=name)
        await AuditRepository(session, tenant).record(
            actor_user_id=stash.get("actor_user_id"),
            actor_role=stash.get("actor_role"),
            action="integration.credential.connect",
            object_type="integration",
            object_id=row.id,
            before={"credentialSecretName": row.credential_secret_name},
            after={"credentialSecretName": name, "scope": scope, "kind": "oauth"},
        )
    return CallbackOut(
        integration_id=row.id,
        scope=scope,
        status="connected",
        credential_secret_name=name,
        token_expires_at=expires,
    )


@router.put(
    "/integrations/{integration_id}/credentials/api-key",
    status_code=204,
    summary="Store an API key for a key-based provider",
    description="The key goes to the vault (`...-apikey`) and is never returned.",
)
async def put_api_key(
    access: TenantAccessDep, integration_id: IntegrationId, body: ApiKeyIn
) -> Response:
    user = _check_scope(access, body.scope)
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
    spec = spec_of(access, row)
    if spec.auth_type not in ("api_key", "basic"):
        raise ConflictProblem(
            f"{spec.name} connects with OAuth, not a key: POST "
            f"/integrations/{integration_id}/oauth/authorize"
        )
    name = _secret_name(access.tenant_id, row, body.scope, user, "apikey")
    value: dict[str, Any] = {"api_key": body.api_key.get_secret_value()}
    if body.instance_url:
        value["instance_url"] = body.instance_url
    await access.ctx.vault.put(name, json.dumps(value))
    async with access.transaction() as repos:
        await repos.connections.upsert(
            integration_id, scope=body.scope, user_id=user, credential_secret_name=name
        )
        if body.scope == "tenant" and row.credential_secret_name != name:
            await repos.integrations.update(integration_id, credential_secret_name=name)
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.credential.connect",
            object_type="integration",
            object_id=integration_id,
            before={"credentialSecretName": row.credential_secret_name},
            after={"credentialSecretName": name, "scope": body.scope, "kind": "apikey"},
        )
    return Response(status_code=204)


@router.put(
    "/integrations/{integration_id}/webhook-secret",
    status_code=204,
    summary="Store the secret the provider's webhooks to this integration are verified with",
    description="The secret goes to the vault (`...-webhook`) and is never returned; the "
    "webhook receiver (`/webhooks/{providerId}/{integrationId}`) answers 404 until it is set.",
)
async def put_webhook_secret(
    access: TenantAdminDep, integration_id: IntegrationId, body: WebhookSecretIn
) -> Response:
    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
    name = secret_names.tenant_secret(access.tenant_id, row.provider_id, row.instance_id, "webhook")
    await access.ctx.vault.put(name, body.secret.get_secret_value())
    async with access.transaction() as repos:
        if row.webhook_secret_name != name:
            await repos.integrations.update(integration_id, webhook_secret_name=name)
        await repos.audit.record(
            **access.audit_actor(),
            action="integration.webhook_secret.set",
            object_type="integration",
            object_id=integration_id,
            before={"webhookSecretName": row.webhook_secret_name},
            after={"webhookSecretName": name},
        )
    return Response(status_code=204)


@router.post(
    "/integrations/{integration_id}/test-connection",
    summary="Check the stored credential against the provider",
    description="Uses the integration's credential, or else the caller's own connection.",
)
async def test_connection(
    access: TenantAccessDep, integration_id: IntegrationId
) -> ConnectionTestOut:
    from castiel_sync.sdk import AdapterError, AdapterNotFoundError, Credentials

    async with access.transaction() as repos:
        row = await repos.integrations.get(integration_id)
        name = row.credential_secret_name
        if name is None:
            mine = user_key(access.principal.user_id)
            for connection in await repos.connections.list(integration_id):
                if connection.scope == "user" and connection.user_id == mine:
                    name = connection.credential_secret_name
    get_adapter = access.ctx.get_adapter
    assert get_adapter is not None
    try:
        adapter_cls = get_adapter(row.provider_id)
    except AdapterNotFoundError:
        raise ConflictProblem(
            f"no adapter is installed for {row.provider_id} yet; install one that registers "
            "in the 'castiel_sync.adapters' entry-point group"
        ) from None
    if name is None:
        raise ConflictProblem(
            "the integration has no credential yet: connect it with OAuth or an API key first"
        )
    try:
        stored = json.loads(await access.ctx.vault.get(name))
    except (SecretNotFoundError, ValueError):
        raise ConflictProblem(
            "the integration's credential is missing from the vault; connect it again"
        ) from None
    if isinstance(stored.get("expires_at"), int | float):
        stored["expires_at"] = datetime.fromtimestamp(stored["expires_at"], UTC)
    credentials = Credentials.model_validate(stored)
    adapter = adapter_cls()
    try:
        await adapter.connect(credentials)
        result = await adapter.test_connection()
    except AdapterError as exc:
        return ConnectionTestOut(ok=False, message=exc.user_message)
    except Exception:  # an adapter bug must not become a 500 with its internals
        log.warning("adapter %s failed its connection test", row.provider_id, exc_info=True)
        return ConnectionTestOut(ok=False, message="the adapter failed unexpectedly")
    finally:
        try:
            await adapter.disconnect()
        except Exception:  # noqa: S110 - best effort, the result is already known
            pass
    return ConnectionTestOut(ok=result.ok, message=result.message, details=result.details)
