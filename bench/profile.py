"""Where the time goes per accounting record in the embedded mode, stage by stage, in one
process: decode + verify (codec), intake save (accounting log), rating (ledger), projection
(read models). `python -m bench.profile [--sessions N] [--pyinstrument]`.

Provisioning here goes straight to the ledger's commands (it is not what is measured).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.followers import project_step, rate_step
from adapters.radius.codec import decode_accounting, encode_accounting_request
from api.bootstrap import build_runtime
from api.settings import Settings
from domain.plans import PlanTerms

from .workload import build_sessions


def _timed(label: str, work: Callable[[], Any], records: int, profile: bool) -> float:
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    work()
    seconds = time.perf_counter() - started
    # CPU seconds of this process: on a machine shared with other jobs, the figure that
    # moves with the code rather than with the neighbours' load.
    cpu = time.process_time() - cpu_started
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False)[:7000])
    print(f"{label:<34} {seconds:8.2f} s  {seconds / records * 1e6:8.0f} us/record  "
          f"{records / seconds:10,.0f} records/s  cpu {cpu / records * 1e6:6.0f} us/record", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--interims", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="records per intake save (group commit)")
    parser.add_argument("--pyinstrument", action="store_true", help="print a call tree per stage")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wispgate-profile-"))
    runtime = build_runtime(Settings(data_dir=data_dir))
    try:
        ledger = runtime.ledger
        nas = ledger.register_nas(address="127.0.0.1", name="bng", secret="s")
        plan = ledger.create_plan(name="p", terms=PlanTerms.parse("USD", "25", "0.45"), effective_from=0)
        sessions = build_sessions(args.sessions, args.interims, seed=1, tag="P")
        for session in sessions:
            ledger.open_account(name=session.username, plan_id=plan.id, usernames=[session.username], opened_at=0)
        rate, project = rate_step(runtime.intake, ledger), project_step(ledger, runtime.projector)
        while project():  # the provisioning events, so they are not counted below
            pass
        # Round by round, as the load generator sends them.
        rounds = max(len(s.packets) for s in sessions)
        order = [s.packets[r] for r in range(rounds) for s in sessions if r < len(s.packets)]
        packets = [encode_accounting_request(1, b"s", p.attributes) for p in order]
        n = len(packets)
        print(f"{args.sessions} sessions, {n} records, intake batches of {args.batch}")
        records: list[Any] = []
        _timed("decode + verify (codec)", lambda: records.extend(
            decode_accounting(d, b"s", nas_id=str(nas.id), received_at=1_795_000_000) for d in packets),
            n, args.pyinstrument)

        def save() -> None:
            for i in range(0, n, args.batch):
                runtime.intake.append(records[i:i + args.batch])

        def drain(step: Callable[[], int]) -> Callable[[], None]:
            def run() -> None:
                while step():
                    pass
            return run

        events_before = ledger.recorder.max_notification_id() or 0
        _timed("intake save (accounting log)", save, n, args.pyinstrument)
        _timed("rating (ledger, batches of 1000)", drain(rate), n, args.pyinstrument)
        events = (ledger.recorder.max_notification_id() or 0) - events_before
        print(f"  {events} ledger events, {events / n:.2f} per record")
        _timed("projection (read models)", drain(project), n, args.pyinstrument)
    finally:
        runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
