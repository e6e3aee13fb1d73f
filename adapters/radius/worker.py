"""The RADIUS listener in its own process (`wispgate serve` on a multi-core machine).

Decoding, verifying and group-committing accounting records is the latency-critical path;
the rater, projector and API would otherwise share one interpreter lock with it. The child
runs AccountingServer with its own AccountingLog on the same store (SQLite in WAL mode lets
the parent read while the child writes; PostgreSQL needs nothing) and its own NAS registry.

Parent and child talk over a socket pair (pickled tuples):
- parent -> child: the Settings and the logging setup function (first), ("accepting", bool), ("stale",), ("metrics", n)
- child -> parent: ("listening",) or ("error", text) once, ("durable",) after each commit
  that stored records (wakes the rater), ("metrics", n, exposition text)

The child dies with the parent: it exits on end-of-file of the socket (a clean stop) and
asks the kernel for SIGKILL when the parent dies (PR_SET_PDEATHSIG), so a SIGKILLed parent
never leaves an orphan holding the UDP port. Nothing acknowledged is lost either way: a
record is answered only after its commit.

A child that dies on its own is restarted by the parent (``ChildSupervisor``) up to
``MAX_RESTARTS`` times a minute; beyond that, or when the port cannot be bound again, the
parent is told to stop (``on_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from adapters.child_process import ChildSupervisor, child_main

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
METRICS_TIMEOUT = 2.0


class RadiusWorker(ChildSupervisor):
    """Parent side: starts, supervises and talks to the RADIUS child process.

    Stands in for the AccountingServer where the SiteController expects one: setting
    ``accepting`` reaches the child (a standby site must not answer RADIUS). A child that
    cannot bind, or exits before it listens, is not restarted: ``start`` returns why."""

    module = "adapters.radius.worker"
    title = "the RADIUS listener process"

    def __init__(self, settings: Any, *, on_durable: Callable[[], None], on_failed: Callable[[str], None],
                 configure_logging: Callable[[str, str], None]) -> None:
        super().__init__(settings, on_failed=on_failed, configure_logging=configure_logging)
        self.on_durable = on_durable
        self._accepting = True
        self._replies: dict[int, str] = {}
        self._replied = threading.Condition()
        self._request = 0
        self._start_error: str | None = None

    # ---- the AccountingServer face the SiteController uses ---------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self._accepting = bool(value)
        self._send(("accepting", self._accepting))

    def mark_stale(self, *_: object) -> None:
        """The NAS table may have changed: the child reloads it at the next unknown source."""
        self._send(("stale",))

    def start(self) -> str | None:
        """Let the child open the store and bind; wait until it listens. The error text if
        it could not bind (or did not start)."""
        if not self._begin(START_TIMEOUT):
            return f"{self.title} did not start in time"
        return self._start_error

    # ---- the supervisor's hooks ---------------------------------------------------------

    def _state_messages(self) -> list[tuple[Any, ...]]:
        return [("accepting", self._accepting)]

    def _handle(self, message: tuple[Any, ...]) -> str | None:
        kind = message[0]
        if kind == "durable":
            self.on_durable()
        elif kind == "metrics":
            with self._replied:
                self._replies[message[1]] = message[2]
                self._replied.notify_all()
        elif kind == "listening":
            self._ready.set()
        elif kind == "error":
            return str(message[1])  # could not bind: restarting will not help
        return None

    def _ended(self, code: int | None, failure: str | None) -> bool:
        if self._ready.is_set() and failure is None:
            return False  # died while listening: restart it
        if not self._ready.is_set():
            self._start_error = failure or f"{self.title} exited ({code}) before listening"
            self._ready.set()
        else:
            self.on_failed(f"{self.title} could not listen again: {failure}")
        return True

    # ---- metrics ------------------------------------------------------------------------

    def metrics_text(self) -> str:
        """The child's Prometheus exposition (empty if it does not answer in time)."""
        with self._replied:
            self._request += 1
            request = self._request
        if not self._send(("metrics", request)):
            return ""
        deadline = time.monotonic() + METRICS_TIMEOUT
        with self._replied:
            self._replied.wait_for(lambda: request in self._replies or time.monotonic() >= deadline,
                                   timeout=METRICS_TIMEOUT)
            return self._replies.pop(request, "")


class ChildMetrics:
    """A Prometheus collector that serves the RADIUS child's metrics from the parent's /metrics."""

    def __init__(self, worker: RadiusWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterable[Metric]:
        yield from text_string_to_metric_families(self.worker.metrics_text())

    def describe(self) -> Iterable[Metric]:
        return []  # no fixed description: registering must not call collect()


def expose_child_metrics(worker: RadiusWorker) -> Callable[[], None]:
    """Serve the child's RADIUS metrics instead of the parent's own (which stay at zero, since
    the parent receives no RADIUS). Returns the function that undoes it."""
    from adapters import metrics

    own = [metrics.RADIUS_PACKETS, metrics.RADIUS_DROPPED, metrics.RADIUS_DUPLICATES,
           metrics.RADIUS_CONTENT_DUPLICATES, metrics.RADIUS_DURABLE, metrics.RADIUS_STORE_FAILURES,
           metrics.RADIUS_RESPONSE_SECONDS, metrics.RADIUS_BATCH_SIZE]
    for collector in own:
        REGISTRY.unregister(collector)
    child = ChildMetrics(worker)
    REGISTRY.register(child)

    def undo() -> None:
        REGISTRY.unregister(child)
        for collector in own:
            REGISTRY.register(collector)

    return undo


# ---- the child ------------------------------------------------------------------------


async def _child_main(conn: Connection) -> int:
    from prometheus_client import generate_latest

    from adapters.persistence import eventstore_env, read_model_engine
    from ledger.intake import AccountingLog

    from .registry import NasRegistry, keep_fresh
    from .server import configured_server, start_accounting_server

    settings, configure_logging = conn.recv()
    configure_logging(settings.log_level, settings.log_format)
    common = {"data_dir": settings.data_dir, "database_url": settings.database_url}
    intake = AccountingLog(env=eventstore_env("accountinglog", **common))
    engine = read_model_engine(**common)
    registry = NasRegistry(engine)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):
            conn.send(message)

    # After each commit that stored records (on the writer thread): wake the parent's rater.
    intake.listeners.append(lambda: send(("durable",)))
    registry.refresh(force=True)
    server = configured_server(registry, intake.append, settings)
    loop = asyncio.get_running_loop()
    stopped = loop.create_future()

    def on_message() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "accepting":
                    server.accepting = bool(message[1])
                elif message[0] == "stale":
                    registry.mark_stale()
                elif message[0] == "metrics":
                    send(("metrics", message[1], generate_latest().decode()))
        except (EOFError, OSError):
            if not stopped.done():
                stopped.set_result(None)

    # The accepting state may have arrived with the settings; apply it before binding.
    on_message()
    try:
        await start_accounting_server(settings.radius_host, settings.radius_port, server,
                                      receive_buffer=settings.radius_receive_buffer)
    except OSError as error:
        send(("error", str(error)))
        return 1
    send(("listening",))
    loop.add_reader(conn.fileno(), on_message)
    refresher = asyncio.create_task(keep_fresh(registry))
    try:
        await stopped
    finally:
        loop.remove_reader(conn.fileno())
        refresher.cancel()
        server.close()  # stops answering, commits the batch in flight
        intake.close()
        engine.dispose()
    return 0


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m adapters.radius.worker FD PARENT_PID``."""
    return child_main(argv, lambda conn: asyncio.run(_child_main(conn)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
