"""The runtime: the spec's Azure Functions as asyncio machinery.

- :mod:`~castiel_sync.runtime.scheduler` ``SyncScheduler`` (timer: due syncs, exactly once)
- :mod:`~castiel_sync.runtime.workers` ``SyncInboundWorker`` / ``SyncOutboundWorker`` and
  the ``HandlerRegistry`` the sync engine plugs into
- :mod:`~castiel_sync.runtime.token_refresher` ``TokenRefresher`` (timer and on demand) and
  ``RefreshingCredentialProvider``
- :mod:`~castiel_sync.runtime.slots` per-tenant sync slots (the concurrent-sync limit)
- :mod:`~castiel_sync.runtime.process` running them: ``serve`` (all in one process) or
  split (``api``, ``worker``, ``scheduler``), SIGTERM drain
- :mod:`~castiel_sync.runtime.metrics` Prometheus series

``WebhookReceiver`` is an HTTP route: :mod:`castiel_sync.api.routes.webhooks`.
"""
