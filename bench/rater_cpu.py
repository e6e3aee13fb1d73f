"""CPU per accounting record of the rater alone, on the freshness load's shape, in one process.

The freshness load (`bench.freshness_cpu`) sends each of 2,000 subscribers a Start, 3
Interim-Updates and a Stop, after a warm-up load of the same shape; `serve`'s rater child takes
them in batches of about ``rate x stage_gather_ms`` (100 at 2,000/s and 50 ms). Here the same
records are appended to the accounting log in group commits, then rated batch by batch
(``rate_step`` with a batch limit), on a warm rater (caches, billing periods, as after the
warm-up); the CPU time of the rating alone is divided by the records. No load generator,
RADIUS or projector shares the figure, so it moves with the rater's code, not the neighbours.

    .venv/bin/python -m bench.rater_cpu [--sessions 2000] [--batch 100] [--runs 3] [--profile FILE]
                                        [--template DIR]

(``--profile`` writes a pyinstrument text tree of the measured rating of the last run;
``--template`` keeps the provisioned store (NAS, plan, accounts) in DIR and copies it for each
run, so runs take seconds rather than a minute: alternate A/B runs many times.)

Instructions (the machine's CPU time moves with its neighbours): the difference between a run
and one that stops before the measured rating (``--baseline``), under
``valgrind --tool=cachegrind --cache-sim=no``, divided by the records.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Tracking

from adapters import followers
from adapters.radius.codec import decode_accounting, encode_accounting_request
from api.bootstrap import build_runtime
from api.settings import Settings
from domain.ids import nas_address_id
from domain.plans import PlanTerms

from .workload import build_sessions

INTAKE_BATCH = 64


def _records(sessions: list[Any], nas_id: str) -> list[Any]:
    """Round by round (every Start, then every first Interim, ...), as the load generator sends."""
    rounds = max(len(s.packets) for s in sessions)
    order = [s.packets[r] for r in range(rounds) for s in sessions if r < len(s.packets)]
    return [decode_accounting(encode_accounting_request(1, b"s", p.attributes), b"s", nas_id=nas_id,
                              received_at=1_795_000_000) for p in order]


def _rate(runtime: Any, batch: int) -> int:
    """Rate everything in the accounting log in batches of ``batch``; returns the batches."""
    batches = 0
    while True:
        position = runtime.ledger.tracked_position("AccountingLog")
        notifications = runtime.intake.recorder.select_notifications(start=position + 1, limit=batch)
        if not notifications:
            return batches
        records = followers.accounting_records(runtime.intake, notifications)
        runtime.ledger.apply_records(records, Tracking("AccountingLog", notifications[-1].id))
        batches += 1


def _provision(data_dir: Path, sessions: int, template: Path | None) -> None:
    """The NAS, the plan and one account per subscriber, in ``data_dir`` (copied from
    ``template`` when it holds them, else made, and kept there when asked)."""
    if template is not None and (template / "done").exists():
        shutil.copytree(template / "var", data_dir, dirs_exist_ok=True)
        return
    runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        ledger = runtime.ledger
        ledger.register_nas(address="127.0.0.1", name="bng", secret="s")
        plan = ledger.create_plan(name="Bench 25", terms=PlanTerms.parse("USD", "25.00", "0.45"), effective_from=0)
        for session in build_sessions(sessions, 3, seed=0, tag="T"):
            ledger.open_account(name=session.username, plan_id=plan.id, usernames=[session.username], opened_at=0)
    finally:
        runtime.close()
    if template is not None:
        shutil.rmtree(template, ignore_errors=True)
        shutil.copytree(data_dir, template / "var")
        (template / "done").write_text(str(sessions))


def one_run(sessions: int, batch: int, seed: int, profile: Path | None,
            template: Path | None = None, baseline: bool = False) -> dict[str, float]:
    data_dir = Path(tempfile.mkdtemp(prefix="wispgate-rater-cpu-"))
    _provision(data_dir, sessions, template)
    runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        ledger = runtime.ledger
        nas_id = str(nas_address_id("127.0.0.1"))  # the Nas aggregate's id
        warm = build_sessions(sessions, 3, seed=seed, tag="W")
        for chunk in _chunks(_records(warm, nas_id)):
            runtime.intake.append(chunk)
        _rate(runtime, 1000)  # the warm-up load: caches filled, the month's billing periods exist
        paced = _records(build_sessions(sessions, 3, seed=seed + 7919, tag="P"), nas_id)
        for chunk in _chunks(paced):
            runtime.intake.append(chunk)
        events_before = ledger.recorder.max_notification_id() or 0
        profiler = None
        if profile is not None:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
        cpu, wall = time.process_time(), time.perf_counter()
        batches = 0 if baseline else _rate(runtime, batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler is not None:
            profiler.stop()
            profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        events = (ledger.recorder.max_notification_id() or 0) - events_before
        n = len(paced)
        return {"cpu us/record": cpu / n * 1e6, "wall us/record": wall / n * 1e6,
                "events/record": events / n, "records/batch": n / max(1, batches)}
    finally:
        runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _chunks(records: list[Any]) -> list[list[Any]]:
    return [records[i:i + INTAKE_BATCH] for i in range(0, len(records), INTAKE_BATCH)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="records per rated batch")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE")
    parser.add_argument("--template", type=Path, default=None, metavar="DIR")
    parser.add_argument("--baseline", action="store_true", help="everything but the measured rating")
    args = parser.parse_args()
    rows = []
    for index in range(args.runs):
        last = index == args.runs - 1
        row = one_run(args.sessions, args.batch, args.seed + index, args.profile if last else None, args.template,
                      args.baseline)
        rows.append(row)
        print(f"run {index}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    print(f"median of {args.runs}: " + ", ".join(
        f"{k} {statistics.median(r[k] for r in rows):,.2f}" for k in rows[0]))


if __name__ == "__main__":
    main()
