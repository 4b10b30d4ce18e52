"""``TokenRefresher``: the spec's hourly timer function, and on-demand refresh for adapters.

One path refreshes a connection's OAuth token, whether the hourly sweep
(:meth:`TokenRefresher.run_once`: connections whose token expires within ``window``) or an
adapter that got a 401 (:meth:`TokenRefresher.refresh`, given to
``HttpAdapter.configure(token_refresher=...)`` through :class:`RefreshingCredentialProvider`).
Each hourly pass also deletes the vault secrets of deleted integrations (a crash after an
integration's delete committed) and the OAuth states and PKCE verifiers of expired
authorizations (:mod:`castiel_sync.vault.orphans`).

**A single refresh in flight per connection**, so a rotating refresh token is spent once
and no caller uses or stores a stale token:

1. in-process, callers of one connection queue on an ``asyncio.Lock``;
2. across processes, the refresher takes the connection row's refresh lease
   (``refresh_lease_until``, taken only at the version it read); a caller that finds the
   lease taken waits for the holder's write (``credential_version`` moves) or for the
   lease to lapse;
3. every caller says which ``credential_version`` its token came from; once it holds the
   lock and the lease, a version that has moved means someone else refreshed: it reads
   the new token from the vault instead of calling the provider;
4. the winner calls the provider's token endpoint (catalog ``token_url`` rendered with the
   connection's template values, client id and secret from the vault secret
   ``system-{provider}-oauth``, client authentication as the catalog says), stores the
   new token in the vault, then records the refresh as a compare-and-swap on
   ``credential_version`` (``record_refresh``), which also clears the lease.

On a refusal by the provider (an OAuth error such as ``invalid_grant``), or no refresh
token to use, one transaction marks the connection ``refresh_failed``, disables the
integration (status ``disabled`` with the reason; a user-scoped connection only alerts),
and publishes ``Castiel.Integration.TokenRefreshFailed`` through the outbox. A token
endpoint that is down (5xx, network) is transient: nothing is marked, the caller gets a
``TransientError`` and the next sweep tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from castiel_sync.bus import publish
from castiel_sync.domain import secret_names
from castiel_sync.domain.events import token_refresh_failed
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.runtime.clock import Clock, system_clock
from castiel_sync.sdk import Credentials, TransientError
from castiel_sync.sdk import TokenRefresher as AdapterTokenRefresher
from castiel_sync.store import Store
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import ConnectionRepository, IntegrationRepository
from castiel_sync.store.tables import IntegrationConnectionRow, IntegrationRow
from castiel_sync.vault.orphans import (
    delete_orphaned_secrets,
    delete_orphaned_verifiers,
    purge_expired_authorizations,
)

log = structlog.get_logger(__name__)


class RefreshFailedError(Exception):
    """The provider refused the refresh (or there is nothing to refresh with): the
    connection is marked and the integration disabled. The message names no secret."""


def parse_credentials(raw: str) -> Credentials:
    """A vault value as :class:`Credentials`: OAuth tokens are JSON (Authlib's token dict:
    ``expires_at`` in epoch seconds), API keys JSON ``{"api_key": ...}`` or the bare key."""
    text = raw.strip()
    if not text.startswith("{"):
        return Credentials(api_key=text)
    data: dict[str, Any] = json.loads(text)
    expires = data.get("expires_at")
    if isinstance(expires, int | float):
        data["expires_at"] = datetime.fromtimestamp(expires, UTC)
    return Credentials.model_validate(data)


@dataclass
class SweepReport:
    refreshed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    transient: list[str] = field(default_factory=list)


class TokenRefresher:
    def __init__(
        self,
        engine: AsyncEngine,
        vault: Any,
        catalog: Any,
        *,
        clock: Clock = system_clock,
        transport: httpx.AsyncBaseTransport | None = None,
        window: timedelta = timedelta(minutes=75),
        interval: float = 3600.0,
        lease_seconds: float = 60.0,
        poll: float = 0.05,
        timeout: float = 30.0,
    ) -> None:
        self.engine = engine
        self.store = Store(engine)
        self.vault = vault
        self.catalog = catalog
        self.clock = clock
        self.transport = transport
        self.window = window
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.poll = poll
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}
        #: Calls that reached a token endpoint (for metrics and tests).
        self.provider_calls = 0

    # -- the hourly sweep -----------------------------------------------------------------

    async def run_once(self) -> SweepReport:
        report = SweepReport()
        before = self.clock() + self.window
        async with self.store.transaction() as session:
            rows = await ConnectionRepository(session, SystemScope("token refresher")).expiring(
                before
            )
            due = [(r.id, r.tenant_id, r.credential_version) for r in rows]
        for connection_id, tenant_id, version in due:
            try:
                await self.refresh(connection_id, tenant_id, seen_version=version)
            except RefreshFailedError:
                report.failed.append(connection_id)
            except TransientError:
                report.transient.append(connection_id)
            except Exception:
                log.exception("token refresh failed", connection_id=connection_id)
                report.transient.append(connection_id)
            else:
                report.refreshed.append(connection_id)
        if due:
            log.info(
                "token refresh sweep",
                refreshed=len(report.refreshed),
                failed=len(report.failed),
                transient=len(report.transient),
            )
        return report

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("token refresh sweep failed; trying again next time")
            try:
                await self.sweep_vault()
            except Exception:
                log.exception("vault sweep failed; trying again next time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def sweep_vault(self) -> None:
        """Delete the secrets nobody will use again (:mod:`castiel_sync.vault.orphans`)."""
        scope = SystemScope("vault sweep")
        orphans = await delete_orphaned_secrets(self.store, self.vault, scope)
        authorizations = await purge_expired_authorizations(
            self.store, self.vault, scope, self.clock()
        )
        verifiers = await delete_orphaned_verifiers(self.store, self.vault)
        if orphans or authorizations or verifiers:
            log.info(
                "vault sweep",
                orphaned_secrets=len(orphans),
                expired_authorizations=authorizations,
                orphaned_verifiers=len(verifiers),
            )

    # -- single flight --------------------------------------------------------------------

    async def refresh(
        self, connection_id: str, tenant_id: str, *, seen_version: int | None = None
    ) -> Credentials:
        """Fresh credentials for the connection. ``seen_version``: the
        ``credential_version`` the caller's token came from (None: whatever is current,
        i.e. force a refresh unless one happens while waiting)."""
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        async with lock:
            while True:
                row = await self._connection(connection_id, tenant_id)
                if seen_version is not None and row.credential_version != seen_version:
                    return await self._read(row)  # someone else refreshed meanwhile
                if row.status == "refresh_failed":
                    raise RefreshFailedError("the connection's last token refresh failed")
                seen_version = row.credential_version
                now = self.clock()
                if await self._lease(row, now):
                    return await self._refresh_leased(row)
                # Another process holds the lease: wait for its write or for the lease
                # to lapse, then look again.
                await self._await_other(connection_id, tenant_id, seen_version)

    async def _await_other(self, connection_id: str, tenant_id: str, version: int) -> None:
        deadline = asyncio.get_running_loop().time() + self.lease_seconds + 1
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(self.poll)
            row = await self._connection(connection_id, tenant_id)
            lapsed = row.refresh_lease_until is None or row.refresh_lease_until <= self.clock()
            if row.credential_version != version or lapsed:
                return

    async def _lease(self, row: IntegrationConnectionRow, now: datetime) -> bool:
        """Take the row's refresh lease, only while it is still at the version we read
        (``ConnectionRepository.try_lease`` with ``expected_version``, one statement): a
        refresher that finished in between cleared the lease *and* moved the version, so
        we must not refresh again with its freshly rotated token."""
        async with self.store.transaction() as session:
            try:
                return await ConnectionRepository(session, _scope(row.tenant_id)).try_lease(
                    row.id,
                    now=now,
                    until=now + timedelta(seconds=self.lease_seconds),
                    expected_version=row.credential_version,
                )
            except NotFoundError:
                return False  # deleted meanwhile: the next read says so

    async def _connection(self, connection_id: str, tenant_id: str) -> IntegrationConnectionRow:
        async with self.store.transaction() as session:
            return await ConnectionRepository(session, _scope(tenant_id)).get(
                connection_id, fresh=True
            )

    async def _read(self, row: IntegrationConnectionRow) -> Credentials:
        return parse_credentials(await self.vault.get(row.credential_secret_name))

    # -- the refresh itself -----------------------------------------------------------------

    async def _refresh_leased(self, row: IntegrationConnectionRow) -> Credentials:
        async with self.store.transaction() as session:
            integration = await IntegrationRepository(session, _scope(row.tenant_id)).get(
                row.integration_id
            )
        try:
            token = json.loads(await self.vault.get(row.credential_secret_name))
            refresh_token = token.get("refresh_token") if isinstance(token, dict) else None
            if not refresh_token:
                raise RefreshFailedError("the connection has no refresh token")
            fresh = await self._call_provider(integration, token, str(refresh_token))
        except RefreshFailedError as exc:
            await self._record_failure(row, integration, str(exc))
            raise
        merged = {**token, **fresh}
        if "refresh_token" not in fresh:
            merged["refresh_token"] = refresh_token  # providers that keep it (no rotation)
        expires_at = _expiry(fresh, self.clock())
        if expires_at is not None:
            merged["expires_at"] = int(expires_at.timestamp())
        # The new token first (the old refresh token is spent), then the version CAS.
        await self.vault.put(row.credential_secret_name, json.dumps(merged))
        async with self.store.transaction() as session:
            recorded = await ConnectionRepository(session, _scope(row.tenant_id)).record_refresh(
                row.id,
                expected_credential_version=row.credential_version,
                token_expires_at=expires_at,
                ok=True,
            )
        if not recorded:
            log.warning("connection changed during refresh", connection_id=row.id)
        log.info("token refreshed", connection_id=row.id, provider=integration.provider_id)
        return parse_credentials(json.dumps(merged))

    async def _call_provider(
        self, integration: IntegrationRow, token: dict[str, Any], refresh_token: str
    ) -> dict[str, Any]:
        spec = self.catalog.get(integration.provider_id)
        if spec.oauth is None:
            raise RefreshFailedError(f"{integration.provider_id} does not use OAuth")
        endpoints = spec.resolve_oauth(token.get("template_values") or {})
        try:
            client_doc = json.loads(
                await self.vault.get(secret_names.system_secret(integration.provider_id, "oauth"))
            )
            client_id, client_secret = (
                str(client_doc["client_id"]),
                str(client_doc["client_secret"]),
            )
        except (LookupError, ValueError, TypeError):
            raise RefreshFailedError(
                f"no OAuth client is configured for {integration.provider_id}"
            ) from None
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        auth: httpx.BasicAuth | None = None
        if spec.oauth.client_auth == "client_secret_basic":
            auth = httpx.BasicAuth(quote_plus(client_id), quote_plus(client_secret))
        else:
            data.update(client_id=client_id, client_secret=client_secret)
        self.provider_calls += 1
        try:
            async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout) as http:
                response = await http.post(
                    endpoints.token_url,
                    data=data,
                    auth=auth or httpx.USE_CLIENT_DEFAULT,
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise TransientError(
                f"the {spec.name} token endpoint could not be reached",
                detail=type(exc).__name__,
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"the {spec.name} token endpoint failed ({response.status_code})",
                status_code=response.status_code,
            )
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400 or not isinstance(body, dict):
            code = body.get("error", "error") if isinstance(body, dict) else "error"
            raise RefreshFailedError(
                f"{spec.name} refused the token refresh ({str(code)[:60]}); "
                "reconnect the integration"
            )
        if not body.get("access_token"):
            raise RefreshFailedError(f"{spec.name} answered the refresh without an access token")
        return body

    async def _record_failure(
        self, row: IntegrationConnectionRow, integration: IntegrationRow, reason: str
    ) -> None:
        disable = row.scope != "user"
        async with self.store.transaction() as session:
            scope = _scope(row.tenant_id)
            recorded = await ConnectionRepository(session, scope).record_refresh(
                row.id,
                expected_credential_version=row.credential_version,
                token_expires_at=None,
                ok=False,
                error=reason,
            )
            if not recorded:
                return  # someone wrote a new credential meanwhile: nothing failed for good
            if disable:
                await IntegrationRepository(session, scope).update(
                    integration.id,
                    status="disabled",
                    status_reason=f"OAuth token refresh failed: {reason}",
                )
            publish(
                session,
                token_refresh_failed(
                    tenant_id=row.tenant_id,
                    integration_id=integration.id,
                    connection_id=row.id,
                    reason=reason,
                    integration_disabled=disable,
                ),
            )
        log.warning(
            "token refresh failed; integration disabled" if disable else "token refresh failed",
            connection_id=row.id,
            integration_id=integration.id,
            reason=reason,
        )


def _scope(tenant_id: str) -> TenantScope:
    return TenantScope(TenantId(tenant_id))


def _expiry(token: dict[str, Any], now: datetime) -> datetime | None:
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        return now + timedelta(seconds=float(expires_in))
    expires_at = token.get("expires_at")
    if isinstance(expires_at, int | float) and not isinstance(expires_at, bool):
        return datetime.fromtimestamp(expires_at, UTC)
    return None


class RefreshingCredentialProvider:
    """Credentials for sync jobs and adapters (the engine's ``CredentialProvider``
    protocol): reads the integration's tenant connection from the vault, refreshes first
    when the token expires within ``skew``, and hands adapters an on-demand refresher
    (``token_refresher(integration)``) that goes through the same single flight."""

    def __init__(self, refresher: TokenRefresher, *, skew: timedelta = timedelta(minutes=2)):
        self.refresher = refresher
        self.skew = skew
        self._seen: dict[str, tuple[str, int]] = {}

    async def _tenant_connection(self, integration: IntegrationRow) -> IntegrationConnectionRow:
        async with self.refresher.store.transaction() as session:
            return await ConnectionRepository(session, _scope(integration.tenant_id)).get_for(
                integration.id, "tenant"
            )

    async def credentials(self, integration: IntegrationRow) -> Credentials:
        try:
            row = await self._tenant_connection(integration)
        except NotFoundError:
            if not integration.credential_secret_name:
                raise
            raw = await self.refresher.vault.get(integration.credential_secret_name)
            return parse_credentials(raw)
        self._seen[integration.id] = (row.id, row.credential_version)
        expires = row.token_expires_at
        if expires is not None and expires <= self.refresher.clock() + self.skew:
            credentials = await self.refresher.refresh(
                row.id, row.tenant_id, seen_version=row.credential_version
            )
            fresh = await self._tenant_connection(integration)
            self._seen[integration.id] = (fresh.id, fresh.credential_version)
            return credentials
        return await self.refresher._read(row)

    def token_refresher(self, integration: IntegrationRow) -> AdapterTokenRefresher | None:
        # The version this adapter's token came from belongs to this adapter: jobs of one
        # integration run side by side, and one job's refresh must not make another job,
        # still holding the dead token, look current (it would refresh a second time).
        held = self._seen.get(integration.id)

        async def refresh() -> Credentials:
            nonlocal held
            if held is None:
                row = await self._tenant_connection(integration)
                held = (row.id, row.credential_version)
            credentials = await self.refresher.refresh(
                held[0], integration.tenant_id, seen_version=held[1]
            )
            row = await self._tenant_connection(integration)
            held = (row.id, row.credential_version)
            self._seen[integration.id] = held
            return credentials

        return refresh
