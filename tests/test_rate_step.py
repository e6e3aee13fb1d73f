"""The rater reads accounting-log records straight from their stored JSON (orjson); on seeded
random records, odd attributes included, it must read exactly what the mapper decodes."""

from __future__ import annotations

import random

from adapters.followers import accounting_records
from api.bootstrap import Runtime
from domain.accounting import AccountingRecord

from .support import record

ODD = ["", "é", "\x00\x1f\"\\", "\u2028", "𝄞", "_type_", "_data_", "NaN", "1e400"]


def test_records_read_from_the_stored_json_equal_the_mapper_s(runtime: Runtime) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    records = []
    for n in range(300):
        extra: dict[str, str] = {}
        for _ in range(rng.randrange(3)):
            extra[rng.choice(ODD) + str(rng.randrange(3))] = rng.choice(ODD)
        if rng.random() < 0.1:
            extra["_type_"] = "uuid_hex"  # a key eventsourcing's decoder looks at
        records.append(record(rng.choice(["start", "interim", "stop"]), f"s{n}{rng.choice(ODD)}",
                              at=1_795_000_000 + n, up=rng.randrange(2**64), down=rng.randrange(2**64),
                              user=rng.choice(ODD), extra=extra))
    runtime.intake.append(records)
    stored = runtime.intake.recorder.select_notifications(start=1, limit=1000)
    assert len(stored) == len(records)
    via_mapper = [AccountingRecord.from_dict(runtime.intake.mapper.to_domain_event(n).record) for n in stored]
    assert accounting_records(runtime.intake, stored) == via_mapper
    assert sorted(via_mapper, key=lambda r: r.idempotency_key()) == sorted(records, key=lambda r: r.idempotency_key())
