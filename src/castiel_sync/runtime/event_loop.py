"""The event loop the long-running processes run on (``serve``, ``api``, ``worker``,
``scheduler``, ``demo``).

``CASTIEL_EVENT_LOOP=auto`` (the default) picks uvloop where it is installed (it comes with
``uvicorn[standard]``), as uvicorn's own ``loop="auto"`` does: the bus benchmark's
single-process pipeline runs ~12% faster on it. ``asyncio`` keeps the standard loop;
``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from castiel_sync.settings import Settings

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (None: the standard loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("CASTIEL_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], settings: Settings) -> T:
    """``asyncio.run(main)`` on the loop the settings choose."""
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        return runner.run(main)


__all__ = ["loop_factory", "run"]
