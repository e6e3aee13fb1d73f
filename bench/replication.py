"""`python -m bench.replication [--sessions N] [--interims K] [--rate R]`: two embedded sites on
this machine (A active, B standby pulling A's log), a paced RADIUS load on A, and B's
replication lag sampled four times a second; then `wispgate audit replay` and `audit verify`
on B (a quiet copy of the log) for the replay rate. Prints one table."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .loadgen import run_load
from .product import WISPGATE, Process, provision, wait_healthy
from .workload import build_sessions

HERE = Path(__file__).parent
SECRET = "bench-secret"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _token(env: dict[str, str], role: str) -> str:
    done = subprocess.run([WISPGATE, "token", "create", "--role", role, "--label", "bench"],
                          env=os.environ | env, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def _site(url: str, token: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/site", headers={"Authorization": f"Bearer {token}"}, timeout=5).json())


class LagSampler(threading.Thread):
    """Samples (A head - B head) and B's lag in seconds while the load runs."""

    def __init__(self, a: str, b: str, token: str) -> None:
        super().__init__(daemon=True)
        self.a, self.b, self.token = a, b, token
        self.positions: list[int] = []
        self.seconds: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            try:
                head_a = _site(self.a, self.token)["head_position"]
                b = _site(self.b, self.token)
            except httpx.HTTPError:
                continue
            self.positions.append(max(0, head_a - b["head_position"]))
            self.seconds.append(float(b["replication"]["lag_seconds"] or 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication", description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--interims", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="accounting requests/s offered to site A")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "replication")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    ports = {name: _free_port() for name in ("a_api", "b_api", "a_radius", "b_radius")}
    base = {"WISPGATE_LOG_LEVEL": "warning", "WISPGATE_REPLICATION_BATCH": "2000"}
    env_a = base | {"WISPGATE_DATA_DIR": str(args.out / "a"), "WISPGATE_API_PORT": str(ports["a_api"]),
                    "WISPGATE_RADIUS_PORT": str(ports["a_radius"]), "WISPGATE_SITE": "site-a",
                    "WISPGATE_SITE_ROLE": "active", "WISPGATE_PEER_URL": f"http://127.0.0.1:{ports['b_api']}"}
    replication, admin = _token(env_a, "replication"), _token(env_a, "admin")
    env_a["WISPGATE_REPLICATION_TOKEN"] = replication
    env_b = base | {"WISPGATE_DATA_DIR": str(args.out / "b"), "WISPGATE_API_PORT": str(ports["b_api"]),
                    "WISPGATE_RADIUS_PORT": str(ports["b_radius"]), "WISPGATE_SITE": "site-b",
                    "WISPGATE_SITE_ROLE": "standby", "WISPGATE_REPLICATION_TOKEN": replication,
                    "WISPGATE_PEER_URL": f"http://127.0.0.1:{ports['a_api']}"}
    a = Process(["serve"], env_a, args.out / "a.log")
    b = Process(["serve"], env_b, args.out / "b.log")
    url_a, url_b = f"http://127.0.0.1:{ports['a_api']}", f"http://127.0.0.1:{ports['b_api']}"
    try:
        a.start()
        wait_healthy(url_a, a)
        b.start()
        wait_healthy(url_b, b)
        asyncio.run(provision(url_a, admin, SECRET, args.sessions))
        sessions = build_sessions(args.sessions, args.interims, seed=7, tag="R")
        sampler = LagSampler(url_a, url_b, admin)
        sampler.start()
        load = asyncio.run(run_load("127.0.0.1", ports["a_radius"], SECRET, sessions, rate=args.rate))
        load_end = time.monotonic()
        # Converged: B holds A's head once A has rated and chained everything.
        while True:
            site_a, site_b = _site(url_a, admin), _site(url_b, admin)
            health = httpx.get(f"{url_a}/health", timeout=5).json()["checks"]
            drained = health["rated_position"] >= health["accounting_position"]
            if drained and site_a["head_position"] == site_b["head_position"] and site_a["head_position"]:
                break
            time.sleep(0.05)
        catch_up = time.monotonic() - load_end
        sampler.stopping.set()
        sampler.join()
        a.stop()
        b.stop()  # the replay reads B's store; a stopped site is a consistent one
        replay = subprocess.run([WISPGATE, "audit", "replay"], env=os.environ | env_b, capture_output=True,
                                text=True, timeout=3600, check=False)
        started = time.monotonic()
        verify = subprocess.run([WISPGATE, "audit", "verify"], env=os.environ | env_b, capture_output=True,
                                text=True, timeout=3600, check=False)
        verify_seconds = time.monotonic() - started
    finally:
        a.stop()
        b.stop()
    rate = re.search(r"at ([\d,]+) events/s", replay.stdout)
    checked = re.search(r"chain OK: (\d+) events", verify.stdout)
    lag = sorted(sampler.positions) or [0]
    rows = [
        ("accounting requests acknowledged by A", f"{load.acknowledged:,} of {load.sent:,}"),
        ("offered rate / achieved (req/s)", f"{args.rate:,.0f} / {load.rate:,.0f}"),
        ("ledger events shipped to B", f"{site_a['head_position']:,}"),
        ("lag during load, positions: median / p95 / max",
         f"{statistics.median(lag):,.0f} / {lag[int(0.95 * (len(lag) - 1))]:,} / {lag[-1]:,}"),
        ("lag during load, seconds: max", f"{max(sampler.seconds or [0]):.0f}"),
        ("B holds A's head after the load ends (s)", f"{catch_up:.2f}"),
        ("audit replay on B (events/s)", rate.group(1) if rate else f"failed: {replay.stdout[-300:]}"),
        ("audit replay: read models equal", "yes" if replay.returncode == 0 else "NO"),
        ("audit verify on B (events, s, with CLI start-up)",
         f"{checked.group(1) if checked else 'failed'} in {verify_seconds:.1f} s"),
        ("machine load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nReplication, two embedded sites on one machine ({args.sessions:,} sessions x "
          f"{args.interims + 2} records, paced at {args.rate:,.0f} req/s)\n")
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0 if replay.returncode == 0 and verify.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
