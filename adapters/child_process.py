"""Child processes of `wispgate serve` (its RADIUS listener, rater and projector): how one is
started with a socket pair to its parent, how it makes sure it dies with that parent, and how
the parent supervises it (``ChildSupervisor``: restarted when it dies, within a rate limit;
``PausableChild``: a stage the site's write gate pauses during maintenance)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
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


class SleepFlag:
    """One byte that a stage child and its parent both map (a memfd): up from just before the
    child's stage takes its last look at its upstream before it sleeps, down once a step of it
    found work again. The parent sends a wake-up only while it is up: at the paced load the
    upstream commits several hundred times a second, and each ("wake",) cost a pickle and a
    send in the parent and a receive in the child (~14 us of the rater child's CPU per record)
    while the stage was gathering or busy, when a wake-up changes nothing.

    Nothing is missed: the child raises the flag *before* that last look, so work committed
    before the parent found the flag down is seen by that look (or by the step that follows
    a step that found work). Between processes the byte needs no fence of its own: SQLite's
    read of its WAL index and the socket messages go through full barriers."""

    def __init__(self, buffer: mmap.mmap) -> None:
        self._buffer = buffer

    @classmethod
    def new(cls) -> tuple[SleepFlag, int] | None:
        """A flag (up) and the descriptor to hand to the child; None where there is no memfd
        or it is refused (the parent then wakes the child every time, as before)."""
        create = getattr(os, "memfd_create", None)
        if create is None:
            return None
        try:
            fd = create("wg-sleep-flag")
        except OSError:
            return None
        try:
            os.ftruncate(fd, mmap.PAGESIZE)
            flag = cls(mmap.mmap(fd, mmap.PAGESIZE))
        except OSError:
            os.close(fd)
            return None
        flag.set()
        return flag, fd

    @classmethod
    def inherited(cls, argv: list[str]) -> SleepFlag | None:
        """In the child: the flag whose descriptor the parent passed (argv[2]), if any. None
        when it cannot be mapped: the stage then never lowers the flag the parent made (up),
        so the parent wakes it every time, as before."""
        if len(argv) < 3:
            return None
        fd = int(argv[2])
        try:
            return cls(mmap.mmap(fd, mmap.PAGESIZE))
        except OSError:
            return None
        finally:
            os.close(fd)

    def set(self) -> None:
        self._buffer[0] = 1

    def clear(self) -> None:
        self._buffer[0] = 0

    def is_set(self) -> bool:
        return self._buffer[0] != 0


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (15 bytes at most) in the kernel too, so `top -H`,
    `ps -L` and /proc/<pid>/task/<tid>/comm tell serve's threads apart (CPU per thread)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


def spawn(module: str, sleep_flag: int | None = None) -> tuple[subprocess.Popen[bytes], socket.socket, Connection]:
    """Start ``python -m <module> FD PARENT_PID [FLAG_FD]``, FD being the child's end of a new
    socket pair (FLAG_FD: a SleepFlag's descriptor). Returns the process, the parent's end
    (keep it to shut it down: closing a duplicate alone would not wake a reader blocked on it)
    and a Connection on a duplicate of that end."""
    ours, theirs = socket.socketpair()
    extra = () if sleep_flag is None else (sleep_flag,)
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno()), str(os.getpid()), *map(str, extra)],
        pass_fds=(theirs.fileno(), *extra),
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
    sleep_flag = False  # the child is given a SleepFlag (a stage child: ``PausableChild``)

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
        self._sleeping: SleepFlag | None = None  # the current child's, when it has one

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
        # Its own name in the kernel: unnamed, its CPU (the child's messages, e.g. the RADIUS
        # child's one per commit) was counted as the API's (the process's name) by the benches.
        parts = self.module.split(".")
        name_os_thread("wg-sv-" + (parts[-2] if parts[-1] == "worker" else parts[-1].removesuffix("_worker")))
        while not self._closing.is_set():
            made = SleepFlag.new() if self.sleep_flag else None
            with self._state:
                try:
                    self.process, self._socket, conn = spawn(self.module, None if made is None else made[1])
                finally:
                    if made is not None:
                        os.close(made[1])  # the child has its own copy
                self._sleeping = None if made is None else made[0]
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


PAUSE_TIMEOUT = 30.0  # a step is one batch (well under a second): generous


class PausableChild(ChildSupervisor):
    """A child running one of the site's stages (rater, projector), which the site's
    WriteGate pauses while it holds the gate exclusively (fencing, a role change): ``pause``
    returns once no step runs in the child and none will start until ``resume``. A child that
    does not acknowledge in time is killed (its uncommitted batch rolls back) and its
    successor starts paused.

    The child sends ("ready",) once, ("paused", n) to acknowledge pause request n, and
    ("fatal", text) when an invariant failed (it then exits: never continue); other messages
    go to ``_message``. ``on_fatal(text)`` is told once the child is gone."""

    restart_counter: Any = None  # a prometheus Counter of restarts, a Gauge of "is up"
    up_gauge: Any = None
    sleep_flag = True

    def __init__(self, settings: Any, *, on_fatal: Callable[[str], None], on_failed: Callable[[str], None],
                 configure_logging: Callable[[str, str], None], max_restarts: int = MAX_RESTARTS) -> None:
        super().__init__(settings, on_failed=on_failed, configure_logging=configure_logging,
                         max_restarts=max_restarts)
        self.on_fatal = on_fatal
        self._paused = False
        self._pause_request = 0
        self._pause_acked = 0
        self._generation = 0  # children attached so far: a pause waits for its own child only
        self.fatal: str | None = None

    def start(self, timeout: float = 60.0) -> bool:
        """Let the child open the stores (the parent has created the tables) and begin."""
        return self._begin(timeout)

    def wake(self) -> None:
        """Its upstream has new work (no child right now: a restarted child polls first). Sent
        only while the child's stage may be asleep (its SleepFlag is up): otherwise it looks
        again anyway."""
        sleeping = self._sleeping
        if sleeping is None or sleeping.is_set():
            self._send(("wake",))

    def pause(self, timeout: float = PAUSE_TIMEOUT) -> None:
        """Return once no step runs in the child and none will start until ``resume``."""
        with self._state:
            self._paused = True
            self._pause_request += 1
            request, generation = self._pause_request, self._generation
            if self._conn is None:
                return  # no child runs steps now; the next one starts paused
            with contextlib.suppress(OSError):  # the child is gone: _follow notices and notifies
                self._conn.send(("pause", request))
            acked = self._state.wait_for(
                lambda: self._pause_acked >= request or self._generation != generation or self._conn is None,
                timeout=timeout)
            if acked:
                return
            process = self.process
        # Hung in a step: kill it (its transaction rolls back) and wait until it is gone;
        # its successor starts paused.
        log.error("%s did not pause within %.0f s; killing it", self.title, timeout)
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)

    def resume(self) -> None:
        with self._state:
            self._paused = False
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    for message in self._resume_messages():
                        self._conn.send(message)

    def _resume_messages(self) -> list[tuple[Any, ...]]:
        """What a paused child is sent to resume (under the lock)."""
        return [("resume",)]

    def _message(self, message: tuple[Any, ...]) -> None:
        """A message of the subclass's protocol."""

    def _state_messages(self) -> list[tuple[Any, ...]]:
        return [("pause", self._pause_request)] if self._paused else self._resume_messages()

    def _attached(self) -> None:
        self._generation += 1
        self._pause_acked = self._pause_request  # a fresh child starts in the current state

    def _handle(self, message: tuple[Any, ...]) -> str | None:
        kind = message[0]
        if kind == "paused":
            with self._state:
                self._pause_acked = max(self._pause_acked, int(message[1]))
                self._state.notify_all()
        elif kind == "ready":
            self._ready.set()
        elif kind == "fatal":
            self.fatal = str(message[1])  # the child exits by itself: never continue
        else:
            self._message(message)
        return None

    def _ended(self, code: int | None, failure: str | None) -> bool:
        if self.fatal is None:
            return False
        self.on_fatal(self.fatal)
        return True

    def _running(self, up: bool) -> None:
        if self.up_gauge is not None:
            self.up_gauge.set(1 if up else 0)

    def _restarting(self, code: int | None) -> None:
        if self.restart_counter is not None:
            self.restart_counter.inc()
        super()._restarting(code)


FATAL_EXIT = 70  # a stage child's exit status after a violated invariant


def messenger(conn: Connection) -> Callable[[tuple[Any, ...]], None]:
    """In a child: send to the parent from any thread (nothing when the parent is gone: the
    main thread's read then ends the child)."""
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock, contextlib.suppress(OSError):
            conn.send(message)

    return send


def exit_on_fatal(send: Callable[[tuple[Any, ...]], None]) -> Callable[[Any], None]:
    """In a stage child: a Stage's ``on_fatal`` that tells the parent and exits at once (the
    failed batch rolled back, nothing is uncommitted) rather than wait for the main thread's
    blocked read."""

    def on_fatal(broken: Any) -> None:
        send(("fatal", f"stage {broken.name}: {broken.fatal!r}"))
        logging.shutdown()
        os._exit(FATAL_EXIT)

    return on_fatal


def follow_parent(conn: Connection, stage: Any, gate: Any, send: Callable[[tuple[Any, ...]], None], *,
                  on_resume: Callable[[], None] = lambda: None,
                  on_message: Callable[[tuple[Any, ...]], None] = lambda message: None) -> None:
    """In a PausableChild: follow the parent's messages until it goes away. ("wake",) wakes
    ``stage``; ("pause", n) takes ``gate`` exclusively (after the step in progress) and says
    ("paused", n); ("resume",) calls ``on_resume`` and lets steps run again; anything else goes
    to ``on_message``. The stage starts after the first state message (a child that starts
    paused never steps), and the child then says ("ready",)."""
    paused = contextlib.ExitStack()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "wake":
                stage.wakeup.set()
            elif kind == "pause":
                paused.close()  # a second pause without a resume (a restarted parent state)
                paused.enter_context(gate.exclusive())  # waits for the step in progress
                send(("paused", message[1]))
            elif kind == "resume":
                on_resume()
                paused.close()
                stage.wakeup.set()
            else:
                on_message(message)
            if not stage.is_alive() and kind in ("pause", "resume"):
                stage.start()
                send(("ready",))
    finally:
        paused.close()
