"""Secrets never reach the logs: structlog events and standard-library records (uvicorn's
access log, httpx's request lines) go through the same redacting pipeline."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import BaseModel, ConfigDict, SecretStr

from castiel_sync.logging import REDACTED, configure_logging, redact, redact_text
from castiel_sync.settings import Settings

LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
    structlog.reset_defaults()


class TokenModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    access_token: SecretStr
    instance_url: str


def _emit_everything(secret: str) -> None:
    log = structlog.get_logger("castiel_sync.test")
    log.info(
        "token refreshed",
        access_token=secret,
        accessToken=secret,
        integration_id="int-1",
        status_code=200,
        nested={"deep": [{"refresh_token": secret}, ("tuple", {"Client-Secret": secret})]},
        headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
        config=SecretStr(secret),
        model=TokenModel(access_token=SecretStr(secret), instance_url="https://x", api_key=secret),
        body=f'{{"access_token": "{secret}", "expires_in": 3600}}',
        url=f"https://login.example.com/token?code={secret}&state=abc",
        webhook_secret=secret,
        credential_secret_name="tenant-acme-hubspot-main-oauth",
    )
    try:
        raise RuntimeError(f"refresh failed: refresh_token={secret}")
    except RuntimeError:
        log.exception("refresh failed")
    # Standard-library loggers, as the libraries themselves call them.
    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "%s %d %s"',
        "POST",
        f"https://api.example.com/v1?api_key={secret}&page=2",
        "HTTP/1.1",
        200,
        "OK",
    )
    access = logging.getLogger("uvicorn.access")
    # An in-process uvicorn run earlier in the session may leave this logger disabled or
    # not propagating; `serve` runs with log_config=None, where it propagates.
    access.disabled, access.propagate, access.handlers = False, True, []
    access.setLevel(logging.NOTSET)
    access.info(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:50000",
        "GET",
        f"/oauth/callback?state=xyz&code={secret}",
        "1.1",
        302,
    )
    logging.getLogger("castiel_sync.plain").warning(
        "sending Authorization: Bearer %s with extra", secret, extra={"password": secret}
    )


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_output(fmt: str, restore_logging: None) -> None:
    # A uvicorn-style handler of its own, installed before us, would bypass redaction.
    bypass = io.StringIO()
    logging.getLogger("uvicorn.access").addHandler(logging.StreamHandler(bypass))
    logging.getLogger("uvicorn.access").propagate = False
    out = io.StringIO()
    configure_logging(Settings(log_format=fmt, log_level="debug"), stream=out)
    secret = "s3cr3t-" + secrets.token_hex(12)

    _emit_everything(secret)

    text = out.getvalue()
    assert secret not in text
    assert secret[:12] not in text  # not even a prefix of it
    assert bypass.getvalue() == ""
    # What is not secret is still there: the logs stay useful.
    for visible in (
        "token refreshed",
        "int-1",
        "tenant-acme-hubspot-main-oauth",
        "state=abc",
        "state=xyz",
        "page=2",
        "expires_in",
        "application/json",
        "RuntimeError",
        "/oauth/callback",
        "HTTP Request: POST",
        REDACTED,
    ):
        assert visible in text, visible
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        events = {e["event"].split(":")[0] for e in lines}
        assert {"token refreshed", "refresh failed", "HTTP Request"} <= events
        first = lines[0]
        assert first["access_token"] == REDACTED and first["status_code"] == 200
        assert first["nested"]["deep"][0]["refresh_token"] == REDACTED


def test_log_level_filters_and_bad_levels_are_refused(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(Settings(log_level="WARNING"), stream=out)
    structlog.get_logger("x").info("quiet")
    logging.getLogger("httpx").info("quiet too")
    structlog.get_logger("x").warning("loud")
    assert "quiet" not in out.getvalue() and "loud" in out.getvalue()
    with pytest.raises(ValueError, match="unknown log level 'chatty'"):
        configure_logging(Settings(log_level="chatty"), stream=out)


def test_configuring_twice_does_not_duplicate_lines(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging(Settings(), stream=io.StringIO())
    configure_logging(Settings(), stream=out)
    logging.getLogger("httpx").warning("once")
    assert out.getvalue().count("once") == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("GET /cb?code=abc123&state=s", f"GET /cb?code={REDACTED}&state=s"),
        (
            "grant_type=refresh_token&refresh_token=r1",
            f"grant_type=refresh_token&refresh_token={REDACTED}",
        ),
        ("client_secret=x1&client_id=c", f"client_secret={REDACTED}&client_id=c"),
        ('{"id_token": "a\\"b", "n": 1}', f'{{"id_token": "{REDACTED}", "n": 1}}'),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {REDACTED}"),
        ("retry with bearer eyJhbGciOiJIUzI1NiJ9.e30.x", f"retry with bearer {REDACTED}"),
        ("?key=AIzaSyA&q=news", f"?key={REDACTED}&q=news"),
        ("status code: 401, attempt=2", "status code: 401, attempt=2"),
        ("credential_secret_name=tenant-a-b-c-oauth", "credential_secret_name=tenant-a-b-c-oauth"),
        ("basic auth is not supported", "basic auth is not supported"),
    ],
)
def test_redact_text(raw: str, expected: str) -> None:
    assert redact_text(raw) == expected


def test_redact_copies_and_leaves_the_input_alone() -> None:
    event: dict[str, Any] = {"tokens": {"a": "1"}, "items": [{"password": "p"}], "n": 1}
    out = redact(event)
    assert out == {"tokens": REDACTED, "items": [{"password": REDACTED}], "n": 1}
    assert event == {"tokens": {"a": "1"}, "items": [{"password": "p"}], "n": 1}
