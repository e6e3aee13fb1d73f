"""A rebuild window's transaction held by a thread of its own (``projections/window_writer.py``):
journal lines written while the fold goes on (in one process) give the same tables as live
projection, and so does the two-process fold, which writes them after its fold; a
window the fold fails in, or whose position another projector moved, writes nothing of what
was handed over; the writer itself commits, refuses and rolls back as it says."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

from api.bootstrap import Runtime
from ledger import cores
from projections import rebuild
from projections import tables as t
from projections.window_writer import WindowWriter

from .rebuild_support import assert_tables_equal, rebuild_while_another_projector_moves, seeded_traffic, tables


def _streaming(monkeypatch: Any, rng: random.Random, runtime: Runtime, *, two: bool) -> list[int]:
    """Journal lines handed over after every few events, in statements of any size; the
    sessions part in a second process when ``two`` (SQLite only). Returns the list that
    counts the lines handed over."""
    handed: list[int] = []
    insert = WindowWriter.insert

    def counted(self: WindowWriter, table: Any, rows: Any) -> None:
        handed.append(len(rows))
        insert(self, table, rows)

    monkeypatch.setattr(WindowWriter, "insert", counted)
    monkeypatch.setattr(rebuild, "JOURNAL_CHUNK", rng.randint(1, 12))
    monkeypatch.setattr(rebuild, "READ_CHUNK", rng.randint(1, 30))
    monkeypatch.setattr(rebuild, "SQLITE_PARAMETERS", rng.randint(1, 80))
    if two and not runtime.settings.database_url:
        monkeypatch.setattr(rebuild, "PARALLEL_MIN_EVENTS", 0)
        monkeypatch.setattr(cores, "second_core_free", lambda: True)
        monkeypatch.setattr(rebuild, "can_fork", lambda: True)  # earlier tests may have left idle threads
    return handed


@pytest.mark.parametrize("two", [False, True])
def test_journal_lines_written_during_the_fold_give_the_live_tables(
        monkeypatch: Any, runtime: Runtime, two: bool) -> None:
    seed, rng, live, head = seeded_traffic(runtime)
    handed = _streaming(monkeypatch, rng, runtime, two=two)
    for window in (1_000_000, rng.randint(2, 50)):
        runtime.projector.reset()
        handed.clear()
        assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
        # The path under test: lines handed over during a one-process fold, none beside a
        # forked second process.
        assert (sum(handed) > 0) != (two and not runtime.settings.database_url)
        assert_tables_equal(runtime, live, f"seed {seed}, window {window}")
    # Another projector moves the position between two windows: the next window's writer
    # refuses it, the journal lines handed to it are dropped, the rebuild goes on the windowed way.
    rebuild_while_another_projector_moves(runtime, rng, head, live, seed)


def test_a_fold_that_fails_mid_window_writes_nothing_of_it(monkeypatch: Any, runtime: Runtime) -> None:
    """Journal lines already handed to the writer are rolled back with the window when the
    fold fails later in it; the rebuild run again gives the live tables."""
    seed, rng, live, _ = seeded_traffic(runtime)
    handed = _streaming(monkeypatch, rng, runtime, two=False)
    monkeypatch.setattr(rebuild, "JOURNAL_CHUNK", 1)
    monkeypatch.setattr(rebuild, "READ_CHUNK", 1)  # lines handed over after every event
    rated = rebuild.Fold.usage_rated
    calls = [0]
    fail_at = rng.randint(3, 8)

    def failing(self: Any, *args: Any) -> None:
        calls[0] += 1
        if calls[0] == fail_at:
            raise RuntimeError("the fold failed")
        rated(self, *args)

    monkeypatch.setattr(rebuild.Fold, "usage_rated", failing)
    runtime.projector.reset()
    with pytest.raises(RuntimeError, match="the fold failed"):
        runtime.projector.rebuild(runtime.ledger.recorder, window=1_000_000)
    # Lines were handed over before the failure (PostgreSQL's reader gives a window's rows at
    # once: they are handed over after it).
    assert sum(handed) > 0 or runtime.settings.database_url
    assert runtime.projector.position() == 0
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.journal)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(t.balances)).scalar() == 0
    monkeypatch.setattr(rebuild.Fold, "usage_rated", rated)
    runtime.projector.rebuild(runtime.ledger.recorder)
    assert tables(runtime) == live, f"seed {seed}: the rebuild after a failed one differs"


def _journal_row(position: int) -> tuple[Any, ...]:
    return (position, 0, f"usage:{position}", position, "revenue:usage", "1", "USD")


@pytest.mark.parametrize("threaded", [True, False])
def test_the_window_writer_commits_refuses_and_rolls_back(tmp_path: Any, threaded: bool) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    t.journal.create(engine)

    def stored() -> list[int]:
        with engine.connect() as conn:
            return sorted(p for (p,) in conn.execute(select(t.journal.c.position)))

    # Committed: rows handed over and the rest, in one transaction, the rest's result returned.
    writer = WindowWriter(engine, lambda conn: True, rebuild.bulk_insert, threaded=threaded)
    writer.insert(t.journal, [_journal_row(1), _journal_row(2)])
    assert writer.finish(lambda conn: rebuild.bulk_insert(conn, t.journal, [_journal_row(3)]) or "done") == "done"
    assert stored() == [1, 2, 3]
    # Refused by ``start``: nothing written, None.
    writer = WindowWriter(engine, lambda conn: False, rebuild.bulk_insert, threaded=threaded)
    writer.insert(t.journal, [_journal_row(4)])
    assert writer.finish(lambda conn: rebuild.bulk_insert(conn, t.journal, [_journal_row(5)]) or "done") is None
    # Abandoned: rolled back.
    writer = WindowWriter(engine, lambda conn: True, rebuild.bulk_insert, threaded=threaded)
    writer.insert(t.journal, [_journal_row(6)])
    writer.abandon()
    # The rest fails: raised by ``finish``, rolled back.
    writer = WindowWriter(engine, lambda conn: True, rebuild.bulk_insert, threaded=threaded)
    writer.insert(t.journal, [_journal_row(7)])

    def failing(conn: Any) -> None:
        rebuild.bulk_insert(conn, t.journal, [_journal_row(8)])
        raise ValueError("the rest failed")

    with pytest.raises(ValueError, match="the rest failed"):
        writer.finish(failing)
    # An insert fails (a duplicate key): raised by ``finish``, rolled back, the rest not run.
    writer = WindowWriter(engine, lambda conn: True, rebuild.bulk_insert, threaded=threaded)
    writer.insert(t.journal, [_journal_row(9)])
    writer.insert(t.journal, [_journal_row(1)])
    ran: list[bool] = []
    with pytest.raises(Exception, match="UNIQUE"):
        writer.finish(lambda conn: ran.append(True))
    assert not ran
    assert stored() == [1, 2, 3]
    engine.dispose()
