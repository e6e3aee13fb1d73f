"""CPU per accounting record of live projection, on a ledger a bench run left behind.

`serve`'s projector child follows the ledger's log in batches (``project_step``: read the
position, select the next notifications, ``ReadModelProjector.process``). This replays a
stored ledger the same way into fresh read models, provisioning untimed, and times the
accounting part with ``time.process_time`` (CPU of this process only: the database is
SQLite in-process, so its work is counted; on PostgreSQL the server's is not). No load
generator, RADIUS child or rater competes, so A/B runs of two versions of the code agree
to a few per cent where the full `bench.stage_cpu` moves by ten.

    python -m bench.projector_cpu [--ledger bench/out/embedded/run0/var/ledger.db] [--batch 250]
        [--runs 5] [--database-url postgresql://...] [--profile FILE.txt] [--limit N]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from adapters import projector_worker
from adapters.persistence import eventstore_env, read_model_engine
from ledger import Ledger
from projections import ReadModelProjector

DEFAULT_LEDGER = Path(__file__).parent / "out" / "embedded" / "run0" / "var" / "ledger.db"
SESSION_TOPICS = ("ledger.session:", "ledger.nas_sessions:", "ledger.billing_period:")


def first_accounting_position(ledger: Ledger) -> int:
    """The first notification made by rating (everything before it is provisioning)."""
    start = 1
    while batch := ledger.recorder.select_notifications(start=start, limit=1000):
        for notification in batch:
            if notification.topic.startswith(SESSION_TOPICS):
                return notification.id
        start = batch[-1].id + 1
    raise SystemExit("the ledger holds no rated accounting records")


def _count(ledger: Ledger, first: int, name: str) -> int:
    """Notifications of ``name`` from ``first`` on (the accounting records projected)."""
    with ledger.recorder.datastore.transaction(commit=False) as c:
        c.execute(f"SELECT count(*) FROM {ledger.recorder.events_table_name} WHERE rowid >= ? AND topic LIKE ?",
                  (first, f"%:{name}"))
        return int(c.fetchone()[0])


def _truncate(path: Path, limit: int) -> None:
    """Keep ``limit`` notifications after provisioning in the copy at ``path``."""
    ledger = Ledger(env=eventstore_env("ledger", data_dir=path.parent, database_url=""))
    try:
        stop = first_accounting_position(ledger) - 1 + limit
        with ledger.recorder.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {ledger.recorder.events_table_name} WHERE rowid > ?", (stop,))
    finally:
        ledger.close()


def _warm_up(engine: object) -> None:
    """What `serve`'s child has done before its first batch and provisioning does not: the
    usage upsert's first build imports SQLAlchemy's dialects (~0.3 s, once per process)."""
    from projections import sessions

    builder = getattr(sessions, "_usage_upsert", None)
    if builder is not None:
        builder(engine.dialect.name)  # type: ignore[attr-defined]


def one_run(ledger: Ledger, work: Path, batch: int, database_url: str, profile: Path | None) -> dict[str, float]:
    """Project provisioning, then time the rest of the log in batches of ``batch``."""
    shutil.rmtree(work, ignore_errors=True)
    engine = read_model_engine(data_dir=work, database_url=database_url)
    projector = ReadModelProjector(engine, ledger.mapper)
    projector.create_tables()
    # As `serve`'s child does once started (older trees: collect and freeze): what exists now
    # is never traversed by the cyclic collector, whose work otherwise grows with everything
    # the process has imported.
    settle = getattr(projector_worker, "settle_collector", None)
    if settle is not None:
        settle()
    else:
        gc.collect()
        gc.freeze()
    if database_url:  # a database kept between runs: emptied
        projector.reset()
    first = first_accounting_position(ledger)
    projector.process(ledger.recorder.select_notifications(start=1, limit=first - 1))
    _warm_up(engine)
    events = records = 0
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    follow = getattr(projector, "follow", None)
    while True:  # what project_step does
        if follow is not None:
            read = follow(ledger.recorder, batch)
            if not read:
                break
            events += read
            continue
        position = projector.position()  # the code before ``follow`` (an A/B against older trees)
        notifications = ledger.recorder.select_notifications(start=position + 1, limit=batch)
        if not notifications:
            break
        projector.process(notifications)
        events += len(notifications)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    records = _count(ledger, first, "Session.RecordApplied")
    if profiler is not None:
        profiler.stop()
        profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    engine.dispose()
    gc.unfreeze()
    records = max(records, 1)
    return {"us/record": cpu / records * 1e6, "us/event": cpu / max(events, 1) * 1e6,
            "events/record": events / records, "wall s": wall, "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    parser.add_argument("--batch", type=int, default=250, help="notifications per step (live: up to 1000)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="", help="read models on PostgreSQL instead of SQLite")
    parser.add_argument("--limit", type=int, default=None,
                        help="project only this many notifications after provisioning (with valgrind: "
                             "the difference of two limits' instruction counts is the projection's)")
    parser.add_argument("--profile", type=Path, default=None, help="pyinstrument text profile of the last run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="projector-cpu-") as tmp:
        store = Path(tmp) / "ledger"
        store.mkdir()
        shutil.copy(args.ledger, store / "ledger.db")  # never touch the bench's own copy
        if args.limit is not None:
            _truncate(store / "ledger.db", args.limit)
        ledger = Ledger(env=eventstore_env("ledger", data_dir=store, database_url=""))
        try:
            rows = []
            for index in range(args.runs):
                last = index == args.runs - 1
                row = one_run(ledger, Path(tmp) / f"rm{index}", args.batch, args.database_url,
                              args.profile if last else None)
                rows.append(row)
                print(f"run {index}: " + ", ".join(f"{k} {v:,.1f}" for k, v in row.items()), flush=True)
        finally:
            ledger.close()
    medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median of {args.runs}: " + ", ".join(f"{k} {v:,.1f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
