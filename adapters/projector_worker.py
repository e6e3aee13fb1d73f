"""The live projector in its own process (`wispgate serve`, ``projector_process = "separate"``).

Rating and projecting each take a few hundred microseconds of CPU per record; as threads of
one interpreter they share one core, so the pipeline ran at 1 / (rating + projection). In a
child process the projector has a core of its own. The child opens the same stores (SQLite
in WAL mode lets each process read while the other writes; PostgreSQL needs nothing) and
follows the ledger's notification log exactly as the in-process stage does: its position is
stored with the read models in one transaction, so a child killed at any moment resumes
where its last commit left off, and nothing is projected twice.

Parent and child talk over a socket pair (pickled tuples):
- parent -> child: the Settings and the logging setup function (first), then ("pause", n) or
  ("resume",) as the current state, ("wake",) when the ledger has new events, ("pause", n),
  ("resume",).
- child -> parent: ("ready",) once, ("position", p) after each committed batch (the parent
  wakes its read-your-writes waiters and the projector's listeners with it), ("paused", n)
  once the step in progress has finished and no other will start until ("resume",),
  ("fatal", text) when a read-model invariant failed (the child then exits: never continue).

Site maintenance (fencing rewrites the log's tail and empties the read models) holds the
site's WriteGate exclusively; the gate pauses the child through ``pause``/``resume`` so no
projector step runs meanwhile. A child that does not acknowledge in time is killed (its
uncommitted batch is rolled back) and restarted paused.

A child that dies on its own is restarted (``max_restarts`` a minute, beyond that the parent is
told to stop); each death is logged and counted in ``wispgate_projector_process_restarts_total``.
The child dies with the parent (PR_SET_PDEATHSIG) and exits on end-of-file of the socket.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import Counter, Gauge

from adapters.child_process import MAX_RESTARTS, ChildSupervisor, child_main

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
PAUSE_TIMEOUT = 30.0  # a step is one batch (1,000 events, well under a second): generous
FATAL_EXIT = 70

RESTARTS = Counter("wispgate_projector_process_restarts_total",
                   "Times serve restarted its projector process after it died")
UP = Gauge("wispgate_projector_process_up", "1 while serve's projector process runs")


class ProjectorWorker(ChildSupervisor):
    """Parent side: starts, supervises, wakes, pauses and resumes the projector child.

    ``on_position(p)`` is called (on the supervisor's thread) for each position the child
    committed; ``on_fatal(text)`` when the child stopped on a violated invariant;
    ``on_failed(text)`` when it died too often to be worth restarting."""

    module = "adapters.projector_worker"
    title = "the projector process"

    def __init__(self, settings: Any, *, on_position: Callable[[int], None], on_fatal: Callable[[str], None],
                 on_failed: Callable[[str], None], configure_logging: Callable[[str, str], None],
                 max_restarts: int = MAX_RESTARTS) -> None:
        super().__init__(settings, on_failed=on_failed, configure_logging=configure_logging,
                         max_restarts=max_restarts)
        self.on_position = on_position
        self.on_fatal = on_fatal
        self._paused = False
        self._pause_request = 0
        self._pause_acked = 0
        self._generation = 0  # children attached so far: a pause waits for its own child only
        self.fatal: str | None = None

    def start(self, timeout: float = START_TIMEOUT) -> bool:
        """Let the child open the stores (the parent has created the tables) and begin."""
        return self._begin(timeout)

    # ---- what the stages and the site gate call ---------------------------------------

    def wake(self) -> None:
        """The ledger has new events (no child right now: a restarted child polls the log first)."""
        self._send(("wake",))

    def pause(self, timeout: float = PAUSE_TIMEOUT) -> None:
        """Return once no projector step runs and none will start until ``resume``."""
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
        log.error("the projector process did not pause within %.0f s; killing it", timeout)
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
                    self._conn.send(("resume",))

    # ---- the supervisor's hooks ---------------------------------------------------------

    def _state_messages(self) -> list[tuple[Any, ...]]:
        return [("pause", self._pause_request) if self._paused else ("resume",)]

    def _attached(self) -> None:
        self._generation += 1
        self._pause_acked = self._pause_request  # a fresh child starts in the current state

    def _handle(self, message: tuple[Any, ...]) -> str | None:
        kind = message[0]
        if kind == "position":
            self.on_position(int(message[1]))
        elif kind == "paused":
            with self._state:
                self._pause_acked = max(self._pause_acked, int(message[1]))
                self._state.notify_all()
        elif kind == "ready":
            self._ready.set()
        elif kind == "fatal":
            self.fatal = str(message[1])  # the child exits by itself: never continue
        return None

    def _running(self, up: bool) -> None:
        UP.set(1 if up else 0)

    def _ended(self, code: int | None, failure: str | None) -> bool:
        if self.fatal is None:
            return False
        self.on_fatal(self.fatal)
        return True

    def _restarting(self, code: int | None) -> None:
        RESTARTS.inc()
        super()._restarting(code)


# ---- the child ------------------------------------------------------------------------


def _child_main(conn: Connection) -> int:
    from adapters.followers import Stage, project_step
    from adapters.persistence import eventstore_env, read_model_engine
    from adapters.site_gate import WriteGate
    from ledger import Ledger
    from projections import ReadModelProjector

    settings, configure_logging = conn.recv()
    configure_logging(settings.log_level, settings.log_format)
    common = {"data_dir": settings.data_dir, "database_url": settings.database_url}
    ledger = Ledger(env=eventstore_env("ledger", **common))
    engine = read_model_engine(**common)
    projector = ReadModelProjector(engine, ledger.mapper)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError):
            conn.send(message)

    projector.listeners.append(lambda position: send(("position", position)))
    gate = WriteGate()
    stage = Stage("projector", gate.follower(project_step(ledger, projector)), poll_interval=0.25,
                  nice=settings.stage_nice)
    def on_fatal(broken: Stage) -> None:
        # Nothing is uncommitted (the failed batch rolled back): tell the parent and exit at
        # once rather than wait for the main thread's blocked read.
        send(("fatal", f"stage {broken.name}: {broken.fatal!r}"))
        logging.shutdown()
        os._exit(FATAL_EXIT)

    stage.on_fatal = on_fatal
    gc.collect()
    gc.freeze()  # start-up objects live as long as the child: keep full collections short
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
                paused.close()
                stage.wakeup.set()
            if not stage.is_alive():
                stage.start()  # after the first state message: a paused child never steps
                send(("ready",))
    finally:
        paused.close()
        stage.stop()
        stage.join(10)
        projector.close()
        ledger.close()
        engine.dispose()
    return 0


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m adapters.projector_worker FD PARENT_PID``."""
    return child_main(argv, _child_main)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
