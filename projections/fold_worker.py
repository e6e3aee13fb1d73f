"""The rebuild's sessions part folded in a second process, so a rebuild uses two cores.

The rebuild's own process reads the log, folds the money part (catalog, balances, journal,
payments, invoices) and writes every table; a second process folds the sessions part
(sessions and usage buckets, ``fold.SESSION_EVENTS``) from the rows the first one sends it,
chunk by chunk while it reads, and at the end of each window sends back that window's
``SessionWrites``, which the first process writes in the same transaction as its own rows and
the position. Rows are the log's stored JSON for the hot events and decoded events for the
rare others (``Session.ClosedByNas``), so the second process needs no decoder and no
connection.

The process is forked when the caller is single-threaded (no start-up cost) and spawned
otherwise (forking a process whose other threads hold locks is unsafe; PostgreSQL's
connection pools run threads). A forked process on a SQLite store reads its rows itself,
from its own connection (no rows through the pipe). A failure in it fails the rebuild
before its window commits.
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

import orjson

from .fold import Fold, SessionWrites

# (position, originator id as text, originator version, qualified event name, stored JSON
# for a hot event or the decoded event for a cold one)
FoldRow = tuple[int, str, int, str, Any]


def fold_rows(fold: Fold, rows: list[FoldRow]) -> None:
    """Apply rows to ``fold`` by its hot (stored JSON) or cold (decoded event) rules."""
    hot, cold, loads = fold.hot, fold.cold, orjson.loads
    for position, originator_id, version, name, payload in rows:
        handler = hot.get(name)
        if handler is not None:
            handler(position, originator_id, version, loads(payload))
        else:
            cold[name](position, payload)


def start_method() -> str:
    """"fork" when this process may fork (Linux, single-threaded), "spawn" otherwise."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if "fork" in methods and threading.active_count() == 1 else "spawn"


def _serve(conn: Connection, reading: Callable[[Fold, int, int], None] | None) -> None:
    """The second process: fold what arrives (rows, or a window it reads itself with
    ``reading``); answer each ``None`` with the writes since the last one."""
    gc.freeze()  # what it inherited or imported stays out of the collector's sight
    fold = Fold(money=False)
    try:
        # Exact sums: rated amounts may carry more digits than Decimal's default 28.
        with localcontext(Context(prec=80)):
            while True:
                message = conn.recv()
                if message == "stop":
                    return
                if message is None:
                    conn.send(("writes", fold.take_session_writes()))
                elif message.__class__ is tuple:
                    assert reading is not None
                    reading(fold, *message)
                else:
                    fold_rows(fold, message)
    except EOFError:  # the rebuild's process went away
        return
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class SessionFoldProcess:
    """The parent's handle on the second process. With ``reading`` (a forked process only:
    the callable is inherited, not sent) it reads each window's rows itself, from its own
    connection: ``fold_window``; without, it is sent them: ``feed``."""

    def __init__(self, reading: Callable[[Fold, int, int], None] | None = None) -> None:
        method = start_method()
        if reading is not None and method != "fork":
            raise ValueError("only a forked process can read the log itself")
        context = multiprocessing.get_context(method)
        self.reads = reading is not None
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, reading), name="wispgate-rebuild-sessions",
                                       daemon=True)
        self.process.start()
        child.close()

    def feed(self, rows: list[FoldRow]) -> None:
        """Send rows to fold (in log order)."""
        self._send(rows)

    def fold_window(self, after: int, upto: int) -> None:
        """Have it read and fold the notifications after ``after`` up to ``upto``."""
        self._send((after, upto))

    def _send(self, message: Any) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise self._died() from None

    def take(self) -> SessionWrites:
        """The writes of everything fed since the last call (waits for the fold to get there)."""
        try:
            self.conn.send(None)
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if kind != "writes":
            raise RuntimeError(f"the rebuild's session fold process failed:\n{value}")
        return value  # type: ignore[no-any-return]

    def _died(self) -> RuntimeError:
        self.process.join(timeout=1)
        return RuntimeError(f"the rebuild's session fold process died (exit code {self.process.exitcode})")

    def close(self) -> None:
        """Stop the process (at once if it is still folding)."""
        with contextlib.suppress(OSError):  # it is gone already
            self.conn.send("stop")
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
