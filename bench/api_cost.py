"""CPU of the `wispgate serve` parent per portal read (balance, usage, sessions), on an idle
`serve` after a small accounting load, read from /proc.

The freshness prober reads balances in the serve parent at up to ~320/s; that parent also
runs the rater, and its threads share one interpreter lock, so each read's CPU is taken from
rating. Wall time moves with the neighbours on a shared machine; CPU per read moves with the
code. Each endpoint is read ``--reads`` times (16 in flight, over ``--accounts`` accounts) per
round; the figure is the median of ``--rounds`` rounds.

`python -m bench.api_cost [--sessions 2000] [--rounds 3] [--reads 320] [--py-spy FILE]`
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

import httpx

from .loadgen import run_load
from .product import WISPGATE, Process, wait_drained, wait_healthy
from .stage_cpu import TICKS, cpu_seconds
from .target import BenchConfig, free_port
from .wispgate_embedded import WispgateEmbedded
from .workload import build_sessions

IN_FLIGHT = 16


def portal_token(env: dict[str, str], account: str) -> str:
    """A portal token of ``account`` (issued through the CLI, as an operator would)."""
    done = subprocess.run([WISPGATE, "token", "create", "--role", "portal", "--account", account,
                           "--label", "api_cost"], env=os.environ | env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


async def cost_per_read(url: str, pid: int, token: str, paths: list[str], reads: int,
                        idle: float = 0.0) -> tuple[float, float]:
    """CPU microseconds per GET of ``paths`` (cycled), ``reads`` GETs: of process ``pid`` less
    what it spends idle (``idle`` CPU seconds per second: its stages' polling), and of its main
    thread alone (uvicorn's event loop; the stages are other threads)."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        await asyncio.gather(*(client.get(p) for p in paths[:IN_FLIGHT]))  # connections open
        before, loop_before = cpu_seconds(pid), thread_cpu_seconds(pid, pid)
        started = time.monotonic()
        done = 0
        while done < reads:
            batch = [paths[(done + i) % len(paths)] for i in range(IN_FLIGHT)]
            answers = await asyncio.gather(*(client.get(p) for p in batch))
            bad = [a for a in answers if a.status_code != 200]
            if bad:
                raise RuntimeError(f"{bad[0].request.url}: {bad[0].status_code} {bad[0].text}")
            done += IN_FLIGHT
        process = cpu_seconds(pid) - before - idle * (time.monotonic() - started)
        return process / done * 1e6, (thread_cpu_seconds(pid, pid) - loop_before) / done * 1e6


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """User + system CPU of one thread of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def idle_rate(pid: int, seconds: float = 3.0) -> float:
    """CPU seconds per second of process ``pid`` while nobody reads."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000, help="the template's accounts")
    parser.add_argument("--loaded", type=int, default=300, help="sessions sent through RADIUS first")
    parser.add_argument("--accounts", type=int, default=100, help="accounts read (the first N of the load)")
    parser.add_argument("--reads", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    parser.add_argument("--only", default="", help="read only the cases whose name contains this")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="FILE",
                        help="also record a py-spy profile (raw, collapsed stacks) of the serve parent")
    args = parser.parse_args()
    config = BenchConfig(sessions=args.sessions, out=args.out)
    target = WispgateEmbedded()
    target.prepare(config)
    assert target.provisioned is not None
    work = config.out / "api_cost"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(target.template / "var", work / "var")
    env = target._env(work / "var", free_port(socket.SOCK_DGRAM), free_port())
    url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
    accounts = list(target.provisioned.accounts.values())[:args.accounts]
    portal = portal_token(env, accounts[0])
    admin = target.provisioned.token
    server = Process(["serve"], env, work / "serve.log")
    server.start()
    profiler = None
    try:
        wait_healthy(url, server, 600.0)  # a loaded machine starts serve slowly
        sessions = build_sessions(args.loaded, config.interims, seed=config.seed, tag="A")
        asyncio.run(run_load("127.0.0.1", int(env["WISPGATE_RADIUS_PORT"]), config.secret, sessions))
        wait_drained(url)
        time.sleep(1.0)
        if args.py_spy is not None:
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.pid), "-r", "250",
                 "-f", "raw", "--nonblocking", "-o", str(args.py_spy)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        cases = {
            "balance (admin token)": (admin, [f"/v1/accounts/{a}/balance" for a in accounts]),
            "balance (portal token)": (portal, [f"/v1/accounts/{accounts[0]}/balance"]),
            "balance via the route (?route)": (admin, [f"/v1/accounts/{a}/balance?route" for a in accounts]),
            "usage (admin, day)": (admin, [f"/v1/accounts/{a}/usage" for a in accounts]),
            "sessions (admin)": (admin, [f"/v1/accounts/{a}/sessions" for a in accounts]),
            "health (5 position reads)": (admin, ["/health"]),
        }
        cases = {name: case for name, case in cases.items() if args.only in name}
        figures: dict[str, list[float]] = {name: [] for name in cases}
        loop: dict[str, list[float]] = {name: [] for name in cases}
        idle: list[float] = []
        for round_ in range(args.rounds):
            idle.append(idle_rate(server.pid))
            for name, (token, paths) in cases.items():  # interleaved, so each sees the same neighbours
                process, main_thread = asyncio.run(cost_per_read(url, server.pid, token, paths, args.reads, idle[-1]))
                figures[name].append(process)
                loop[name].append(main_thread)
            print(f"round {round_}: idle {idle[-1] * 1e3:.0f} ms/s; "
                  + ", ".join(f"{k} {v[-1]:,.0f} ({loop[k][-1]:,.0f})" for k, v in figures.items()), flush=True)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        server.stop()
    print(f"\nserve parent CPU us per GET, median of {args.rounds} rounds of {args.reads} reads ({IN_FLIGHT} in "
          f"flight): the process less its idle CPU (median {statistics.median(idle) * 1e3:.0f} ms/s), and its "
          "main thread (the event loop) alone")
    print(f"  {'':<30} {'process':>8} {'loop':>8}   rounds (process)")
    for name, values in figures.items():
        print(f"  {name:<30} {statistics.median(values):>8,.0f} {statistics.median(loop[name]):>8,.0f}   "
              f"{', '.join(f'{v:,.0f}' for v in values)}")

if __name__ == "__main__":
    main()
