"""Where the CPU goes while `wispgate serve` is held at the freshness load (paced records/s
with the portal prober reading balances), per process and per thread of the serve parent.

At 2,000 records/s on two cores everything on the machine (the load generator and prober in
this process, the RADIUS child, the serve parent's rater, enforcer, chainer and API, the
projector child) must fit in 1,000 us of CPU per record, or the stages fall behind and
freshness grows with the length of the load. The serve parent's stage threads carry their
names in the kernel (``wg-rater``...), so /proc gives each one's CPU; its main thread is the
API (uvicorn's event loop).

`python -m bench.freshness_cpu [--sessions 2000] [--runs 3] [--rate 2000] [--seconds 5]
[--variant NAME:WISPGATE_X=1,... ...]` (variants of serve's settings, alternated run by run)
(the data-directory template is the one `python -m bench` prepares under --out).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import statistics
import time
from dataclasses import replace
from pathlib import Path

from .freshness import run_freshness
from .loadgen import run_load
from .product import Process, wait_drained, wait_healthy
from .stage_cpu import TICKS, cpu_seconds, system_seconds
from .target import BenchConfig, child_pids, free_port, role
from .wispgate_embedded import WispgateEmbedded
from .workload import build_sessions


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of ``pid`` by kernel name (same names summed)."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
    return found


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(target: WispgateEmbedded, config: BenchConfig, index: int,
            settings: dict[str, str] | None = None) -> dict[str, float]:
    """Freshness p50/p99 (ms) and CPU microseconds per acknowledged record of each process
    (its system share) and of each thread of a process that has several, over the paced load
    and the draining of what it left behind (the bench client: over the load alone)."""
    assert target.provisioned is not None
    work = config.out / "freshness_cpu" / f"run{index}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(target.template / "var", work / "var")
    env = target._env(work / "var", free_port(socket.SOCK_DGRAM), free_port()) | (settings or {})
    url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
    server = Process(["serve"], env, work / "serve.log")
    server.start()
    try:
        wait_healthy(url, server, 600.0)  # a loaded machine starts serve slowly
        # As in `python -m bench`, the paced load follows a full unpaced one (the same
        # subscribers): caches are warm and the month's billing periods exist.
        warm = build_sessions(config.sessions, config.interims, seed=config.seed + index, tag=f"W{index}")
        asyncio.run(run_load("127.0.0.1", int(env["WISPGATE_RADIUS_PORT"]), config.secret, warm,
                             inflight=config.inflight))
        wait_drained(url)
        time.sleep(1.0)
        pids = {"serve parent": server.pid} | {role(pid): pid for pid in child_pids(server.pid)}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        threads_before = {name: thread_cpu(pid) for name, pid in pids.items()}
        system_before = {name: system_seconds(pid) for name, pid in pids.items()}
        mine_before = own_cpu()
        load, (p50, p99, samples) = run_freshness(
            url, int(env["WISPGATE_RADIUS_PORT"]), config, target.provisioned, tag=f"P{index}")
        mine = own_cpu() - mine_before
        # Read once every stage has worked off what the load left behind: a stage that fell
        # behind (the projector, usually) would otherwise be counted short.
        wait_drained(url)
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        threads_after = {name: thread_cpu(pid) for name, pid in pids.items()}
        system_after = {name: system_seconds(pid) for name, pid in pids.items()}
    finally:
        server.stop()
    records = max(1, load.acknowledged)
    row = {"freshness p50 ms": p50 * 1000, "freshness p99 ms": p99 * 1000, "records/s offered": load.rate,
           "bench client (loadgen + prober)": mine / records * 1e6}
    row |= {name: (after[name] - before[name]) / records * 1e6 for name in pids}
    for process, threads in threads_after.items():
        row[f"  {process}: of which system"] = (system_after[process] - system_before[process]) / records * 1e6
        if len(threads) < 2:
            continue
        for name, seconds in threads.items():
            spent = seconds - threads_before[process].get(name, 0.0)
            if spent > 0:
                row[f"  {process} thread {name}"] = spent / records * 1e6
    row["samples"] = samples
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="serve environment of one variant (e.g. gather0:WISPGATE_STAGE_GATHER_MS=0); "
                             "variants are run alternately and reported side by side")
    args = parser.parse_args()
    config = replace(BenchConfig(sessions=args.sessions, runs=args.runs, out=args.out),
                     freshness_rate=args.rate, freshness_seconds=args.seconds)
    target = WispgateEmbedded()
    target.prepare(config)
    variants = dict(_variant(text) for text in args.variant) or {"as configured": {}}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for index in range(args.runs):
        for name, settings in variants.items():  # alternated: each variant sees the same neighbours
            row = one_run(target, config, index, settings)
            rows[name].append(row)
            print(f"run {index} {name}: " + ", ".join(f"{k.strip()} {v:,.0f}" for k, v in row.items()), flush=True)
    print(f"\nmedians of {args.runs} runs at {args.rate:,.0f} records/s for {args.seconds:g} s "
          "(CPU: microseconds per acknowledged record)")
    names = list(dict.fromkeys(name for runs in rows.values() for row in runs for name in row))
    print(f"  {'':<40}" + "".join(f"{variant[:14]:>16}" for variant in variants))
    for name in names:
        print(f"  {name:<40}" + "".join(
            f"{statistics.median(row.get(name, 0.0) for row in rows[variant]):>16,.0f}" for variant in variants))


def _variant(text: str) -> tuple[str, dict[str, str]]:
    """``name:KEY=VALUE,KEY=VALUE`` -> (name, settings)."""
    name, _, assignments = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in assignments.split(",") if pair)

if __name__ == "__main__":
    main()
