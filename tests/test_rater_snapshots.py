"""The rater takes its snapshots from the aggregates in memory: they must be exactly the
snapshots the application would take by replaying the store, and load back to the same state."""

from __future__ import annotations

import json
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot

from api.bootstrap import Runtime
from domain.ids import nas_sessions_id
from ledger.nas_sessions import NasSessions
from ledger.session import Session

from .support import NAS, record, settle

BASE = 1_795_000_000


def _same_as_replayed(runtime: Runtime, aggregate_id: UUID, versions: list[int]) -> None:
    ledger = runtime.ledger
    assert ledger.snapshots is not None
    taken = list(ledger.snapshots.get(aggregate_id))
    assert [s.originator_version for s in taken] == versions
    for snapshot in taken:
        replayed = Snapshot.take(ledger.repository.get(aggregate_id, version=snapshot.originator_version))
        ours = json.loads(ledger.mapper.transcoder.encode(snapshot.state))
        theirs = json.loads(ledger.mapper.transcoder.encode(replayed.state))
        assert (snapshot.topic, ours) == (replayed.topic, theirs)


@pytest.mark.parametrize(("interval", "versions"), [(3, [3, 6]), (5, [5])])
def test_snapshots_taken_in_a_batch_equal_replayed_ones(runtime: Runtime, interval: int, versions: list[int]) -> None:
    ledger = runtime.ledger
    registry_id = nas_sessions_id(NAS)
    # The NAS's open-session registry: created + one event per batch that opened or closed
    # sessions, and one per Accounting-On/Off. Batches end it at versions 2, 3 and 4; the
    # fourth records the changes before its Accounting-On (5), the restart (6) and the
    # changes after it (7). Every 3 events: 3 is taken from memory at the end of a batch,
    # 6 replayed from the store after it (the restart is not emitted by ledger/emit.py);
    # every 5: 5 is taken from memory as it is emitted, in the middle of the batch.
    ledger.snapshotting_intervals = ledger.snapshotting_intervals | {NasSessions: interval}
    runtime.intake.append([record("start", f"s{n}", at=BASE + n, user=f"u{n}") for n in range(199)])
    settle(runtime)
    runtime.intake.append([record("start", f"t{n}", at=BASE + 1000 + n, user=f"v{n}") for n in range(250)])
    settle(runtime)
    runtime.intake.append([record("start", f"w{n}", at=BASE + 2000 + n, user=f"x{n}") for n in range(5)])
    settle(runtime)
    runtime.intake.append([*(record("start", f"y{n}", at=BASE + 3000 + n, user=f"y{n}") for n in range(5)),
                           record("accounting-on", at=BASE + 3500),
                           *(record("start", f"z{n}", at=BASE + 4000 + n, user=f"z{n}") for n in range(7))])
    settle(runtime)
    _same_as_replayed(runtime, registry_id, versions)
    # A fresh ledger (no cache) loads the latest state through the snapshot.
    ledger.forget_live_sessions()
    ledger.repository.cache = None
    assert ledger.repository.get(registry_id).version == 7
    assert len(ledger.repository.get(registry_id).open) == 7


def test_session_snapshots_taken_in_a_batch_equal_replayed_ones(runtime: Runtime) -> None:
    ledger = runtime.ledger
    # A session: created + one event per record, a snapshot every 100 events. A Start and
    # 98 Interim-Updates end the first batch at version 100 (taken from memory); 150 more
    # pass 200 in the middle of the next batch (taken as the event is emitted).
    start = BASE
    first = [record("start", "long", at=start), *(
        record("interim", "long", at=start + 60 * n, start=start, up=n * 1000, down=n * 5000) for n in range(1, 99))]
    runtime.intake.append(first)
    settle(runtime)
    runtime.intake.append([record("interim", "long", at=start + 60 * n, start=start, up=n * 1000, down=n * 5000)
                           for n in range(99, 249)])
    settle(runtime)
    session_id = Session.create_id(NAS, "long")
    _same_as_replayed(runtime, session_id, [100, 200])
    ledger.forget_live_sessions()
    ledger.repository.cache = None
    session = ledger.repository.get(session_id)
    assert session.version == 250
    assert next(iter(session.incarnations.values()))["output"] == 248 * 5000
