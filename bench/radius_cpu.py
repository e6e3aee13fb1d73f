"""CPU per acknowledged record of the RADIUS child alone, under the bench's load.

The durable-ack ingest row of ``python -m bench`` is set by the RADIUS child's CPU per record
(64 requests in flight: the rate is 64 / ack latency). This harness runs that child exactly as
``wispgate serve`` does (``adapters.radius.worker`` through ``RadiusWorker``, its own
AccountingLog on SQLite, its NAS registry read from the read models) with nothing else of
``serve`` beside it, drives it with the bench's load generator and reads its CPU from /proc:
per process and per thread (the event loop vs the ``radius-writer`` thread that commits),
plus the group-commit shape (records per commit) from its metrics. Every acknowledged record
is checked to be in the log afterwards.

Variants run alternately, each a PYTHONPATH the child is started with (a git worktree of older
code gives an A/B: ``--variant base:/tmp/wt-base --variant new:.``).

``python -m bench.radius_cpu [--sessions 2000] [--runs 3] [--rate R] [--variant NAME:PATH ...] [--py-spy DIR]``
(``--rate 2000``: paced as in the freshness load, where commits are small)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .loadgen import run_load
from .stage_cpu import system_seconds
from .target import free_port
from .workload import NAS_IP, build_sessions

TICKS = os.sysconf("SC_CLK_TCK")
SECRET = "bench-secret"


def _cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the main thread (the event loop: receive, decode, answer) and of
    the others together (the writer thread's insert and commit, the NAS table's refresh)."""
    out = {"loop": 0.0, "threads": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out["loop" if task.name == str(pid) else "threads"] += _cpu(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
    return out


def _provision(data_dir: Path) -> None:
    """Read-model tables with one NAS (the load generator's address and secret)."""
    from sqlalchemy import insert

    from adapters.persistence import read_model_engine
    from projections import tables

    engine = read_model_engine(data_dir=data_dir, database_url="")
    tables.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(tables.nas).values(
            id="00000000-0000-0000-0000-0000000000aa", address=NAS_IP, name="bench", secret=SECRET,
            vendor="generic", require_message_authenticator=False, site="", coa_port=3799, retired=False))
    engine.dispose()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def one_run(pythonpath: str, sessions: int, interims: int, inflight: int, seed: int, tag: str,
            spy: Path | None, timeout: float = 2.0, close_timeout: float = 15.0,
            rate: float | None = None, commit_delay_ms: int | None = None) -> dict[str, float]:
    """Start the RADIUS child on a fresh store, warm it up, measure one load; figures per record."""
    from adapters.radius.worker import RadiusWorker
    from api.logs import configure
    from api.settings import Settings

    with tempfile.TemporaryDirectory(prefix="radius-cpu-") as tmp:
        data_dir = Path(tmp) / "var"
        _provision(data_dir)
        port = free_port(2)  # SOCK_DGRAM
        settings = Settings(data_dir=data_dir, radius_port=port, log_level="warning", database_url="")
        if commit_delay_ms is not None:
            settings = settings.with_overrides(radius_commit_delay_ms=commit_delay_ms)
        failures: list[str] = []
        saved, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
        # The child's code: ``python -m`` puts the working directory first on its path.
        os.environ["PYTHONPATH"] = pythonpath
        os.chdir(pythonpath)
        try:
            worker = RadiusWorker(settings, on_durable=lambda: None, on_failed=failures.append,
                                  configure_logging=configure)
            worker.launch()
            error = worker.start()
        finally:
            os.chdir(cwd)
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        if error is not None:
            raise SystemExit(f"the RADIUS child did not start: {error}")
        try:
            assert worker.process is not None
            pid = worker.process.pid
            warm = build_sessions(200, interims, seed=seed + 1, tag=f"{tag}w")
            asyncio.run(run_load("127.0.0.1", port, SECRET, warm, inflight=inflight, timeout=timeout))
            time.sleep(0.3)
            load_sessions = build_sessions(sessions, interims, seed=seed, tag=tag)
            profiler = None
            if spy is not None:
                spy.mkdir(parents=True, exist_ok=True)
                profiler = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-r", "250",
                     "-f", "raw", "--gil", "-o", str(spy / f"{tag}.raw")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            metrics_before = worker.metrics_text()
            before, threads_before = _cpu(Path(f"/proc/{pid}/stat")), thread_cpu(pid)
            system_before = system_seconds(pid)
            load = asyncio.run(run_load("127.0.0.1", port, SECRET, load_sessions, inflight=inflight,
                                        timeout=timeout, rate=rate))
            after, threads_after = _cpu(Path(f"/proc/{pid}/stat")), thread_cpu(pid)
            system = system_seconds(pid) - system_before
            metrics_after = worker.metrics_text()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait()
        finally:
            worker.close(timeout=close_timeout)
        acked = load.acknowledged
        expected = sum(len(s.packets) for s in warm) + sum(len(s.packets) for s in load_sessions)
        with sqlite3.connect(data_dir / "accountinglog.db") as conn:
            table = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%events'"
                                 ).fetchone()[0]
            stored = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        if not acked:
            return {}
        if load.failed or stored != expected:
            raise SystemExit(f"lost records: {load.failed} failed, {stored} stored of {expected}")
        batches = (_metric(metrics_after, "wispgate_radius_batch_records_count")
                   - _metric(metrics_before, "wispgate_radius_batch_records_count"))
        per_thread = {name: (threads_after.get(name, 0.0) - threads_before.get(name, 0.0)) * 1e6 / acked
                      for name in threads_after}
        return {"us_per_record": (after - before) * 1e6 / acked, "rate": load.rate,
                "p50_ms": load.percentile(0.5) * 1e3, "records_per_commit": acked / batches if batches else 0.0,
                "loop_us": per_thread["loop"], "writer_us": per_thread["threads"],
                "kernel_us": system * 1e6 / acked,
                "retransmissions": load.retransmissions}


def instructions(pythonpath: str, sessions: int, interims: int, inflight: int, seed: int, tag: str) -> int:
    """Instructions (user space, all threads) the RADIUS child runs from its start to its exit
    with a warm-up and ``sessions`` sessions of load, counted by valgrind's cachegrind: the
    difference between two sizes is per record, independent of the machine's other load."""
    import adapters.child_process as child_process
    import adapters.radius.worker as worker_module

    out = Path(tempfile.mkstemp(prefix="radius-ir-")[1])
    real_popen = child_process.subprocess.Popen

    def under_valgrind(args: list[str], **kwargs: Any) -> Any:
        process = real_popen(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--log-file=/dev/null",
                              f"--cachegrind-out-file={out}", *args], **kwargs)
        # The supervisor gives a closing child 5 s before killing it; under valgrind on a loaded
        # machine its last commit and exit take longer, and a killed child writes no counts.
        real_wait = process.wait
        process.wait = lambda timeout=None: real_wait(None if timeout is None else max(timeout, 300.0))
        return process

    child_process.subprocess.Popen = under_valgrind  # type: ignore[assignment, misc]
    worker_module.START_TIMEOUT = 600.0  # Python's start-up under valgrind
    try:
        # A child under valgrind on a loaded machine takes longer than the usual 15 s to commit
        # its last batch and exit; killed, it would write no counts.
        one_run(pythonpath, sessions, interims, inflight, seed, tag, None, timeout=30.0, close_timeout=300.0)
    finally:
        child_process.subprocess.Popen = real_popen  # type: ignore[misc]
    for line in out.read_text().splitlines():
        if line.startswith("summary:"):
            out.unlink()
            return int(line.split()[1])
    raise SystemExit(f"no cachegrind summary in {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.radius_cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--interims", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:PYTHONPATH of the child's code (default: this checkout)")
    parser.add_argument("--py-spy", type=Path, default=None, help="write py-spy raw profiles here")
    parser.add_argument("--rate", type=float, default=None,
                        help="pace the measured load at this many records/s (the freshness load: 2000) "
                             "instead of sending as fast as answers come back")
    parser.add_argument("--commit-delay-ms", type=int, action="append", default=[],
                        help="the child's radius_commit_delay_ms (repeat to alternate several)")
    parser.add_argument("--cachegrind", action="store_true",
                        help="instructions per record instead (valgrind; the child runs ~50x slower)")
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    variants = [tuple(v.split(":", 1)) for v in args.variant] or [("this", here)]
    delays: list[int | None] = args.commit_delay_ms or [None]
    if args.cachegrind:
        records = args.sessions * (args.interims + 2)
        for name, path in variants:
            base = instructions(str(Path(path).resolve()), 0, args.interims, args.inflight, args.seed, f"I0{name}")
            full = instructions(str(Path(path).resolve()), args.sessions, args.interims, args.inflight,
                                args.seed, f"I1{name}")
            print(f"{name:>8}: {(full - base) / records:,.0f} instructions per acknowledged record "
                  f"(RADIUS child, {records:,} records, {args.inflight} in flight)", flush=True)
        return 0
    results: dict[str, list[dict[str, float]]] = {}
    for run in range(args.runs):
        for base, path in variants:
            for delay in delays:
                name = base if delay is None else f"{base}/{delay}ms"
                figures = one_run(str(Path(path).resolve()), args.sessions, args.interims, args.inflight,
                                  args.seed + run, f"R{run}{base}{delay}", args.py_spy, rate=args.rate,
                                  commit_delay_ms=delay)
                results.setdefault(name, []).append(figures)
                print(f"run {run} {name:>8}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()),
                      flush=True)
    print(f"\nmedians of {args.runs} runs, {args.sessions * (args.interims + 2):,} records each, "
          f"{args.inflight} in flight (load average {os.getloadavg()[0]:.1f} at the end)")
    keys: list[str] = list(next(iter(results.values()))[0])
    print("variant        " + "  ".join(f"{k:>18}" for k in keys))
    medians: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        medians[name] = {k: statistics.median(r[k] for r in runs) for k in keys}
        print(f"{name:<14} " + "  ".join(f"{medians[name][k]:>18,.1f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
