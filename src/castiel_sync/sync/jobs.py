"""What a sync job is (the payload of ``SyncScheduled`` / ``SyncRequested``), what it
reports, and how it fails.

Errors (the queue acts on the class, never on the message)::

    SyncError                  base; ``str(error)`` is safe to show a tenant admin
    +-- RetryableSyncError     rate limited or transient: nack with ``retry_after`` seconds
                               (None: the queue's own backoff); the redelivered job resumes
                               from the last committed page
    +-- SyncConfigError        the integration cannot sync as configured (no credentials,
                               no adapter, an invalid mapping): retrying will not help

An ``AuthError`` that survives the adapter's single refresh is not raised: the job records
a failed execution with a clear message and returns ``JobOutcome(status="failed")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from castiel_sync.domain.events import (
    SYNC_REQUESTED,
    SYNC_SCHEDULED,
    CloudEvent,
    sync_requested,
)

SyncType = Literal["full", "incremental"]
Trigger = Literal["scheduled", "manual", "followup", "webhook"]
OutcomeStatus = Literal["completed", "continued", "fanned_out", "stale", "skipped", "failed"]


class SyncJob(BaseModel):
    """One bounded sync job. ``entity=None`` means every enabled inbound entity (the job
    fans out into one job per entity). ``run_id`` continues a run (follow-up jobs); the
    run's position itself lives in the checkpoint, never in the message, so a stale or
    repeated message cannot move it. ``cursor`` is the checkpoint sequence number the
    follow-up was published at (for logs and tracing)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    tenant_id: str
    integration_id: str
    entity: str | None = None
    sync_type: SyncType = "incremental"
    trigger: Trigger = "scheduled"
    run_id: str | None = None
    cursor: int | None = None

    @classmethod
    def from_event(cls, event: CloudEvent | Mapping[str, Any]) -> SyncJob:
        """The job a ``SyncScheduled`` / ``SyncRequested`` event asks for."""
        envelope = event if isinstance(event, CloudEvent) else CloudEvent.from_dict(event)
        if envelope.type not in {SYNC_SCHEDULED, SYNC_REQUESTED}:
            raise ValueError(f"not a sync job event: {envelope.type}")
        data = envelope.data
        default_trigger = "scheduled" if envelope.type == SYNC_SCHEDULED else "manual"
        return cls(
            tenant_id=data["tenantId"],
            integration_id=data["integrationId"],
            entity=data.get("entity"),
            sync_type=data.get("syncType", "incremental"),
            trigger=data.get("trigger", default_trigger),
            run_id=data.get("runId"),
            cursor=data.get("cursor"),
        )

    def to_event(self, *, id: str | None = None) -> CloudEvent:
        """This job as a ``SyncRequested`` event (follow-ups and fan-out)."""
        base = sync_requested(
            tenant_id=self.tenant_id,
            integration_id=self.integration_id,
            entity=self.entity,
            sync_type=self.sync_type,
            id=id,
        ).to_dict()
        extra = {"trigger": self.trigger, "runId": self.run_id, "cursor": self.cursor}
        base["data"].update({k: v for k, v in extra.items() if v is not None})
        return CloudEvent.from_dict(base)


@dataclass
class JobOutcome:
    """What one job did. ``follow_ups`` were also published through the outbox (in the
    transaction of the job's last page); in-process drivers may run them directly, and a
    duplicate delivered later by the bus is a no-op (``stale``)."""

    status: OutcomeStatus
    job: SyncJob
    execution_id: str | None = None
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    follow_ups: list[SyncJob] = field(default_factory=list)
    error: str | None = None


class SyncError(Exception):
    """Base of the sync engine's errors; the message is safe for users."""


class RetryableSyncError(SyncError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SyncConfigError(SyncError):
    pass


__all__ = [
    "JobOutcome",
    "OutcomeStatus",
    "RetryableSyncError",
    "SyncConfigError",
    "SyncError",
    "SyncJob",
    "SyncType",
    "Trigger",
]
