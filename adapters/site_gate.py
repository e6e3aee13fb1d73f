"""The write gate of a site: the rater writes ledger events only while the site is active,
and fencing (which rewrites the log's tail and rebuilds the read models) waits until no
stage is in the middle of a step, then runs alone."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Step = Callable[[], int]


class WriteGate:
    """A readers-writer gate: stage steps share it, maintenance takes it exclusively."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._exclusive = False
        self.writes_open = True

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No guarded step runs while this is held."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    def writer(self, step: Step) -> Step:
        """A step that writes ledger events: does nothing while writes are closed."""

        def guarded() -> int:
            with self.shared():
                return step() if self.writes_open else 0

        return guarded

    def follower(self, step: Step) -> Step:
        """A step that only follows the log (the projector): paused during maintenance."""

        def guarded() -> int:
            with self.shared():
                return step()

        return guarded
