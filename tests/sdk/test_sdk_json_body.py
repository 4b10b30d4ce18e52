"""HttpAdapter.json_body: a provider's body as JSON, or None, never an exception."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from castiel_sync.sdk import HttpAdapter


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"error": {"code": "0x80040217"}}', {"error": {"code": "0x80040217"}}),
        (b'[{"errorCode": "NOT_FOUND"}]', [{"errorCode": "NOT_FOUND"}]),
        (b'"text"', "text"),
        (b"null", None),
        (b"", None),
        (b"<html>Bad Gateway</html>", None),
        (b"\xff\xfe\xfa not utf-8", None),
    ],
)
def test_json_body(content: bytes, expected: Any) -> None:
    response = httpx.Response(400, content=content)
    assert HttpAdapter.json_body(response) == expected
