"""`python -m bench.long_sessions [--sessions 20] [--interims 1000]`: bytes at rest of the
ledger for long sessions (Interim-Updates 5 minutes apart, SQLite), before and after pruning
superseded snapshots. Sessions that last days are what a WISP's PPPoE/IPoE subscribers have;
the main benchmark's sessions have 5 records each and never reach a snapshot."""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from pathlib import Path

from api.bootstrap import build_runtime
from api.settings import Settings
from ledger.snapshots import prune_snapshots
from tests.support import record, settle

BASE = 1_795_000_000


def sizes(db: Path, records: int) -> dict[str, float]:
    with sqlite3.connect(db) as con:
        found = {table: con.execute(f'SELECT count(*), coalesce(sum(length(state)), 0) FROM "{table}"').fetchone()
                 for table in ("stored_events", "stored_snapshots")}
    return {"events B/record": found["stored_events"][1] / records,
            "snapshots": float(found["stored_snapshots"][0]),
            "snapshots B/record": found["stored_snapshots"][1] / records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--interims", type=int, default=1000)
    args = parser.parse_args()
    records = args.sessions * (args.interims + 1)
    with tempfile.TemporaryDirectory() as scratch:
        runtime = build_runtime(Settings(data_dir=Path(scratch), database_url=""))
        try:
            runtime.intake.append([record("start", f"s{i}", at=BASE, user=f"u{i}") for i in range(args.sessions)])
            for k in range(1, args.interims + 1):
                runtime.intake.append([record("interim", f"s{i}", at=BASE + 300 * k, start=BASE, up=k * 10**7,
                                              down=k * 10**8, user=f"u{i}") for i in range(args.sessions)])
                if k % 50 == 0:
                    settle(runtime)
            settle(runtime)
            before = sizes(Path(scratch) / "ledger.db", records)
            pruned = prune_snapshots(runtime.ledger)
            after = sizes(Path(scratch) / "ledger.db", records)
        finally:
            runtime.close()
    hours = args.interims * 300 / 3600
    print(f"{args.sessions} sessions x {args.interims:,} Interim-Updates ({hours:.0f} h each), {records:,} records")
    print(f"{'':24} {'events B/record':>16} {'snapshots':>10} {'snapshots B/record':>19}")
    for name, row in (("before pruning", before), (f"after ({pruned} pruned)", after)):
        print(f"{name:24} {row['events B/record']:>16,.0f} {row['snapshots']:>10,.0f} "
              f"{row['snapshots B/record']:>19,.0f}")


if __name__ == "__main__":
    main()
