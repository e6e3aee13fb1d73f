"""The event loop `serve` and its RADIUS process run (adapters/event_loop.py): uvloop when it is
installed and not refused, asyncio's own otherwise; a wrong setting is refused by name."""

from __future__ import annotations

import asyncio

import pytest

from adapters import event_loop
from api.settings import load_settings


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_uvloop_when_installed_and_asyncio_runs_the_standard_loop() -> None:
    assert event_loop.uvloop_available()  # a dependency of the project: installed with it
    assert event_loop.run(loop_module(), "auto").startswith("uvloop")
    assert event_loop.run(loop_module(), "uvloop").startswith("uvloop")
    assert event_loop.run(loop_module(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_by_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_available", lambda: False)
    assert event_loop.resolve("auto") == "asyncio"
    assert event_loop.run(loop_module(), "auto").startswith("asyncio")
    with pytest.raises(RuntimeError, match="not installed"):
        event_loop.resolve("uvloop")


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        event_loop.resolve("trio")
    with pytest.raises(ValueError, match="event_loop"):
        load_settings(environ={"WISPGATE_EVENT_LOOP": "fast"})
    assert load_settings(environ={"WISPGATE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    assert load_settings(environ={}).event_loop == "auto"
