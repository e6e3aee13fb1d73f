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

A child that dies on its own is restarted by the parent (RadiusWorker.supervise) up to
``MAX_RESTARTS`` times a minute; beyond that, or when the port cannot be bound again, the
parent is told to stop (``on_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from adapters.child_process import child_main, spawn

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # per RESTART_WINDOW seconds; beyond that the parent stops
RESTART_WINDOW = 60.0
START_TIMEOUT = 60.0
METRICS_TIMEOUT = 2.0


class RadiusWorker:
    """Parent side: starts, supervises and talks to the RADIUS child process.

    Stands in for the AccountingServer where the SiteController expects one: setting
    ``accepting`` reaches the child (a standby site must not answer RADIUS)."""

    def __init__(self, settings: Any, *, on_durable: Callable[[], None], on_failed: Callable[[str], None],
                 configure_logging: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.configure_logging = configure_logging  # sent by reference: the child sets up its log alike
        self.on_durable = on_durable
        self.on_failed = on_failed
        self._accepting = True
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._replies: dict[int, str] = {}
        self._replied = threading.Condition()
        self._request = 0
        self._closing = threading.Event()
        self._started = threading.Event()
        self._go = threading.Event()
        self._socket: socket.socket | None = None
        self._start_error: str | None = None
        self._supervisor: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []

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

    # ---- lifecycle ---------------------------------------------------------------------

    def launch(self) -> None:
        """Start the child now: it imports its modules while this process builds its own
        applications, and waits for ``start`` before it touches the store."""
        # The supervisor thread forks the child and lives as long as it is wanted:
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends.
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="radius-supervisor", daemon=True)
            self._supervisor.start()

    def start(self) -> str | None:
        """Let the child open the store and bind; wait until it listens. The error text if
        it could not bind (or did not start)."""
        self.launch()
        self._go.set()
        if not self._started.wait(START_TIMEOUT):
            return "the RADIUS listener process did not start in time"
        return self._start_error

    def close(self, timeout: float = 15.0) -> None:
        """Stop the child: it stops answering, commits what it holds, and exits."""
        self._closing.set()
        self._go.set()
        with self._send_lock:
            self._conn = None
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)  # end-of-file: the child's signal to stop
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)

    def _spawn(self) -> Connection:
        self.process, self._socket, conn = spawn("adapters.radius.worker")
        return conn

    def _supervise(self) -> None:
        while not self._closing.is_set():
            with self._send_lock:
                conn = self._spawn()
            self._go.wait()
            with self._send_lock:  # the first messages, then ``accepting`` changes, in order
                if not self._closing.is_set():
                    with contextlib.suppress(OSError):
                        conn.send((self.settings, self.configure_logging))
                        conn.send(("accepting", self._accepting))
                    self._conn = conn
                else:
                    with contextlib.suppress(OSError):
                        self._socket.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
            failure = self._follow(conn)
            with self._send_lock:
                self._conn = None
                with contextlib.suppress(OSError):
                    conn.close()
                    self._socket.close()  # type: ignore[union-attr]
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
            if self._closing.is_set():
                return
            if failure is not None:  # could not bind: restarting will not help
                if not self._started.is_set():
                    self._start_error = failure
                    self._started.set()
                else:
                    self.on_failed(f"the RADIUS listener process could not listen again: {failure}")
                return
            code = self.process.returncode if self.process is not None else None
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if not self._started.is_set() or len(self.restarts) > MAX_RESTARTS:
                message = (f"the RADIUS listener process exited ({code}) "
                           f"{len(self.restarts)} times in {RESTART_WINDOW:.0f} s")
                if not self._started.is_set():
                    self._start_error = f"the RADIUS listener process exited ({code}) before listening"
                    self._started.set()
                else:
                    self.on_failed(message)
                return
            log.error("the RADIUS listener process exited (%s); restarting it", code)
            self._closing.wait(0.5)

    def _follow(self, conn: Connection) -> str | None:
        """Handle the child's messages until it goes away; the bind error text, if any."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return None
            kind = message[0]
            if kind == "durable":
                self.on_durable()
            elif kind == "metrics":
                with self._replied:
                    self._replies[message[1]] = message[2]
                    self._replied.notify_all()
            elif kind == "listening":
                self._started.set()
            elif kind == "error":
                return str(message[1])

    def _send(self, message: tuple[Any, ...]) -> bool:
        with self._send_lock:
            if self._conn is None:
                return False  # no child right now: a restarted child gets the current state
            try:
                self._conn.send(message)
            except OSError:
                return False
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
    from .server import AccountingServer, start_accounting_server

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
    server = AccountingServer(registry, intake.append, batch_max=settings.radius_batch_max,
                              duplicate_window=settings.duplicate_cache_seconds)
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
