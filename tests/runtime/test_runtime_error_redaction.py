"""What tenant admins and operators read never holds a secret: a dead letter's reason
(``reason_of``) and ``open_bus``'s error for a bad bus URL."""

from __future__ import annotations

import pytest

from castiel_sync.bus import open_bus
from castiel_sync.runtime.errors import PermanentJobError, classify, reason_of
from castiel_sync.sdk import AuthError, PermanentError
from castiel_sync.settings import Settings

LEAK = "postgresql://castiel:s3cr3t-db-pass@db.internal/castiel"


def test_an_unclassified_error_reason_names_only_its_class() -> None:
    reason = reason_of(RuntimeError(f"could not connect to {LEAK}"))
    assert reason.startswith("RuntimeError: ")
    assert "s3cr3t" not in reason and "db.internal" not in reason
    assert "s3cr3t" not in classify(ValueError(LEAK), 1).reason


def test_adapter_errors_give_their_user_message_never_the_detail() -> None:
    exc = AuthError("the provider refused the credentials", detail=f"body: {LEAK}")
    assert reason_of(exc) == "AuthError: the provider refused the credentials"
    assert reason_of(PermanentError("the record type is not supported")) == (
        "PermanentError: the record type is not supported"
    )
    assert "no handler" in reason_of(PermanentJobError("no handler for event type 'x'"))


def test_open_bus_error_does_not_show_the_password() -> None:
    settings = Settings(bus_url="redis://castiel:bus-pa55word@broker.internal:6379/0")
    with pytest.raises(ValueError) as info:
        open_bus(settings, None)  # type: ignore[arg-type]  # refused before any use
    message = str(info.value)
    assert "bus-pa55word" not in message
    assert "redis://" in message and "broker.internal:6379" in message
