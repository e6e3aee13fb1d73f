"""The rebuild's sessions part folded in a second process, so a rebuild uses two cores.

The rebuild's own process reads the log, folds the money part (catalog, balances, journal,
payments, usage buckets, invoices) and writes every table; a second process, forked from it,
reads the sessions part's events (``fold.SESSION_PROCESS_EVENTS``) and the rated usages of a
share of the accounts (``fold.SECOND_SHARE``) of each window from a connection of its own and
folds them (the share's rated usages whole), sends the share's journal lines and balance
changes, then folds the session amounts of the window's other rated usages, which the first
process read, and sends that window's ``SessionWrites``; the first process writes both in
the same transaction as its own rows and the position. A failure in it fails the rebuild
before its window commits.

Only a single-threaded process forks (forking one whose other threads hold locks is unsafe):
where that is not so (PostgreSQL's connection pools run threads), or the log is not in a
SQLite file, the rebuild folds in one process. Starting a fresh interpreter instead was
measured and lost: its start-up (~1 s of imports) cost more than the fold it took over.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import threading
import traceback
from collections.abc import Callable
from decimal import Context, localcontext
from multiprocessing.connection import Connection
from typing import Any

from .fold import Fold, Row, SessionWrites, ShareMismatch

# Reads the window (after, upto] of the log and folds its sessions-part events into the fold.
Reading = Callable[[Fold, int, int], None]


def can_fork() -> bool:
    """Whether this process may fork the second process (Linux, single-threaded)."""
    return "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1


def _serve(conn: Connection, reading: Reading, share: frozenset[str]) -> None:
    """The second process: fold each window it is told of and send its writes at once (the
    rebuild's process takes them when it has written its own part; meanwhile this one's
    send waits on the full pipe, with nothing else to do). ``share``: see ``Fold(share=)``."""
    gc.freeze()  # what it inherited stays out of the collector's sight
    gc.disable()  # and its fold makes no cycles (see rebuild.collector_paused)
    fold = Fold(money=False, share=share)
    try:
        # Exact sums: rated amounts may carry more digits than Decimal's default 28.
        with localcontext(Context(prec=80)):
            while True:
                message = conn.recv()
                if message == "stop":
                    return
                try:
                    reading(fold, *message)
                except ShareMismatch:
                    conn.send(("out of order", None))
                    return
                # The share's journal lines and balance changes first: the rebuild's process
                # writes them while this one folds the rated amounts and makes its rows.
                conn.send(("share", fold.take_share()))
                rated = conn.recv()  # the other rated usages' session amounts
                if rated == "stop":  # the window was given up
                    return
                if not fold.apply_rated(rated):
                    conn.send(("out of order", None))
                    return
                conn.send(("writes", fold.take_session_writes()))
    except EOFError:  # the rebuild's process went away
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class SessionFoldProcess:
    """The rebuild's handle on the forked second process; ``reading`` is inherited by the
    fork, not sent."""

    def __init__(self, reading: Reading, share: frozenset[str] = frozenset()) -> None:
        """``share``: the accounts whose rated usages it folds whole (``fold.SECOND_SHARE``)."""
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, reading, share), name="wispgate-rebuild-sessions",
                                       daemon=True)
        self.process.start()
        child.close()
        self.sender: threading.Thread | None = None
        self.sending_failed: OSError | None = None

    def fold_window(self, after: int, upto: int) -> None:
        """Have it read and fold the notifications after ``after`` up to ``upto``."""
        try:
            self.conn.send((after, upto))
        except OSError:
            raise self._died() from None

    def give_rated(self, rated: list[tuple[int, str, str, str, str]]) -> None:
        """Send the window's rated session amounts (``Fold.take_rated``), from a thread: the
        other process takes them only when it has folded its own events, and this one writes
        its part meanwhile instead of waiting on the full pipe."""
        def send() -> None:
            try:
                self.conn.send(rated)
            except OSError as error:  # it died: ``take`` says so
                self.sending_failed = error

        self.sender = threading.Thread(target=send, name="wispgate-rebuild-rated", daemon=True)
        self.sender.start()

    def take_share(self) -> tuple[list[tuple[Any, ...]], list[Row]] | None:
        """The share's journal lines and balance changes of the window it was given first
        among those not taken yet (``Fold.take_share``; waits for its own fold, not for the
        rated amounts); None when a rated usage was outside its share (the rebuild goes on
        another way, and this process has ended)."""
        return self._receive("share")  # type: ignore[no-any-return]

    def take(self) -> SessionWrites | None:
        """The sessions part's writes of that window (after ``take_share``); None when it
        could not fold the window from the rated amounts given (``Fold.apply_rated``: the
        rebuild goes on another way, and this process has ended)."""
        if self.sender is not None:
            self.sender.join()
            self.sender = None
        return self._receive("writes")  # type: ignore[no-any-return]

    def _receive(self, expected: str) -> Any:
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind == "out of order":
            return None
        if kind != expected:
            raise RuntimeError(f"the rebuild's session fold process failed:\n{value}")
        return value

    def _died(self) -> RuntimeError:
        self.process.join(timeout=1)
        return RuntimeError(f"the rebuild's session fold process died (exit code {self.process.exitcode})")

    def close(self) -> None:
        """Stop the process (at once if it is still folding)."""
        if self.sender is not None:  # a window given up (its rows were not taken)
            self.process.kill()
            self.sender.join()
        with contextlib.suppress(OSError):  # it is gone already
            self.conn.send("stop")
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
