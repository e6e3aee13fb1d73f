"""What every system under test provides to the benchmark, and the metrics it reports.

A target prepares once (install, schema, history, provisioning), then runs the same seeded
load several times, each on a fresh copy of the prepared state, and returns one ``Metrics``
dict per run: the keys below, a number, or a string such as "n/a (...)" when the metric does
not apply. ``bench/distributed.py`` implements the same protocol for the distributed mode.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Rows of the table, in order: (key, label, unit, higher_is_better)
METRICS: list[tuple[str, str, str, bool]] = [
    ("ingest_rate", "Durable-ack ingest", "records/s", True),
    ("pipeline_rate", "Records through every stage (ack to read models)", "records/s", True),
    ("latency_p50", "Ack latency p50", "ms", False),
    ("latency_p99", "Ack latency p99", "ms", False),
    ("latency_p999", "Ack latency p99.9", "ms", False),
    ("retransmissions", "Timeouts (retransmitted requests)", "count", False),
    ("failed", "Requests never acknowledged", "count", False),
    ("missing", "Acknowledged records missing after the run", "count", False),
    ("freshness_p50", "Freshness ack -> balance API p50 (paced load)", "ms", False),
    ("freshness_p99", "Freshness ack -> balance API p99 (paced load)", "ms", False),
    ("replay_rate", "Replay: rebuild all read models", "events/s", True),
    ("billing_small", "Billing run, {small} accounts", "s", False),
    ("billing_large", "Billing run, {large} accounts", "s", False),
    ("invoice_pdfs", "Invoice PDFs", "PDFs/s", True),
    ("bytes_per_record", "Bytes at rest per accounting record", "bytes", False),
    ("events_per_record", "Ledger events per accounting record", "events", False),
    ("rss_server", "Peak RSS, accounting server process (embedded: the RADIUS child)", "MiB", False),
    ("rss_other", "Peak RSS, largest other process (serve parent or projector child, PG backend, ...)", "MiB", False),
]

Metrics = dict[str, float | str]


def metric_label(label: str, config: BenchConfig) -> str:
    """A row label with the configured sizes filled in (e.g. the billing run's account count)."""
    small, large = config.billing_sizes
    return label.format(small=f"{small:,}", large=f"{large:,}")


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark invocation: the load and where working files go."""

    sessions: int = 20_000
    interims: int = 3
    inflight: int = 64
    runs: int = 3
    distributed_runs: int = 0  # 0: as many as ``runs``
    seed: int = 2026
    history_closed: int = 1_000_000  # radacct pre-fill, like a production table
    history_open: int = 20_000
    freshness_rate: float = 2_000.0
    freshness_seconds: float = 10.0
    freshness_accounts: int = 100  # accounts whose balance is polled
    billing_sizes: tuple[int, int] = (10_000, 100_000)  # accounts per timed billing run (small, large)
    pdf_renders: int = 50
    secret: str = "bench-secret"
    out: Path = field(default_factory=lambda: Path(__file__).parent / "out")
    smoke: bool = False

    @property
    def records(self) -> int:
        return self.sessions * (self.interims + 2)


class Target(Protocol):
    name: str  # column title

    def prepare(self, config: BenchConfig) -> None: ...

    def run(self, config: BenchConfig, index: int) -> Metrics: ...

    def versions(self) -> dict[str, str]: ...


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process (its peak resident set), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def role(pid: int) -> str:
    """Which of `serve`'s children a process is, by its command line."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"adapters.radius.worker" in cmdline:
        return "radius child"
    if b"adapters.projector_worker" in cmdline:
        return "projector child"
    if b"adapters.rater_worker" in cmdline:
        return "rater child"
    return "other child"


def child_pids(pid: int) -> list[int]:
    """The live children of a process (Linux /proc; empty when it has none)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            found += [int(c) for c in children.read_text().split()]
    return found


def admin_dsn() -> str:
    """The PostgreSQL server `make services` runs (a superuser role)."""
    dsn = os.environ.get("WISPGATE_TEST_PG_DSN")
    if not dsn:
        raise RuntimeError("WISPGATE_TEST_PG_DSN is not set: run `make bench` (it starts the services) "
                           "or `. .cache/services.env` first")
    return dsn
