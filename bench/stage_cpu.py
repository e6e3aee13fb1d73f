"""CPU per accounting record of each process of `wispgate serve`, under the bench's load, for
``projector_process = inline`` and ``separate`` back to back.

On a machine shared with other jobs, wall-clock rates move with the neighbours' load; the CPU
each process spends per record moves with the code. From it follows the pipeline's capacity
when each process has a core of its own: 1 / (CPU per record of the busiest process). Inline,
the parent (API, rater, projector) is one interpreter; separate, the projector is a child.

`python -m bench.stage_cpu [--sessions 2000] [--runs 3] [--modes inline,separate] [--py-spy DIR]`
(the data-directory template is the one `python -m bench` prepares under --out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .loadgen import run_load
from .product import Process, health, wait_drained, wait_healthy
from .target import BenchConfig, child_pids, free_port, role
from .wispgate_embedded import WispgateEmbedded
from .workload import build_sessions

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def system_seconds(pid: int) -> float:
    """System (kernel) CPU of a process (all its threads) so far: socket calls, fsync, ..."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[12]) / TICKS


def drained_at(url: str, poll: float = 1.0) -> float:
    """When everything accepted was rated and projected (to ``poll`` s): polled slowly, since
    each /health request costs the serve parent CPU that would be counted per record."""
    while True:
        checks = health(url)
        if (checks["rated_position"] >= checks["accounting_position"]
                and checks["projected_position"] >= checks["ledger_position"]):
            return wait_drained(url)  # confirms (two equal reads) once there
        time.sleep(poll)


def one_run(target: WispgateEmbedded, config: BenchConfig, mode: str, index: int,
            spy: Path | None = None) -> dict[str, float]:
    """CPU microseconds per record of each process, and the wall-clock rate through every stage."""
    work = config.out / "stage_cpu" / f"{mode}{index}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(target.template / "var", work / "var")
    env = target._env(work / "var", free_port(socket.SOCK_DGRAM), free_port()) | {
        "WISPGATE_PROJECTOR_PROCESS": mode}
    url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
    server = Process(["serve"], env, work / "serve.log")
    server.start()
    try:
        wait_healthy(url, server)
        time.sleep(1.0)  # start-up work (imports, first polls) is not the load's
        pids = {"serve parent": server.pid} | {role(pid): pid for pid in child_pids(server.pid)}
        profiler = None
        if spy is not None:  # where the serve parent's time goes (sampled; costs it no CPU)
            spy.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.pid), "-r", "200",
                 "-f", "raw", "--nonblocking", "-o", str(spy / f"{mode}{index}.raw")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        sessions = build_sessions(config.sessions, config.interims, seed=config.seed + index, tag=f"C{index}")
        started = time.monotonic()
        load = asyncio.run(run_load("127.0.0.1", int(env["WISPGATE_RADIUS_PORT"]), config.secret, sessions,
                                    inflight=config.inflight))
        drained = drained_at(url)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
    finally:
        server.stop()
    records = max(1, load.acknowledged)
    row = {name: (after[name] - before[name]) / records * 1e6 for name in pids}
    row["through every stage, records/s (wall)"] = load.acknowledged / (drained - started)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="inline,separate")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="also record a py-spy profile (raw, collapsed stacks) of each run's serve parent")
    args = parser.parse_args()
    config = BenchConfig(sessions=args.sessions, runs=args.runs, out=args.out)
    target = WispgateEmbedded()
    target.prepare(config)
    modes = args.modes.split(",")
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for index in range(args.runs):
        for mode in modes:  # alternated, so both modes see the same neighbours
            row = one_run(target, config, mode, index, args.py_spy)
            rows[mode].append(row)
            print(f"run {index} {mode}: " + ", ".join(f"{k} {v:,.0f}" for k, v in row.items()), flush=True)
    print(f"\nmedians of {args.runs} runs, {config.records:,} records each (CPU us per record; "
          "capacity = 1e6 / busiest process's us per record, each process on a core of its own)")
    for mode in modes:
        names = sorted({name for row in rows[mode] for name in row})
        medians = {name: statistics.median(row.get(name, 0.0) for row in rows[mode]) for name in names}
        processes = {k: v for k, v in medians.items() if not k.startswith("through")}
        busiest = max(("serve parent", "projector child", "rater child"), key=lambda k: processes.get(k, 0.0))
        print(f"{mode:>9}: " + ", ".join(f"{k} {v:,.0f}" for k, v in medians.items())
              + f"; capacity {1e6 / processes[busiest]:,.0f} records/s ({busiest})")


if __name__ == "__main__":
    main()
