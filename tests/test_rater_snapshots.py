"""The rater takes its snapshots from the aggregates in memory: they must be exactly the
snapshots the application would take by replaying the store, and load back to the same state."""

from __future__ import annotations

import json

from eventsourcing.domain import Snapshot

from api.bootstrap import Runtime
from domain.ids import nas_sessions_id

from .support import NAS, record, settle

BASE = 1_795_000_000


def test_snapshots_taken_in_a_batch_equal_replayed_ones(runtime: Runtime) -> None:
    ledger = runtime.ledger
    registry_id = nas_sessions_id(NAS)
    # The NAS's open-session registry: created + one event per opened session, a snapshot
    # every 200 events. 199 sessions in one batch end it exactly at version 200 (taken from
    # memory); 250 more in the next batch pass 400 mid-batch (taken by replay).
    runtime.intake.append([record("start", f"s{n}", at=BASE + n, user=f"u{n}") for n in range(199)])
    settle(runtime)
    runtime.intake.append([record("start", f"t{n}", at=BASE + 1000 + n, user=f"v{n}") for n in range(250)])
    settle(runtime)
    assert ledger.snapshots is not None
    taken = list(ledger.snapshots.get(registry_id))
    assert [s.originator_version for s in taken] == [200, 400]
    for snapshot in taken:
        replayed = Snapshot.take(ledger.repository.get(registry_id, version=snapshot.originator_version))
        ours = json.loads(ledger.mapper.transcoder.encode(snapshot.state))
        theirs = json.loads(ledger.mapper.transcoder.encode(replayed.state))
        assert (snapshot.topic, ours) == (replayed.topic, theirs)
    # A fresh ledger (no cache) loads the latest state through the snapshot.
    ledger.forget_live_sessions()
    ledger.repository.cache = None
    assert len(ledger.repository.get(registry_id).open) == 449
