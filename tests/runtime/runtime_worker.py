"""``castiel-sync`` for the worker-process tests (not a test module): the real CLI app (what
the console script runs), with CASTIEL_TEST_BUS_NAMESPACE, when set, as the namespace of
every RabbitMQ bus the process opens.

The runtime has no setting for the bus namespace (``open_bus`` builds ``RabbitBus(url,
engine)``), and a test on the shared broker needs a topology of its own. Nothing else
changes. A worker that did not pick the namespace up would consume the default topology,
never see the test's messages, and fail the test (it cannot pass unnoticed).

usage: python runtime_worker.py <the arguments of castiel-sync>
"""

from __future__ import annotations

import os
import sys
from typing import Any

from castiel_sync.bus.rabbitmq import RabbitBus
from castiel_sync.cli.main import app


def use_namespace(namespace: str) -> None:
    init = RabbitBus.__init__

    def namespaced(self: RabbitBus, url: str, engine: Any, **kwargs: Any) -> None:
        kwargs.setdefault("namespace", namespace)
        init(self, url, engine, **kwargs)

    RabbitBus.__init__ = namespaced  # type: ignore[method-assign]


if __name__ == "__main__":
    if namespace := os.environ.get("CASTIEL_TEST_BUS_NAMESPACE"):
        use_namespace(namespace)
    sys.exit(app())
