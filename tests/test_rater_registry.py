"""A NAS's open-session registry, recorded as one SessionsChanged event per batch: it holds
exactly what one SessionOpened/SessionClosed event per change gave, and always says which
sessions have open incarnations (what an Accounting-On/Off closes)."""

from __future__ import annotations

import random
from typing import Any
from uuid import uuid4

from api.bootstrap import Runtime
from ledger import Ledger
from ledger.nas_sessions import NasSessions
from ledger.session import Session

from .support import record, settle

BASE = 1_795_000_000


def test_one_event_per_batch_equals_one_event_per_change() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    sessions = [uuid4() for _ in range(6)]
    folded, reference = NasSessions(nas_id="nas"), NasSessions(nas_id="nas")
    for _ in range(40):
        changes = []
        for _ in range(rng.randrange(0, 12)):
            session = rng.choice(sessions)
            opened = rng.random() < 0.55  # closes of sessions not open included: they change nothing
            changes.append(("+" if opened else "-") + str(session))
            if opened:
                reference.session_opened(session_id=session)
            else:
                reference.session_closed(session_id=session)
        folded.sessions_changed(changes)
        assert folded.open == reference.open
    # Replaying the stored events gives the same registry.
    events = [ledger.mapper.to_domain_event(ledger.mapper.to_stored_event(e)) for e in folded.collect_events()]
    rebuilt: Any = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert rebuilt.open == reference.open
    assert rebuilt.version == len(events)


def _open_sessions(runtime: Runtime, nas: str, acct_ids: list[str]) -> dict[str, int]:
    found = {}
    for acct_id in acct_ids:
        try:
            session = runtime.ledger.repository.get(Session.create_id(nas, acct_id))
        except Exception:  # noqa: BLE001 - never started
            continue
        if remaining := len(session.open_incarnations()):
            found[str(session.id)] = remaining
    return found


def test_the_registry_names_every_open_session_after_random_batches(runtime: Runtime) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    nases = ["nas-a", "nas-b"]
    acct_ids = [f"s{n}" for n in range(8)]
    clock = BASE
    for _ in range(12):
        batch = []
        for _ in range(rng.randrange(1, 15)):
            clock += rng.randrange(1, 400)
            nas = rng.choice(nases)
            if rng.random() < 0.08:
                batch.append(record(rng.choice(["accounting-on", "accounting-off"]), at=clock, nas=nas))
                continue
            # a session id reused after a reboot starts a second incarnation
            start = clock - rng.choice([0, 0, 100, 5000])
            status = rng.choice(["start", "interim", "interim", "stop"])
            batch.append(record(status, rng.choice(acct_ids), at=clock, start=start, up=rng.randrange(2**33),
                                down=rng.randrange(2**35), user=rng.choice(["alice", "bob", ""]), nas=nas))
        if rng.random() < 0.2 and batch:
            batch.append(rng.choice(batch))  # a retransmission in the same batch
        runtime.intake.append(batch)
        settle(runtime)
        for nas in nases:
            registry = runtime.ledger.repository.get(NasSessions.create_id(nas)) if _exists(runtime, nas) else None
            expected = _open_sessions(runtime, nas, acct_ids)
            assert (registry.open if registry is not None else {}) == expected, nas


def _exists(runtime: Runtime, nas: str) -> bool:
    return bool(runtime.ledger.recorder.select_events(NasSessions.create_id(nas), limit=1))


def test_the_registry_follows_sessions_through_start_interim_and_stop(runtime: Runtime) -> None:
    """Sessions that start, send interims and stop (each record naming its incarnation's own
    start), over random batches, some restarted under the same Acct-Session-Id, some
    records retransmitted or late: after every batch the registry names exactly the open ones (the
    random test above mostly closes incarnations that its Stop itself began)."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    acct_ids = [f"s{n}" for n in range(10)]
    clock = BASE
    running: dict[str, int] = {}  # Acct-Session-Id -> its current incarnation's start
    sent: list[Any] = []
    late: list[Any] = []
    for _ in range(15):
        batch = []
        for _ in range(rng.randrange(1, 12)):
            clock += rng.randrange(1, 60)
            acct_id = rng.choice(acct_ids)
            if acct_id not in running:
                running[acct_id] = clock
                status = "start"
            else:
                status = rng.choice(["interim", "interim", "stop"])
            batch.append(record(status, acct_id, at=clock, start=running[acct_id], up=clock - BASE, nas="nas-a"))
            if status == "stop":
                if rng.random() < 0.5:  # an Interim arriving after the Stop, maybe after a restart
                    late.append(record("interim", acct_id, at=clock - 1, start=running[acct_id], up=clock - BASE - 1,
                                       nas="nas-a"))
                del running[acct_id]
                clock += 300  # a new incarnation of the id starts well apart
        if sent and rng.random() < 0.3:
            batch.append(rng.choice(sent))  # a retransmission
        while late and rng.random() < 0.5:  # the closed incarnation stays closed
            batch.append(late.pop(0))
        sent += batch
        runtime.intake.append(batch)
        settle(runtime)
        registry = runtime.ledger.repository.get(NasSessions.create_id("nas-a"))
        expected = _open_sessions(runtime, "nas-a", acct_ids)
        assert registry.open == expected
        assert len(expected) == len(running)
