"""Which asyncio event loop a process runs: uvloop when it is installed, asyncio's own otherwise.

`serve`'s parent answers the API through uvicorn; much of a portal read's CPU is the event
loop and its transport (selector calls, callbacks, the socket reads and writes), which uvloop
(libuv, the loop `uvicorn[standard]` uses) does in C: ~20 % less CPU per read. It is optional:
without it, or with ``event_loop = "asyncio"``, asyncio's loop runs with the same behaviour.

The RADIUS child stays on asyncio's loop: on uvloop it measured ~7 % more CPU per record
(bench.radius_cpu, 3 alternated runs), likely because libuv reads each datagram itself and
calls back once per datagram, where the server drains the socket in bursts on one wake-up.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


def uvloop_available() -> bool:
    """Whether uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str) -> str:
    """The loop ``choice`` ("auto", "uvloop", "asyncio") gives here: "uvloop" or "asyncio".
    "uvloop" when it is not installed is an error (asked for by name), "auto" falls back."""
    if choice not in CHOICES:
        raise ValueError(f"event_loop is one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if choice == "uvloop":
        raise RuntimeError("event_loop = 'uvloop' but uvloop is not installed (pip install uvloop)")
    return "asyncio"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to."""
    if resolve(choice) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
