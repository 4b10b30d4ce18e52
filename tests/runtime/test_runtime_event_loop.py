"""CASTIEL_EVENT_LOOP: the loop the long-running processes run on."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop

from castiel_sync.runtime import event_loop
from castiel_sync.settings import Settings


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_runs_on_uvloop_where_installed_and_asyncio_on_the_standard_loop() -> None:
    assert event_loop.run(_loop_type(), Settings()) is uvloop.Loop
    assert event_loop.run(_loop_type(), Settings(event_loop="uvloop")) is uvloop.Loop
    standard = event_loop.run(_loop_type(), Settings(event_loop="asyncio"))
    assert standard is not uvloop.Loop and issubclass(standard, asyncio.BaseEventLoop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError("no uvloop here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert event_loop.run(_loop_type(), Settings()) is not uvloop.Loop
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        event_loop.loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        Settings(event_loop="trio")  # type: ignore[arg-type]
