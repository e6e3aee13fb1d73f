"""A rebuild window's transaction, held by a thread of its own while the window is folded.

Journal lines are final once folded (one per posting, never changed), and they are most of
what a rebuild writes (32,000 of the bench store's ~46,000 rows). The window's writer opens
the transaction when the window starts (the lock on the position, the position checked as
``FastRebuild`` does it), inserts the journal lines handed to it while the fold goes on, and,
when the fold ends, writes the rest and commits, all in that one transaction: the tables and
the position are the same as when everything was written after the fold. The databases'
drivers leave the interpreter lock while a statement runs, so the inserts go on beside the
fold (on the second core, which the rebuild's sessions process leaves idle part of the time).

The connection is used by the writer's thread only; the folding thread hands it rows through
a queue and does not touch them afterwards. Exactly one of ``finish`` or ``abandon`` ends a
writer (both wait for its thread).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from decimal import Context, localcontext
from typing import Any

from sqlalchemy import Connection, Engine, Table


class _Abandoned(Exception):
    """Roll the window back (nothing of it is written)."""


_ABANDON = object()


class WindowWriter:
    """One window's transaction in its own thread: ``insert`` final rows during the fold,
    then ``finish`` with the rest."""

    def __init__(self, engine: Engine, start: Callable[[Connection], bool],
                 insert: Callable[[Connection, Table, Sequence[tuple[Any, ...]]], None], *,
                 threaded: bool = True) -> None:
        """``start(conn)`` runs first in the transaction and says whether the window may be
        written (False: everything handed over is dropped and ``finish`` returns None);
        ``insert(conn, table, rows)`` writes rows handed over with ``insert``. Not
        ``threaded``: the whole transaction runs in ``finish``, in the caller's thread."""
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._result: Any = None
        self._error: BaseException | None = None
        self._args = (engine, start, insert)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._serve, args=self._args, name="wispgate-rebuild-writer",
                                            daemon=True)
            self._thread.start()

    def insert(self, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (tuples in the table's column order, final) into ``table`` in the
        window's transaction, soon; the caller must not change them afterwards."""
        self._queue.put((table, rows))

    def finish(self, rest: Callable[[Connection], Any]) -> Any:
        """Run ``rest(conn)`` in the window's transaction (in the writer's thread, in an
        80-digit decimal context) and commit; its result, or None when ``start`` refused the
        window. An exception from any of it is raised here, after the rollback."""
        self._queue.put(rest)
        if self._thread is not None:
            self._thread.join()
        else:
            self._serve(*self._args)
        if self._error is not None:
            raise self._error
        return self._result

    def abandon(self) -> None:
        """Roll the window back (the fold failed)."""
        if self._thread is None:  # nothing begun
            self._drain()
            return
        self._queue.put(_ABANDON)
        self._thread.join()

    def _serve(self, engine: Engine, start: Callable[[Connection], bool],
               insert: Callable[[Connection, Table, Sequence[tuple[Any, ...]]], None]) -> None:
        try:
            # Exact sums, as in the folding thread (decimal contexts are per thread).
            with localcontext(Context(prec=80)), engine.begin() as conn:
                writable = start(conn)
                while True:
                    item = self._queue.get()
                    if item is _ABANDON or (callable(item) and not writable):
                        raise _Abandoned
                    if callable(item):
                        self._result = item(conn)
                        return
                    if writable:
                        insert(conn, *item)
        except _Abandoned:
            pass
        except BaseException as error:  # handed to the caller by ``finish``
            self._error = error
        finally:
            # Nothing the folding thread hands over after a failure is kept waiting.
            self._drain()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
