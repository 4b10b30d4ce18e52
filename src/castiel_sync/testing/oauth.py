"""An emulated OAuth 2.0 authorization server (RFC 6749, PKCE RFC 7636).

- ``GET /authorize``: checks ``client_id`` and ``redirect_uri`` (errors there are shown,
  never redirected, RFC 6749 §4.1.2.1), ``response_type=code``, ``state`` and a PKCE S256
  ``code_challenge``; approves at once and redirects with ``code`` and ``state``.
- ``POST /token``: ``authorization_code`` (single-use code, same ``redirect_uri``,
  ``code_verifier`` checked) and ``refresh_token`` grants; client authentication by
  ``client_secret_post`` or ``client_secret_basic`` (each client says which it may use);
  errors as RFC 6749 §5.2 JSON (``invalid_request``, ``invalid_client``, ``invalid_grant``,
  ``unauthorized_client``, ``unsupported_grant_type``).
- ``rotate_refresh_tokens``: every refresh returns a new refresh token and invalidates the
  one used; reusing an old one is ``invalid_grant``.
- ``extra_token_fields``: extra members of every token response, a mapping or a function
  of the grant (Salesforce's ``instance_url``, ``id``, ``issued_at``, ``signature``).
- ``token_calls`` records every call to ``/token`` for assertions.
- ``expires_in_field=False`` leaves ``expires_in`` out of token responses (Salesforce
  sends none); ``invalid_refresh_description`` is the ``error_description`` of a dead
  refresh token (Salesforce: ``expired access/refresh token``).

Mount it next to a provider emulator (``ProviderEmulator(oauth=server)``) so the API
accepts exactly the access tokens this server issued and still considers valid.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from castiel_sync.testing._kit import FakeClock

CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name
CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    auth_methods: frozenset[str] = frozenset({CLIENT_SECRET_POST, CLIENT_SECRET_BASIC})


@dataclass
class TokenCall:
    grant_type: str | None
    client_id: str | None
    auth_method: str | None
    status: int
    error: str | None = None


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str | None
    scope: str
    expires_at: datetime
    used: bool = False


@dataclass
class _Refresh:
    client_id: str
    scope: str
    active: bool = True


@dataclass
class _Access:
    client_id: str | None
    expires_at: datetime | None
    scope: str = ""
    revoked: bool = False


@dataclass
class _Error(Exception):
    code: str
    description: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OAuthEmulator:
    """See the module docstring. An ASGI app; ``transport()`` serves it to httpx."""

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        base_url: str = "https://login.emulator.test",
        authorize_path: str = "/authorize",
        token_path: str = "/token",  # noqa: S107 - a URL path
        access_token_lifetime: float = 3600.0,
        rotate_refresh_tokens: bool = False,
        reissue_refresh_token: bool = False,
        require_pkce: bool = True,
        extra_token_fields: Mapping[str, Any]
        | Callable[[str, OAuthClient], Mapping[str, Any]]
        | None = None,
        code_lifetime: float = 600.0,
        expires_in_field: bool = True,
        invalid_refresh_description: str = "the refresh token is invalid, expired or revoked",
    ) -> None:
        self.clock = clock or FakeClock()
        self.base_url = base_url.rstrip("/")
        self.authorize_path = authorize_path
        self.token_path = token_path
        self.access_token_lifetime = access_token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        # Without rotation: False omits refresh_token from refresh responses (Salesforce),
        # True returns the same one again (HubSpot).
        self.reissue_refresh_token = reissue_refresh_token
        self.require_pkce = require_pkce
        self.extra_token_fields = extra_token_fields
        self.code_lifetime = code_lifetime
        self.expires_in_field = expires_in_field
        self.invalid_refresh_description = invalid_refresh_description
        self.clients: dict[str, OAuthClient] = {}
        self.token_calls: list[TokenCall] = []
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self.app = Starlette(
            routes=[
                Route(authorize_path, self._authorize, methods=["GET"]),
                Route(token_path, self._token, methods=["POST"]),
            ]
        )

    # -- setup and inspection --------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        auth_methods: set[str] | frozenset[str] | None = None,
    ) -> OAuthClient:
        client = OAuthClient(
            client_id,
            client_secret,
            list(redirect_uris),
            frozenset(auth_methods or {CLIENT_SECRET_POST, CLIENT_SECRET_BASIC}),
        )
        self.clients[client_id] = client
        return client

    @property
    def authorize_url(self) -> str:
        return self.base_url + self.authorize_path

    @property
    def token_url(self) -> str:
        return self.base_url + self.token_path

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self)

    def token_call_count(self, grant_type: str | None = None) -> int:
        return sum(1 for c in self.token_calls if grant_type in (None, c.grant_type))

    def mint_access_token(
        self, *, lifetime: float | None = None, client_id: str | None = None, scope: str = ""
    ) -> str:
        """An access token issued without the HTTP dance (for seeding tests)."""
        token = "at_" + secrets.token_urlsafe(24)
        life = self.access_token_lifetime if lifetime is None else lifetime
        expires = self.clock.now() + timedelta(seconds=life) if life else None
        self._access[token] = _Access(client_id, expires, scope)
        return token

    def mint_refresh_token(self, client_id: str, scope: str = "") -> str:
        token = "rt_" + secrets.token_urlsafe(24)
        self._refresh[token] = _Refresh(client_id, scope)
        return token

    def access_token_is_valid(self, token: str) -> bool:
        info = self._access.get(token)
        if info is None or info.revoked:
            return False
        return info.expires_at is None or info.expires_at > self.clock.now()

    def refresh_token_is_valid(self, token: str) -> bool:
        info = self._refresh.get(token)
        return info is not None and info.active

    def expire_access_tokens(self) -> None:
        for info in self._access.values():
            info.revoked = True

    def revoke_refresh_token(self, token: str) -> None:
        if token in self._refresh:
            self._refresh[token].active = False

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return _page(400, "invalid_client", "unknown client_id")
        redirect_uri = q.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri not in client.redirect_uris:
            return _page(400, "invalid_request", "redirect_uri is not registered")
        state = q.get("state")

        def fail(code: str, description: str) -> Response:
            params = {"error": code, "error_description": description}
            if state is not None:
                params["state"] = state
            return RedirectResponse(_with_query(redirect_uri, params), status_code=302)

        if q.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        if not state:
            return fail("invalid_request", "state is required")
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method", "plain")
        if challenge is None and self.require_pkce:
            return fail("invalid_request", "code_challenge is required")
        if challenge is not None and method != "S256":
            return fail("invalid_request", "code_challenge_method must be S256")
        code = "code_" + secrets.token_urlsafe(18)
        self._codes[code] = _Code(
            client.client_id,
            redirect_uri,
            challenge,
            q.get("scope", ""),
            self.clock.now() + timedelta(seconds=self.code_lifetime),
        )
        return RedirectResponse(
            _with_query(redirect_uri, {"code": code, "state": state}), status_code=302
        )

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        grant_type = params.get("grant_type")
        call = TokenCall(grant_type, None, None, 200)
        self.token_calls.append(call)
        try:
            client, call.auth_method = self._client_auth(request, params)
            call.client_id = client.client_id
            if grant_type == "authorization_code":
                body = self._grant_code(client, params)
            elif grant_type == "refresh_token":
                body = self._grant_refresh(client, params)
            elif not grant_type:
                raise _Error("invalid_request", "grant_type is required")
            else:
                raise _Error("unsupported_grant_type", f"{grant_type} is not supported")
        except _Error as err:
            call.status, call.error = err.status, err.code
            return JSONResponse(
                {"error": err.code, "error_description": err.description},
                status_code=err.status,
                headers={"Cache-Control": "no-store", "Pragma": "no-cache", **err.headers},
            )
        extra = self.extra_token_fields
        if callable(extra):
            extra = extra(grant_type or "", client)
        return JSONResponse(
            {**body, **(extra or {})},
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _client_auth(self, request: Request, params: dict[str, str]) -> tuple[OAuthClient, str]:
        header = request.headers.get("authorization", "")
        in_body = "client_secret" in params
        if header.lower().startswith("basic "):
            if in_body:
                raise _Error("invalid_request", "use one client authentication method")
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
                raw_id, _, raw_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                raise _Error("invalid_client", "malformed Basic credentials", 401) from None
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            method = CLIENT_SECRET_BASIC
        elif in_body:
            client_id, secret = params.get("client_id", ""), params["client_secret"]
            method = CLIENT_SECRET_POST
        else:
            raise _Error("invalid_client", "client authentication is required", 401)
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            headers = (
                {"WWW-Authenticate": 'Basic realm="token"'} if method == CLIENT_SECRET_BASIC else {}
            )
            raise _Error("invalid_client", "client authentication failed", 401, headers)
        if method not in client.auth_methods:
            raise _Error("invalid_client", f"{method} is not allowed for this client", 401)
        if "client_id" in params and params["client_id"] != client.client_id:
            raise _Error("invalid_client", "client_id does not match", 401)
        return client, method

    def _grant_code(self, client: OAuthClient, params: dict[str, str]) -> dict[str, Any]:
        code = self._codes.get(params.get("code", ""))
        if code is None or code.used or code.expires_at <= self.clock.now():
            raise _Error("invalid_grant", "the authorization code is invalid or expired")
        code.used = True
        if code.client_id != client.client_id:
            raise _Error("invalid_grant", "the code was issued to another client")
        if params.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            raise _Error("invalid_grant", "redirect_uri does not match the authorization")
        if code.code_challenge is not None:
            verifier = params.get("code_verifier")
            if not verifier:
                raise _Error("invalid_request", "code_verifier is required")
            if not secrets.compare_digest(s256(verifier), code.code_challenge):
                raise _Error("invalid_grant", "code_verifier does not match the challenge")
        return self._tokens(client, code.scope, new_refresh=True)

    def _grant_refresh(self, client: OAuthClient, params: dict[str, str]) -> dict[str, Any]:
        token = params.get("refresh_token", "")
        info = self._refresh.get(token)
        if info is None or not info.active or info.client_id != client.client_id:
            raise _Error("invalid_grant", self.invalid_refresh_description)
        body = self._tokens(client, info.scope, new_refresh=self.rotate_refresh_tokens)
        if self.rotate_refresh_tokens:
            info.active = False
        elif self.reissue_refresh_token:
            body["refresh_token"] = token
        return body

    def _tokens(self, client: OAuthClient, scope: str, *, new_refresh: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.mint_access_token(client_id=client.client_id, scope=scope),
            "token_type": "Bearer",
        }
        if self.expires_in_field:
            body["expires_in"] = int(self.access_token_lifetime)
        if scope:
            body["scope"] = scope
        if new_refresh:
            body["refresh_token"] = self.mint_refresh_token(client.client_id, scope)
        return body


def _with_query(url: str, params: Mapping[str, str]) -> str:
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _page(status: int, code: str, description: str) -> Response:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)
