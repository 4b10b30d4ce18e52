"""Credentials never show a secret in repr/str, extra fields (``id_token``) included."""

from __future__ import annotations

import logging

import pytest

from castiel_sync.sdk import Credentials

ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.id-token-secret-value"
ACCESS = "access-token-secret-value"


def test_extra_fields_are_kept_but_never_printed(caplog: pytest.LogCaptureFixture) -> None:
    creds = Credentials(
        access_token=ACCESS,
        refresh_token="refresh-secret-value",
        instance_url="https://org.example",
        id_token=ID_TOKEN,
        signature="sig-secret-value",
    )
    assert creds.id_token == ID_TOKEN  # extra="allow" still keeps the field
    assert creds.model_dump()["id_token"] == ID_TOKEN
    caplog.set_level(logging.INFO)
    logging.getLogger("test").info("connecting with %r / %s", creds, creds)
    for text in (repr(creds), str(creds), f"{creds!r}", caplog.text):
        assert ID_TOKEN not in text and "sig-secret-value" not in text
        assert ACCESS not in text and "refresh-secret-value" not in text
    assert "https://org.example" in repr(creds)  # what is not secret still helps debugging
    assert "token_type='Bearer'" in repr(creds)
