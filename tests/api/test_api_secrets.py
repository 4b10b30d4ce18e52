"""No secret value appears in logs, API responses, error bodies, the audit log, or the
database (the SQLite file's bytes; on PostgreSQL every row)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_support import CLIENT_SECRET, JWT_SECRET, Api, snapshot
from test_api_oauth import provider_redirect

API_KEY = "gong-key-Qw7Lm2Xp9"


class Recorder:
    """Every response the test receives: status, headers and body."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def hook(self, response: httpx.Response) -> None:
        await response.aread()
        self.texts.append(f"{response.status_code} {dict(response.headers)} {response.text}")


async def test_no_secret_leaks(key_api: Api, caplog: pytest.LogCaptureFixture, db_url: str) -> None:
    api = key_api
    caplog.set_level(logging.INFO)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)  # statements + parameters
    recorder = Recorder()
    api.client.event_hooks["response"].append(recorder.hook)
    try:
        await api.set_oauth_client()
        sales = await api.create_integration()
        gong = await api.create_integration(provider="gong", instance="calls")

        # OAuth: keep the verifier and code to look for them too.
        authorize = await api.client.post(
            f"/integrations/{sales['id']}/oauth/authorize", headers=api.admin_a
        )
        url = authorize.json()["authorizationUrl"]
        [pkce_name] = await api.ctx.vault.list("pkce-")
        verifier = json.loads(await api.ctx.vault.get(pkce_name))["code_verifier"]
        params = await provider_redirect(api.oauth, url)
        callback = await api.client.get("/oauth/callback", params=params)
        assert callback.status_code == 200
        token = json.loads(await api.ctx.vault.get(callback.json()["credentialSecretName"]))

        key = await api.client.put(
            f"/integrations/{gong['id']}/credentials/api-key",
            json={"apiKey": API_KEY},
            headers=api.admin_a,
        )
        assert key.status_code == 204

        # Errors that could echo what they were sent. (A message may quote the caller's own
        # input for a non-secret field, e.g. a bad cron expression; values never.)
        for body in (
            {"bogus": API_KEY},
            {"pullFilters": {"Account": [{"field": "Nope", "op": "eq", "value": API_KEY}]}},
        ):
            bad = await api.client.patch(
                f"/integrations/{sales['id']}", json=body, headers=api.admin_a
            )
            assert bad.status_code == 422
        short_key = await api.client.put(
            f"/integrations/{gong['id']}/credentials/api-key",
            json={"apiKey": API_KEY, "scope": "nobody"},
            headers=api.admin_a,
        )
        assert short_key.status_code == 422
        bad_client = await api.client.put(
            "/providers/salesforce/oauth-client",
            json={"clientId": "", "clientSecret": CLIENT_SECRET},
            headers=api.super_admin,
        )
        assert bad_client.status_code == 422
        replay = await api.client.get("/oauth/callback", params=params)
        assert replay.status_code == 400
        as_bearer = await api.client.get(
            "/integrations", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert as_bearer.status_code == 401

        # Reads of everything there is to read.
        for path in (
            "/integrations",
            f"/integrations/{sales['id']}",
            f"/integrations/{sales['id']}/connections",
            f"/integrations/{gong['id']}/connections",
            "/audit-log",
        ):
            assert (await api.client.get(path, headers=api.admin_a)).status_code == 200
        for path in ("/admin/audit-log", "/providers/salesforce"):
            assert (await api.client.get(path, headers=api.super_admin)).status_code == 200
        audit = (await api.client.get("/audit-log", headers=api.admin_a)).text
        assert "integration.credential.connect" in audit
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)

    secrets = {
        "client secret": CLIENT_SECRET,
        "access token": token["access_token"],
        "refresh token": token["refresh_token"],
        "authorization code": params["code"],
        "pkce verifier": verifier,
        "api key": API_KEY,
        "jwt key": JWT_SECRET,
    }
    assert all(len(value) >= 10 for value in secrets.values())

    # The test's own client logs the URLs it requests (the callback's ?code=); the
    # service's records are everything else.
    service_logs = "\n".join(
        record.getMessage()
        + " "
        + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
        if not (record.name == "httpx" and "http://api.test" in record.getMessage())
    )
    assert "INSERT INTO" in service_logs  # the statement log was really captured
    responses = "\n".join(recorder.texts)
    assert len(recorder.texts) > 15

    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        database = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        assert b"salesforce" in database  # really the database's bytes
    else:
        database = repr(await snapshot(api.ctx.engine)).encode()

    for what, value in secrets.items():
        assert value not in service_logs, f"{what} in the logs"
        assert value not in responses, f"{what} in an API response"
        assert value.encode() not in database, f"{what} in the database"
    redirect = parse_qs(urlsplit(url).query)
    assert verifier not in url and redirect["code_challenge"][0] != verifier
