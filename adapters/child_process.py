"""Child processes of `wispgate serve` (its RADIUS listener, its projector): how one is started
with a socket pair to its parent, how it makes sure it dies with that parent, and how the
parent supervises it (``ChildSupervisor``: restarted when it dies, within a rate limit)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # per RESTART_WINDOW seconds; beyond that the parent stops
RESTART_WINDOW = 60.0


def spawn(module: str) -> tuple[subprocess.Popen[bytes], socket.socket, Connection]:
    """Start ``python -m <module> FD PARENT_PID``, FD being the child's end of a new socket
    pair. Returns the process, the parent's end (keep it to shut it down: closing a duplicate
    alone would not wake a reader blocked on it) and a Connection on a duplicate of that end."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno()), str(os.getpid())],
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    return process, ours, Connection(os.dup(ours.fileno()))


def die_with_parent(parent_pid: int) -> None:
    """In the child: ask Linux to SIGKILL this process when the parent dies (PR_SET_PDEATHSIG,
    so a SIGKILLed `serve` leaves no orphan holding a port or a store); exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(0)


def child_main(argv: list[str], run: Callable[[Connection], int]) -> int:
    """A child's entry point (``python -m <module> FD PARENT_PID``): die with the parent, leave
    Ctrl-C to the parent (which stops us), then ``run`` on the connection; 0 when the parent
    stopped before sending anything."""
    fd, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(fd)
    try:
        return run(conn)
    except EOFError:  # the parent stopped before it sent the settings
        return 0
    finally:
        with contextlib.suppress(OSError):
            conn.close()


class ChildSupervisor:
    """Parent side of one child process: a supervisor thread spawns it, sends it the settings
    and its current state, follows its messages, and restarts it when it dies on its own, at
    most ``max_restarts`` times in ``RESTART_WINDOW`` seconds (beyond that ``on_failed`` is
    told, and the parent stops). What the messages mean is the subclass's (the hooks below).

    One lock orders everything sent to the child: its first messages, then state changes,
    so a restarted child always starts from the current state. ``_state`` (a condition on
    that lock) is notified whenever the child comes or goes."""

    module = ""  # the child is ``python -m <module>``
    title = ""  # "the RADIUS listener process": logs and failures name it

    def __init__(self, settings: Any, *, on_failed: Callable[[str], None],
                 configure_logging: Callable[[str, str], None], max_restarts: int = MAX_RESTARTS) -> None:
        self.settings = settings
        self.configure_logging = configure_logging  # sent by reference: the child sets up its log alike
        self.on_failed = on_failed
        self.max_restarts = max_restarts
        self._conn: Connection | None = None
        self._socket: socket.socket | None = None
        self._state = threading.Condition(threading.Lock())
        self._closing = threading.Event()
        self._go = threading.Event()
        self._ready = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts: list[float] = []

    # ---- what a subclass says about its child ------------------------------------------

    def _state_messages(self) -> list[tuple[Any, ...]]:
        """What a new child is sent after the settings: the current state (under the lock)."""
        return []

    def _attached(self) -> None:
        """A new child has its state and receives what is sent from now on (under the lock)."""

    def _handle(self, message: tuple[Any, ...]) -> str | None:
        """One message from the child; a text when the child cannot work (it is not restarted)."""
        raise NotImplementedError

    def _running(self, up: bool) -> None:
        """The child started following its messages (True) or went away (False)."""

    def _ended(self, code: int | None, failure: str | None) -> bool:
        """The child is gone (exit ``code``; ``failure`` from ``_handle``): True when it must
        not be restarted (the subclass has reported why)."""
        return failure is not None

    def _restarting(self, code: int | None) -> None:
        log.error("%s exited (%s); restarting it", self.title, code)

    # ---- lifecycle ---------------------------------------------------------------------

    def launch(self) -> None:
        """Start the child now (its imports overlap the parent's start-up); it touches the
        store only after ``_go`` (``start``)."""
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: the
        # supervisor thread lives as long as the child is wanted.
        if self._supervisor is None:
            name = f"{self.module.rsplit('.', 1)[-1]}-supervisor"
            self._supervisor = threading.Thread(target=self._supervise, name=name, daemon=True)
            self._supervisor.start()

    def _begin(self, timeout: float) -> bool:
        """Let the child open the stores and begin; whether it said it is ready in time."""
        self.launch()
        self._go.set()
        return self._ready.wait(timeout)

    def close(self, timeout: float = 15.0) -> None:
        """Stop the child: end-of-file on its socket is its signal to finish and exit."""
        self._closing.set()
        self._go.set()
        with self._state:
            self._conn = None
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    # Shut down, not closed: closing a duplicate alone would not wake the child's read.
                    self._socket.shutdown(socket.SHUT_RDWR)
            self._state.notify_all()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)
        self._running(False)

    def _send(self, message: tuple[Any, ...]) -> bool:
        """Send to the current child; False when there is none (a restarted child is sent the
        current state anyway) or it is gone."""
        with self._state:
            if self._conn is None:
                return False
            try:
                self._conn.send(message)
            except OSError:
                return False
            return True

    def _fail(self, text: str) -> None:
        self._ready.set()  # nobody waits for a child that will not come
        self.on_failed(text)

    # ---- the supervisor ----------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.is_set():
            with self._state:
                self.process, self._socket, conn = spawn(self.module)
            self._go.wait()
            with self._state:  # the first messages, then state changes, in order
                if not self._closing.is_set():
                    with contextlib.suppress(OSError):
                        conn.send((self.settings, self.configure_logging))
                        for message in self._state_messages():
                            conn.send(message)
                    self._conn = conn
                    self._attached()
                else:
                    with contextlib.suppress(OSError):
                        self._socket.shutdown(socket.SHUT_RDWR)
            self._running(True)
            failure = self._follow(conn)
            self._running(False)
            with self._state:
                self._conn = None
                self._state.notify_all()
                with contextlib.suppress(OSError):
                    conn.close()
                    self._socket.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self._closing.is_set():
                return
            code = self.process.returncode
            if self._ended(code, failure):
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            if len(self.restarts) > self.max_restarts:
                self._fail(f"{self.title} exited ({code}) {len(self.restarts)} times in {RESTART_WINDOW:.0f} s")
                return
            self._restarting(code)
            self._closing.wait(0.5)

    def _follow(self, conn: Connection) -> str | None:
        """Handle the child's messages until it goes away (or cannot work: the reason)."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return None
            failure = self._handle(message)
            if failure is not None:
                return failure
