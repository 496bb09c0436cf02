"""The event loop choice of the framework's own processes (``event_loop``: auto, uvloop, asyncio)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import uvloop

from framework.errors import ConfigError
from framework.loop import loop_factory, run
from framework.settings import Settings, load_settings


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_the_default_loop() -> None:
    assert run(_loop_type()) is uvloop.Loop
    assert run(_loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(run(_loop_type(), "asyncio"), uvloop.Loop)
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto") is None
    assert not issubclass(run(_loop_type()), uvloop.Loop)
    with pytest.raises(ConfigError, match="event_loop='uvloop' needs the uvloop package"):
        loop_factory("uvloop")


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings().event_loop == "auto"
    monkeypatch.setenv("FRAMEWORK_EVENT_LOOP", "asyncio")
    assert load_settings().event_loop == "asyncio"
    monkeypatch.setenv("FRAMEWORK_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="event_loop"):
        load_settings()
