"""The sessions model's RecordApplied handler (the live projector's) against a reference of what
it must do to a session row, on random rows and events (seed printed; WISPGATE_TEST_SEED
replays it): counters added, the latest event time kept, each identifying field replaced only
when the record carries it, the account set when known, the stop time set once."""

from __future__ import annotations

import copy
import os
import random
from types import SimpleNamespace
from typing import Any

from projections.sessions import _SessionBatch

FIELDS = ("username", "framed_ip", "nas_ip", "calling_station_id", "terminate_cause")


def reference(row: dict[str, Any], e: Any) -> None:
    """The handler's rules, written as plainly as possible."""
    row["updated_at"] = max(row["updated_at"], e.event_time)
    row["upload_bytes"] += e.upload_bytes
    row["download_bytes"] += e.download_bytes
    for field in FIELDS:
        if getattr(e, field):
            row[field] = getattr(e, field)
    if e.account_id is not None:
        row["account_id"] = str(e.account_id)
    if e.closes and row["stopped_at"] is None:
        row["stopped_at"] = e.event_time


def random_event(rng: random.Random, session: str, incarnation: str) -> SimpleNamespace:
    def text(name: str) -> str:
        return rng.choice(["", "", f"{name}-{rng.randrange(5)}", "é\x00"])

    return SimpleNamespace(
        originator_id=session, incarnation=incarnation, event_time=int(incarnation) + rng.randrange(-50, 5000),
        upload_bytes=rng.randrange(0, 2**40), download_bytes=rng.randrange(0, 2**40),
        account_id=rng.choice([None, None, "a-1", "a-2"]), closes=rng.random() < 0.2,
        **{field: text(field) for field in FIELDS})


def test_record_applied_updates_rows_as_the_reference_does() -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    for _ in range(200):
        batch = _SessionBatch(conn=None)
        batch.prefetched = True  # every row it needs is in memory (no database)
        sessions = [(f"s{i}", str(1_767_225_600 + 60 * i)) for i in range(rng.randrange(1, 5))]
        for session, incarnation in sessions:  # rows stored earlier (kept or read by prepare)
            batch._loaded({
                "id": f"{session}:{incarnation}", "nas_id": "n", "acct_session_id": session, "username": "u0",
                "account_id": rng.choice([None, "a-0"]), "started_at": int(incarnation),
                "updated_at": int(incarnation) + rng.randrange(0, 3000),
                "stopped_at": rng.choice([None, int(incarnation) + 10]), "upload_bytes": rng.randrange(2**33),
                "download_bytes": rng.randrange(2**33), "amount": "0", "currency": "EUR",
                "framed_ip": rng.choice(["", "10.0.0.1"]), "nas_ip": "", "calling_station_id": "",
                "terminate_cause": rng.choice(["", "User-Request"])})
        expected = {row_id: copy.deepcopy(row) for row_id, row in batch.rows.items()}
        for _ in range(rng.randrange(1, 12)):
            session, incarnation = rng.choice(sessions)
            e = random_event(rng, session, incarnation)
            reference(expected[f"{session}:{incarnation}"], e)
            batch.on_Session_RecordApplied(0, e)
        for row_id, row in expected.items():
            assert batch.rows[row_id] == row, (seed, row_id)
