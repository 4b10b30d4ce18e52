"""The sync engine's inbound side: bounded, crash-safe full / incremental / webhook sync.

Public surface (the worker, the API and the outbound engine code against these)::

    engine = InboundSync(store, VaultCredentialProvider(vault), adapter_factory=...)
    outcome = await engine.run_job(SyncJob.from_event(event))       # one bounded job
    outcomes = await engine.run_to_completion(job)                  # + follow-ups, in process
    await engine.apply_webhook_events(tenant_id, integration_id, events)

See :mod:`castiel_sync.sync.inbound` for the guarantees and
:mod:`castiel_sync.sync.checkpoint` for the checkpoint kept per entity.
"""

from castiel_sync.sync.checkpoint import EntityCheckpoint, RunState
from castiel_sync.sync.credentials import (
    CredentialProvider,
    StaticCredentialProvider,
    VaultCredentialProvider,
)
from castiel_sync.sync.inbound import (
    AdapterFactory,
    InboundSync,
    WebhookOutcome,
    default_adapter_factory,
    inbound_entities,
)
from castiel_sync.sync.jobs import (
    JobOutcome,
    RetryableSyncError,
    SyncConfigError,
    SyncError,
    SyncJob,
)

__all__ = [
    "AdapterFactory",
    "CredentialProvider",
    "EntityCheckpoint",
    "InboundSync",
    "JobOutcome",
    "RetryableSyncError",
    "RunState",
    "StaticCredentialProvider",
    "SyncConfigError",
    "SyncError",
    "SyncJob",
    "VaultCredentialProvider",
    "WebhookOutcome",
    "default_adapter_factory",
    "inbound_entities",
]
