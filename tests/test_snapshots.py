"""Superseded snapshots are deleted (bytes at rest stay bounded for long sessions); the
aggregates load to exactly the state their events replay to, before and after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.bootstrap import Runtime
from domain.ids import session_id
from ledger.session import Session
from ledger.snapshots import prune_snapshots

from .support import NAS, ingest, record

T = 1_795_000_000


def state(runtime: Runtime, aggregate: Session) -> dict[str, object]:
    encoded = runtime.ledger.mapper.transcoder.encode(dict(vars(aggregate)))
    return dict(json.loads(encoded))


def test_pruning_keeps_the_latest_snapshot_and_the_same_state(runtime: Runtime) -> None:
    interims = [record("interim", "long", at=T + 300 * k, start=T, up=k * 10**6, down=k * 10**7)
                for k in range(1, 351)]
    ingest(runtime, record("start", "long", at=T), *interims[:150])
    ingest(runtime, *interims[150:])
    ledger = runtime.ledger
    assert ledger.snapshots is not None
    sid = session_id(NAS, "long")
    assert [s.originator_version for s in ledger.snapshots.get(sid)] == [100, 200, 300]
    ledger.repository.cache = None
    before = state(runtime, ledger.repository.get(sid))

    assert prune_snapshots(ledger) >= 2
    assert [s.originator_version for s in ledger.snapshots.get(sid)] == [300]
    assert prune_snapshots(ledger) == 0
    ledger.forget_live_sessions()
    after = state(runtime, ledger.repository.get(sid))
    replayed = Session.__new__(Session)
    for event in ledger.events.get(sid):
        replayed = event.mutate(None if event.originator_version == 1 else replayed)
    assert before == after == state(runtime, replayed)
    # Rating continues on the pruned store.
    ingest(runtime, record("stop", "long", at=T + 300 * 351, start=T, up=351 * 10**6, down=351 * 10**7))
    assert ledger.repository.get(sid).incarnations[str(T)]["closed_at"] == T + 300 * 351


def test_prune_command(tmp_path: Path) -> None:
    import os

    env = os.environ | {"WISPGATE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).with_name("wispgate")), "snapshots", "prune"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "deleted 0 superseded snapshots" in done.stdout
