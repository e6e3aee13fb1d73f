"""wispgate embedded: `wispgate serve` (SQLite files in a data directory, one process).

Prepared once: a data directory with the NAS, the plan and one account per subscriber, all
created through the API. Each run copies it, starts `wispgate serve` on spare ports, drives
the load, measures freshness at a paced rate, then verifies every acknowledged record in the
read models and times a rebuild of the read models from position 0.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from .billing import billing_metrics
from .freshness import run_freshness
from .loadgen import LoadResult, run_load
from .product import Process, Provisioned, charge, create_token, provision, wait_drained, wait_healthy
from .target import BenchConfig, Metrics, child_pids, free_port, peak_rss_mib, role
from .workload import build_sessions


def schema_fingerprint() -> str:
    """A short hash of the modules that define stored events and read-model tables."""
    import hashlib

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in ("domain", "ledger", "projections"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def data_size(directory: Path) -> dict[str, int]:
    """Bytes on disk per SQLite database (with its -wal/-shm files)."""
    sizes: dict[str, int] = {}
    for path in directory.iterdir():
        if path.is_file():
            base = path.name.split(".db")[0]
            sizes[base] = sizes.get(base, 0) + path.stat().st_size
    return sizes


def _ledger_events(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "ledger.db") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name LIKE '%events'")]
        return sum(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)


def _total_receivable(data_dir: Path) -> Decimal:
    with sqlite3.connect(data_dir / "readmodels.db") as conn:
        return sum((Decimal(r[0]) for r in conn.execute("SELECT receivable FROM balances")), Decimal(0))


def verify(data_dir: Path, loads: dict[str, LoadResult]) -> tuple[int, list[str]]:
    """Acknowledged records missing from the read models (sessions short of their last
    acknowledged counters or stop), and notes on anything else that does not add up."""
    missing = 0
    with sqlite3.connect(data_dir / "readmodels.db") as conn:
        for tag, load in loads.items():
            rows = conn.execute("SELECT acct_session_id, upload_bytes, download_bytes, stopped_at FROM sessions "
                                "WHERE acct_session_id LIKE ?", (f"{tag}-%",)).fetchall()
            stored = {sid: (up, down, stopped) for sid, up, down, stopped in rows}
            for packet in load.last_acked.values():
                got = stored.get(str(packet.attributes["Acct-Session-Id"]))
                if (got is None or got[0] < packet.upload or got[1] < packet.download
                        or (packet.status == "Stop" and got[2] is None)):
                    missing += 1
    return missing, []


class WispgateEmbedded:
    """`wispgate serve` on SQLite."""

    name = "wispgate embedded"

    def __init__(self) -> None:
        self.template = Path()
        self.provisioned: Provisioned | None = None

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        import eventsourcing

        return {"wispgate": version("wispgate"), "eventsourcing": getattr(eventsourcing, "__version__", "?"),
                "SQLite": sqlite3.sqlite_version}

    def _env(self, data_dir: Path, radius_port: int, api_port: int) -> dict[str, str]:
        return {"WISPGATE_DATA_DIR": str(data_dir), "WISPGATE_RADIUS_PORT": str(radius_port),
                "WISPGATE_API_PORT": str(api_port), "WISPGATE_LOG_LEVEL": "warning",
                "WISPGATE_MODE": "embedded", "WISPGATE_DATABASE_URL": ""}

    def prepare(self, config: BenchConfig) -> None:
        # Keyed by the code that decides what a data directory holds: a template made by other
        # code (another schema, other events) is made again, never reused.
        self.template = config.out / "embedded" / f"template-{config.sessions}-{schema_fingerprint()}"
        marker = self.template / "provisioned.json"
        if marker.exists():
            self.provisioned = Provisioned.load(marker)
            return
        shutil.rmtree(self.template, ignore_errors=True)
        data_dir = self.template / "var"
        print(f"  provisioning {config.sessions:,} accounts through the API (once; kept as a template)", flush=True)
        env = self._env(data_dir, free_port(socket.SOCK_DGRAM), free_port())
        token = create_token(env)
        server = Process(["serve"], env, self.template / "provision.log")
        server.start()
        try:
            url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
            wait_healthy(url, server)
            started = time.monotonic()
            self.provisioned = asyncio.run(provision(url, token, config.secret, config.sessions))
            print(f"  provisioned in {time.monotonic() - started:.1f} s", flush=True)
        finally:
            server.stop()
        self.provisioned.save(marker)

    def run(self, config: BenchConfig, index: int) -> Metrics:
        assert self.provisioned is not None
        work = config.out / "embedded" / f"run{index}"
        shutil.rmtree(work, ignore_errors=True)
        data_dir = work / "var"
        shutil.copytree(self.template / "var", data_dir)
        size_before = data_size(data_dir)
        events_before = _ledger_events(data_dir)
        receivable_before = _total_receivable(data_dir)
        env = self._env(data_dir, free_port(socket.SOCK_DGRAM), free_port())
        url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
        server = Process(["serve"], env, work / "serve.log")
        server.start()
        try:
            wait_healthy(url, server)
            port = int(env["WISPGATE_RADIUS_PORT"])
            sessions = build_sessions(config.sessions, config.interims, seed=config.seed + index, tag=f"E{index}")
            started = time.monotonic()
            load = asyncio.run(run_load("127.0.0.1", port, config.secret, sessions, inflight=config.inflight))
            drained = wait_drained(url)
            pipeline_rate = load.acknowledged / (drained - started)
            fresh_load, fresh = run_freshness(url, port, config, self.provisioned, tag=f"F{index}")
            wait_drained(url)
            # `serve` acknowledges in its RADIUS child (adapters/radius/worker.py): that is the
            # accounting server.
            children = child_pids(server.pid)
            radius = [pid for pid in children if role(pid) == "radius child"]
            rss = max((peak_rss_mib(pid) for pid in radius), default=float("nan"))
            # The other processes: the serve parent (API, rater, enforcer, chainer) and the
            # projector child.
            rss_parent = max(peak_rss_mib(pid) for pid in [server.pid, *(p for p in children if p not in radius)])
        finally:
            server.stop()
        loads = {f"E{index}": load, f"F{index}": fresh_load}
        missing, notes = verify(data_dir, loads)
        acked = load.acknowledged + fresh_load.acknowledged
        expected = sum((charge(p.upload + p.download) for ld in loads.values() for p in ld.last_acked.values()),
                       Decimal(0))
        rated = _total_receivable(data_dir) - receivable_before
        if rated != expected:
            notes.append(f"run {index}: balances moved by {rated}, the acknowledged usage prices at {expected}")
            missing += 1
        size_after = data_size(data_dir)
        events = _ledger_events(data_dir) - events_before
        replay = replay_rate(data_dir)
        grown = {name: size_after.get(name, 0) - size_before.get(name, 0) for name in size_after}
        # Billing is timed once per invocation (first run), on its own scratch stores.
        billing = billing_metrics(config.billing_sizes, pdfs=config.pdf_renders) if index == 0 else {}
        return billing | {
            "ingest_rate": load.rate,
            "pipeline_rate": pipeline_rate,
            "latency_p50": load.percentile(0.5) * 1000,
            "latency_p99": load.percentile(0.99) * 1000,
            "latency_p999": load.percentile(0.999) * 1000,
            "retransmissions": load.retransmissions,
            "failed": load.failed,
            "missing": missing,
            "freshness_p50": fresh[0] * 1000,
            "freshness_p99": fresh[1] * 1000,
            "replay_rate": replay,
            "bytes_per_record": sum(grown.values()) / max(1, acked),
            "events_per_record": events / max(1, acked),
            "rss_server": rss,
            "rss_other": rss_parent,
            "_notes": "; ".join(notes + [
                f"run {index}: bytes per record by file: " + ", ".join(
                    f"{name} {size / max(1, acked):.0f}" for name, size in sorted(grown.items())),
                f"run {index}: freshness from {fresh[2]} samples at {fresh_load.rate:.0f} records/s"]),
        }


def replay_rate(data_dir: Path) -> float:
    return replay_rate_on(database_url="", data_dir=data_dir)


def replay_rate_on(*, database_url: str, data_dir: Path) -> float:
    """Events/s rebuilding every read model from position 0, checking the rebuilt balances
    equal the live ones (guarantee 4). Nothing else may run on the store.

    Measured in a fresh process, as `wispgate projections rebuild` runs it: this process has
    threads by now (the FreeRADIUS target's connection pool, ...), and a rebuild forks its
    second process only from a single-threaded one (projections/fold_worker.can_fork)."""
    done = subprocess.run([sys.executable, "-m", "bench.wispgate_embedded", "replay", str(data_dir), database_url],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the replay failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return float(done.stdout.split()[-1])


def _replay_here(*, database_url: str, data_dir: Path) -> float:
    """The rebuild itself, in this process (``python -m bench.wispgate_embedded replay DIR [URL]``)."""
    from sqlalchemy import select

    from api.bootstrap import build_runtime
    from api.settings import Settings
    from projections import tables

    def balances() -> list[tuple[str, str]]:
        with runtime.engine.connect() as conn:
            rows = conn.execute(select(tables.balances.c.account_id, tables.balances.c.receivable))
            return sorted((str(a), str(r)) for a, r in rows)

    runtime = build_runtime(Settings(data_dir=data_dir, database_url=database_url))
    try:
        live = balances()
        runtime.projector.reset()
        started = time.perf_counter()
        events = runtime.projector.rebuild(runtime.ledger.recorder)
        seconds = time.perf_counter() - started
        if balances() != live:
            raise AssertionError("rebuilt balances differ from the live ones: replay is not deterministic")
    finally:
        runtime.close()
    return events / seconds


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "replay":
        raise SystemExit("usage: python -m bench.wispgate_embedded replay DATA_DIR [DATABASE_URL]")
    print(_replay_here(data_dir=Path(sys.argv[2]), database_url=sys.argv[3] if len(sys.argv) > 3 else ""))
