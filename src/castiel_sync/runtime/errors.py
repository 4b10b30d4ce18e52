"""How a worker acts on a handler's failure: every error is classified once, here.

retryable  RateLimitedError / TransientError (sdk), RetryableSyncError (engine):
           nack with the error's ``retry_after`` or exponential backoff
permanent  PermanentError, AdapterValidationError, NotSupportedError, AuthError (sdk),
           SyncConfigError (engine), PermanentJobError (runtime), a malformed event:
           dead-letter at once with the reason
other      anything else (a bug, a lost database connection): nack with backoff until
           the bus's delivery limit moves it to ``sync-deadletter``

The reason kept with the message (:func:`reason_of`) is read by tenant admins: it never
holds an arbitrary exception's text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from castiel_sync.domain.events import EventValidationError
from castiel_sync.sdk import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    NotSupportedError,
    PermanentError,
    RateLimitedError,
    TransientError,
)

ErrorClass = Literal["retryable", "permanent", "other"]

#: Backoff for errors with no Retry-After: 5 s doubling (the spec's write-back policy), at
#: most 5 minutes.
BACKOFF_BASE = 5.0
BACKOFF_MAX = 300.0


class PermanentJobError(Exception):
    """A message that can never succeed as sent (no handler, bad payload, feature absent)."""


class HandlerNotReadyError(PermanentJobError):
    """The component that handles this event type is not installed yet."""


class PoisonMessageError(PermanentJobError):
    """A message that contradicts itself (its tenant is not its event's tenant)."""


@dataclass(frozen=True)
class Verdict:
    kind: ErrorClass
    delay: float
    reason: str


def _engine_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    try:
        from castiel_sync.sync.jobs import RetryableSyncError, SyncConfigError
    except ImportError:  # the sync engine is optional for the runtime
        return (), ()
    return (RetryableSyncError,), (SyncConfigError,)


def backoff(delivery_count: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, delivery_count - 1))


def reason_of(exc: BaseException) -> str:
    """The reason stored with a retried or dead-lettered message, which tenant admins read
    through the API: an adapter error's ``user_message`` (never its ``detail``), the
    message of our own job and engine errors (written for that reader), and for anything
    else only the class name; the full error goes to the server log (redacted)."""
    if isinstance(exc, AdapterError):
        message = exc.user_message or "no detail"
    elif isinstance(exc, (PermanentJobError, *_engine_errors())):
        message = str(exc) or "no detail"
    else:
        message = "the handler failed unexpectedly; the detail is in the server log"
    return f"{type(exc).__name__}: {message}"[:1000]


def _engine_errors() -> tuple[type[BaseException], ...]:
    try:
        from castiel_sync.sync.jobs import SyncError
    except ImportError:  # the sync engine is optional for the runtime
        return ()
    return (SyncError,)


def classify(exc: BaseException, delivery_count: int) -> Verdict:
    retryable_engine, permanent_engine = _engine_classes()
    reason = reason_of(exc)
    if isinstance(exc, (RateLimitedError, TransientError, *retryable_engine)):
        wait = getattr(exc, "retry_after", None)
        delay = float(wait) if wait is not None else backoff(delivery_count)
        return Verdict("retryable", delay, reason)
    permanent = (
        PermanentJobError,
        PermanentError,
        AdapterValidationError,
        NotSupportedError,
        AuthError,
        EventValidationError,
        *permanent_engine,
    )
    if isinstance(exc, permanent):
        return Verdict("permanent", 0.0, reason)
    return Verdict("other", backoff(delivery_count), reason)
