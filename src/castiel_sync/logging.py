"""Logging: structlog for our code, the standard library's loggers routed through the same
processors (uvicorn, httpx, sqlalchemy...), and a processor that keeps secrets out.

:func:`redact_secrets` replaces, at any depth of the event (dicts, lists, tuples):

- the value of any key that names a secret (``access_token``, ``refreshToken``,
  ``Authorization``, ``client-secret``, ``code``, ``password``, any ``*_token`` or
  ``*_secret``...), whatever the value;
- pydantic ``SecretStr`` / ``SecretBytes`` values, under any key (pydantic models are
  logged as their redacted ``model_dump()``);
- inside strings (the messages of standard-library records, URLs, rendered tracebacks):
  ``key=value`` pairs with such a key (query strings: ``?code=...&state=``), quoted JSON
  members (``"access_token": "..."``) and ``Bearer`` credentials.

Redaction works on what it can recognise; code still must not put a bare secret in an
event message.

uvicorn installs its own handlers when it starts unless it is given ``log_config=None``;
start it that way after :func:`configure_logging` so its access log (which holds the
OAuth callback's ``?code=``) goes through the redaction too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from pydantic import BaseModel, SecretBytes, SecretStr

from castiel_sync.settings import Settings

REDACTED = "[REDACTED]"

# Compared after lower-casing and dropping '-' and '_': accessToken == access-token.
_SECRET_KEYS = frozenset(
    {
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "token",
        "tokens",
        "clientsecret",
        "secret",
        "apikey",
        "xapikey",
        "key",
        "password",
        "passwd",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
        "code",
        "codeverifier",
        "clientassertion",
        "assertion",
        "privatekey",
        "masterkey",
        "signature",
        "sig",
        "credentials",
    }
)
_SECRET_SUFFIXES = ("token", "tokens", "secret", "password", "apikey", "privatekey")

_KEY_ALTERNATION = (
    r"access_token|refresh_token|id_token|client_secret|client_assertion|code_verifier|"
    r"api[_-]?key|apikey|password|passwd|secret|token|code|key|sig|signature|assertion"
)
# key=value (query strings, form bodies, "k=v" messages); "status code: 200" is left alone.
_KV = re.compile(
    rf"(?i)(?<![0-9a-z_])((?:[0-9a-z_-]*_)?(?:{_KEY_ALTERNATION}))=([^&\s\"',;)\]}}]+)"
)
# "access_token": "..." as in a JSON body.
_JSON = re.compile(
    rf"(?i)(\"(?:[0-9a-z_-]*_)?(?:{_KEY_ALTERNATION}|authorization)\"\s*:\s*\")"
    r"((?:[^\"\\]|\\.)*)(\")"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[0-9a-z._~+/=-]{8,}")
_AUTH_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization\s*:\s*)[^\r\n,;]+")


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "").replace("_", "")
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """Secrets recognisable inside free text, replaced."""
    text = _AUTH_HEADER.sub(rf"\1{REDACTED}", text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _JSON.sub(rf"\1{REDACTED}\3", text)
    return _KV.sub(rf"\1={REDACTED}", text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every recognisable secret replaced (inputs are untouched)."""
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, BaseModel):  # its repr would show extra fields and nested secrets
        return redact(value.model_dump())
    if isinstance(value, list | set | frozenset):
        return type(value)(redact(v) for v in value)
    if isinstance(value, tuple):
        items = [redact(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: :func:`redact` over the whole event."""
    return {
        k: v if k.startswith("_") else (REDACTED if is_secret_key(k) else redact(v))
        for k, v in event_dict.items()
    }


def _level(name: str) -> int:
    level = logging.getLevelName(name.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {name!r} (use DEBUG, INFO, WARNING, ERROR)")
    return level


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's loggers through one redacting pipeline,
    rendered as console lines or JSON (``settings.log_format``) on ``stream`` (stderr)."""
    level = _level(settings.log_level)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # tracebacks become text, then get redacted
        redact_secrets,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.StackInfoRenderer(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Servers' and clients' own handlers would print around the redaction: send them to root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"):
        lib = logging.getLogger(name)
        for old in lib.handlers[:]:
            lib.removeHandler(old)
        lib.propagate = True
