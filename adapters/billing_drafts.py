"""Drafting a billing run's batches in a second process, while this one issues and projects.

Drafting a batch (reading its accounts, billing periods and earlier invoices, pricing the
invoices) is about half of a run's CPU, and it only reads the store; numbering, recording and
projecting the invoices is the other half. With a drafting process one batch ahead, a run
uses two cores: the drafts come back as plain data (``ledger.billing.DraftedBatch``), and
this process numbers and records them in order, exactly as it would have drafted them itself
(``tests/test_billing_projection.py`` compares both). Batches hold disjoint accounts, so
drafting the next one while this one is recorded reads nothing this run is writing.

The drafting process is ``python -m adapters.billing_drafts`` on a socket pair, started like
serve's children (``adapters/child_process.py``: it dies with its parent). A drafted batch
(about 3 MB pickled for 1,000 invoices) is handed over in a file of a scratch directory, the
socket carrying only its name: sent through the socket, it filled the socket's buffer (a few
hundred KB) and the drafting process waited, blocked in ``send``, until this one read it, which
a busy recording process does late (about half of the drafting process's time at 10,000
accounts went to that wait).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from uuid import UUID

from adapters.child_process import child_main, spawn
from api.settings import Settings
from ledger.billing import DraftedBatch

DraftHere = Callable[[list[UUID], frozenset[str]], DraftedBatch]


def drafted_ahead(settings: Settings, period: str, batches: Sequence[list[UUID]], *, at: int,
                  carried: Mapping[str, Mapping[str, str]], known: frozenset[str],
                  ahead: int = 3, draft_here: DraftHere | None = None) -> Iterator[DraftedBatch]:
    """The batches drafted by a second process that keeps ``ahead`` batches in flight, in
    order; with ``draft_here`` (drafting a batch in this process, given its known accounts),
    a batch whose draft is not back yet when asked for is not waited for: this process
    drafts the last batch not sent yet itself (so it comes out of order), and neither
    process idles while the other has work. Each batch is only given the ``known`` accounts
    that are in it. A failure in the drafting process is raised here."""
    scratch = tempfile.TemporaryDirectory(prefix="wispgate-drafts-", dir=_scratch_root())
    process, ours, conn = spawn("adapters.billing_drafts")
    try:
        conn.send((settings, dict(carried), scratch.name))
        waiting = deque(batches)  # not sent yet; the drafting process takes from the front
        in_flight = 0
        while waiting or in_flight:
            while waiting and in_flight < ahead:
                batch = waiting.popleft()
                conn.send((period, batch, at, frozenset(str(a) for a in batch) & known))
                in_flight += 1
            if draft_here is not None and waiting and not conn.poll():
                batch = waiting.pop()
                yield draft_here(batch, frozenset(str(a) for a in batch) & known)
                continue
            answer = conn.recv()
            in_flight -= 1
            if isinstance(answer, BaseException):
                raise answer
            yield _taken(answer)
    finally:
        conn.close()
        ours.close()  # the child reads EOF and exits
        process.wait(timeout=30)
        scratch.cleanup()


# Where the batch files go unless a temporary directory is chosen (TMPDIR, tempfile.tempdir):
# a memory file system. In the temporary directory on the disk's file system, their write-back
# held up the run's synced SQLite commits (100,000 accounts: 93.8 s of wall against 62.6 s with
# the files here, same tree, load ~4; docs/readme/perf-billing.md).
MEMORY_SCRATCH = "/dev/shm"
MEMORY_SCRATCH_FREE = 256 * 2**20  # a few batches of ~3 MB, with room to spare


def _scratch_root() -> str | None:
    """MEMORY_SCRATCH when no temporary directory is chosen and it is there, writable and
    has room; None (the temporary directory) otherwise."""
    if tempfile.tempdir is not None or os.environ.get("TMPDIR"):
        return None
    try:
        usage = os.statvfs(MEMORY_SCRATCH)
    except OSError:
        return None
    if not os.access(MEMORY_SCRATCH, os.W_OK) or usage.f_bavail * usage.f_frsize < MEMORY_SCRATCH_FREE:
        return None
    return MEMORY_SCRATCH


def _taken(name: str) -> DraftedBatch:
    """The batch the drafting process wrote to the file ``name``, which is removed."""
    path = Path(name)
    try:
        drafted: DraftedBatch = pickle.loads(path.read_bytes())  # noqa: S301 - our own child wrote it
    finally:
        path.unlink(missing_ok=True)
    return drafted


def _serve(conn: Connection) -> int:
    """In the drafting process: a Ledger on the run's store, then one DraftedBatch per batch
    asked for, written to a file of the parent's scratch directory whose name is sent (or
    the exception drafting raised, sent), until the parent closes the connection."""
    from adapters.persistence import eventstore_env
    from ledger.application import Ledger

    settings, carried, scratch = conn.recv()
    ledger = Ledger(env=eventstore_env("ledger", data_dir=settings.data_dir, database_url=settings.database_url))
    try:
        answered = 0
        while True:
            try:
                period, batch, at, known = conn.recv()
            except EOFError:
                return 0
            answered += 1
            try:
                drafted = ledger.draft_batch(period, batch, at=at, carried=carried, known_invoiced=known)
                path = os.path.join(scratch, f"batch-{answered}.pickle")
                with open(path, "wb") as file:
                    pickle.dump(drafted, file, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001 - the parent raises it
                conn.send(error)
            else:
                conn.send(path)
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    return child_main(sys.argv[1:] if argv is None else argv, _serve)


__all__ = ["drafted_ahead"]

if __name__ == "__main__":
    sys.exit(main())
