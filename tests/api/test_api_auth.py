"""Bearer tokens: what is refused (401), and what each role may do (403)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from api_support import JWT_SECRET
from cryptography.hazmat.primitives.asymmetric import rsa

from castiel_sync.api.auth import Role, TokenVerifier, hs256_key, mint_token
from castiel_sync.api.problems import Unauthorized
from castiel_sync.settings import Settings

PROBLEM = "application/problem+json"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "alice",
        "tenant_id": "tenanta",
        "role": "tenant_admin",
        "iss": "castiel-sync",
        "aud": "castiel-sync",
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


BAD_TOKENS = {
    "expired": lambda: jwt.encode(claims(exp=int(time.time()) - 3600), JWT_SECRET, "HS256"),
    "wrong audience": lambda: jwt.encode(claims(aud="someone-else"), JWT_SECRET, "HS256"),
    "wrong issuer": lambda: jwt.encode(claims(iss="evil"), JWT_SECRET, "HS256"),
    "wrong signature": lambda: jwt.encode(claims(), "another-key-" + "x" * 32, "HS256"),
    "alg none": lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims()) + ".",
    "no tenant": lambda: jwt.encode(claims(tenant_id=None), JWT_SECRET, "HS256"),
    "unknown role": lambda: jwt.encode(claims(role="owner"), JWT_SECRET, "HS256"),
    "no exp": lambda: jwt.encode(claims(exp=None), JWT_SECRET, "HS256"),
    "not a jwt": lambda: "definitely-not-a-token",
    "tenant id unusable": lambda: jwt.encode(claims(tenant_id="Tenant-A"), JWT_SECRET, "HS256"),
}


async def test_health_needs_no_token(api: Any) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"] == "ok"


async def test_missing_token_is_401_problem(api: Any) -> None:
    response = await api.client.get("/integrations")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 401 and body["instance"] == "/integrations"
    assert "Bearer" in body["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_bad_tokens_are_401(api: Any, kind: str) -> None:
    token = BAD_TOKENS[kind]()
    response = await api.client.get("/integrations", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert token not in response.text


async def test_user_role_reads_but_cannot_change_settings(api: Any) -> None:
    created = await api.create_integration()
    user = api.auth("tenanta", Role.USER, user="carol")
    path = f"/integrations/{created['id']}"
    assert (await api.client.get(path, headers=user)).status_code == 200
    before = (await api.client.get(path, headers=api.admin_a)).json()
    for method, url, body in [
        ("PATCH", path, {"syncDirection": "bidirectional"}),
        ("PATCH", path, {"syncFrequency": {"kind": "interval", "minutes": 15}}),
        ("POST", f"{path}/pause", None),
        ("POST", f"{path}/activate", None),
        ("DELETE", path, None),
        ("POST", "/integrations", {"providerId": "hubspot", "name": "x", "instanceId": "x"}),
        ("GET", "/audit-log", None),
    ]:
        response = await api.client.request(method, url, json=body, headers=user)
        assert response.status_code == 403, (method, url, response.text)
        assert response.headers["content-type"] == PROBLEM
    assert (await api.client.get(path, headers=api.admin_a)).json() == before


async def test_tenant_admin_cannot_do_super_admin_things(api: Any) -> None:
    for method, url, body in [
        ("PATCH", "/providers/salesforce", {"status": "disabled"}),
        ("PUT", "/providers/salesforce/oauth-client", {"clientId": "a", "clientSecret": "b"}),
        ("PATCH", "/admin/limits", {"maxRecordsPerSync": 10}),
        ("PATCH", "/admin/tenants/tenanta/limits", {"maxConcurrentSyncs": 10}),
        ("GET", "/admin/audit-log", None),
    ]:
        response = await api.client.request(method, url, json=body, headers=api.admin_a)
        assert response.status_code == 403, (method, url, response.text)


async def test_super_admin_names_the_tenant_explicitly(api: Any) -> None:
    created = await api.create_integration()
    response = await api.client.get("/integrations", headers=api.super_admin)
    assert response.status_code == 400
    assert "tenantId" in response.json()["detail"]
    listed = await api.client.get("/integrations?tenantId=tenanta", headers=api.super_admin)
    assert [i["id"] for i in listed.json()] == [created["id"]]
    other = await api.client.get("/integrations?tenantId=tenantb", headers=api.super_admin)
    assert other.json() == []


async def test_tenant_admin_naming_another_tenant_gets_404(api: Any) -> None:
    response = await api.client.get("/integrations?tenantId=tenantb", headers=api.admin_a)
    assert response.status_code == 404


def test_hs256_key_file_is_created_private(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path)
    key = hs256_key(settings)
    path = tmp_path / "jwt.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert hs256_key(settings) == key  # read back, not regenerated
    token = mint_token(settings, tenant_id="t1", role=Role.USER, user_id="u1")
    assert jwt.decode(token, key, algorithms=["HS256"], audience="castiel-sync")["role"] == "user"


async def test_rs256_tokens_against_a_jwks_url() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    fetches = 0

    def jwks(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return httpx.Response(200, json={"keys": [jwk]})

    settings = Settings(jwt_algorithm="RS256", jwt_jwks_url="https://idp.test/jwks")
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks)) as http:
        verifier = TokenVerifier(settings, http=http)
        token = jwt.encode(claims(), private, "RS256", headers={"kid": "k1"})
        principal = await verifier.verify(token)
        assert (principal.tenant_id, principal.role) == ("tenanta", Role.TENANT_ADMIN)
        await verifier.verify(token)
        assert fetches == 1  # cached
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims(), other, "RS256", headers={"kid": "k1"})
        with pytest.raises(Unauthorized):
            await verifier.verify(forged)
        hs = jwt.encode(claims(), "x" * 40, "HS256")
        with pytest.raises(Unauthorized):  # algorithm confusion
            await verifier.verify(hs)
