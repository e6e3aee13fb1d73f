"""ledger/batch_record.py: a rated batch's events, position and snapshots recorded in one
commit give exactly the rows eventsourcing's recorders give, in the same order, atomically."""

from __future__ import annotations

import random
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking

from adapters.persistence import eventstore_env
from ledger import Ledger
from ledger.batch_record import insert_rows, record_batch


def _ledger(path: Path) -> Ledger:
    path.mkdir()
    return Ledger(env=eventstore_env("ledger", data_dir=path, database_url=""))


def _events(rng: random.Random, count: int) -> list[StoredEvent]:
    ids = [uuid4() for _ in range(max(1, count // 3))]
    versions = dict.fromkeys(ids, 0)
    events = []
    for _ in range(count):
        originator = rng.choice(ids)
        versions[originator] += 1
        state = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        events.append(StoredEvent(originator, versions[originator], f"topic:{rng.randrange(5)}", state))
    return events


def _rows(ledger: Ledger) -> list[tuple[int, object, int, str, bytes]]:
    return [(n.id, n.originator_id, n.originator_version, n.topic, bytes(n.state))
            for n in ledger.recorder.select_notifications(start=1, limit=100_000)]


def _snapshot_rows(ledger: Ledger) -> list[tuple[object, int, str, bytes]]:
    assert ledger.snapshots is not None
    with ledger.snapshots.recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(f"SELECT * FROM {ledger.snapshots.recorder.events_table_name} "
                       "ORDER BY originator_id, originator_version")
        return [(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
                for r in cursor.fetchall()]


def test_batches_equal_the_recorders_own_inserts(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    fast, reference = _ledger(tmp_path / "fast"), _ledger(tmp_path / "reference")
    assert fast.snapshots is not None and reference.snapshots is not None
    try:
        position = 0
        for _ in range(12):
            # lengths across every chunk size (256, 64, 16, 4, 1) and none at all
            events = _events(rng, rng.choice([0, 1, 3, 4, 5, 17, 63, 64, 65, 255, 256, 257, 600]))
            snapshots = _events(rng, rng.randrange(4))
            position += rng.randrange(1, 50)
            tracking = Tracking("AccountingLog", position)
            record_batch(fast.recorder, events, tracking, fast.snapshots.recorder, snapshots)
            reference.recorder.insert_events(events, tracking=tracking)
            reference.snapshots.recorder.insert_events(snapshots)
        assert _rows(fast) == _rows(reference)
        assert _snapshot_rows(fast) == _snapshot_rows(reference)
        assert fast.tracked_position("AccountingLog") == reference.tracked_position("AccountingLog") == position
    finally:
        fast.close()
        reference.close()


def test_a_failed_batch_records_nothing(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "store")
    assert ledger.snapshots is not None
    try:
        first = _events(random.Random(1), 10)
        record_batch(ledger.recorder, first, Tracking("AccountingLog", 5), ledger.snapshots.recorder, first[:1])
        before, snapshots_before = _rows(ledger), _snapshot_rows(ledger)
        # the last event repeats an (id, version) already stored: the whole batch is refused
        again = [*_events(random.Random(2), 300), first[-1]]
        with pytest.raises(IntegrityError):
            record_batch(ledger.recorder, again, Tracking("AccountingLog", 9), ledger.snapshots.recorder,
                         _events(random.Random(3), 2))
        # a position at or below the recorded one is refused too, events and all
        with pytest.raises(IntegrityError):
            record_batch(ledger.recorder, _events(random.Random(4), 5), Tracking("AccountingLog", 5))
        assert _rows(ledger) == before
        assert _snapshot_rows(ledger) == snapshots_before
        assert ledger.tracked_position("AccountingLog") == 5
    finally:
        ledger.close()


def test_a_snapshot_left_from_an_earlier_log_is_replaced(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "store")
    assert ledger.snapshots is not None
    try:
        old = _events(random.Random(5), 1)[0]
        ledger.snapshots.recorder.insert_events([old])
        new = StoredEvent(old.originator_id, old.originator_version, old.topic, b"new state")
        record_batch(ledger.recorder, [], Tracking("AccountingLog", 1), ledger.snapshots.recorder, [new])
        assert [row[3] for row in _snapshot_rows(ledger)] == [b"new state"]
    finally:
        ledger.close()


def test_rows_are_inserted_in_order(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "store")
    try:
        events = _events(random.Random(6), 345)
        with ledger.recorder.datastore.transaction(commit=True) as cursor:
            insert_rows(cursor, ledger.recorder.events_table_name, events)
        assert [(r[1], r[2]) for r in _rows(ledger)] == [(e.originator_id, e.originator_version) for e in events]
    finally:
        ledger.close()
