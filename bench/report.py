"""The results table (medians over runs, ratio to FreeRADIUS per row) and bench/RESULTS.md."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from .target import METRICS, BenchConfig, Metrics, metric_label

REFERENCE = "FreeRADIUS+SQL"


def collect_machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total = next((line.split()[1] for line in meminfo if line.startswith("MemTotal:")), "0")
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cores": str(os.cpu_count()), "memory": f"{int(total) / 1024 / 1024:.1f} GiB", "cpu": model,
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "kernel": platform.release()}


def median(runs: list[Metrics], key: str) -> float | str | None:
    """Median of the numeric values of ``key``; a string (e.g. "n/a (...)") when none is numeric."""
    for run in runs:
        if "_unavailable" in run:
            return str(run["_unavailable"])
    values = [run[key] for run in runs if key in run]
    numbers = [float(v) for v in values if isinstance(v, (int, float))]
    if numbers:
        return statistics.median(numbers)
    return str(values[0]) if values else None


def _format(value: float | str | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "timed out"
    if math.isnan(value):
        return "-"
    if unit in ("records/s", "events/s", "PDFs/s", "bytes", "count", "MiB"):
        return f"{value:,.0f}"
    if unit == "events":
        return f"{value:.2f}"
    return f"{value:,.1f}"


def render(per_target: dict[str, list[Metrics]], config: BenchConfig) -> str:
    """One Markdown table: rows are metrics, columns are targets; cells of other targets carry
    their ratio to FreeRADIUS (value / FreeRADIUS value)."""
    names = list(per_target)
    header = ["metric", "unit", *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    reference = per_target.get(REFERENCE)
    for key, label, unit, _higher in METRICS:
        cells = [metric_label(label, config), unit]
        base = median(reference, key) if reference else None
        for name in names:
            value = median(per_target[name], key)
            cell = _format(value, unit)
            if (name != REFERENCE and isinstance(value, float) and isinstance(base, float)
                    and base and math.isfinite(value)):
                cell += f" ({value / base:.2f}x)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_run(per_target: dict[str, list[Metrics]]) -> str:
    keys = [("ingest_rate", "ingest records/s"), ("pipeline_rate", "through all stages records/s"),
            ("latency_p99", "ack p99 ms"), ("freshness_p99", "freshness p99 ms")]
    lines = ["| target | run | " + " | ".join(label for _, label in keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, runs in per_target.items():
        for index, run in enumerate(runs, start=1):
            cells = [_format(run.get(k) if not isinstance(run.get(k), str) else "n/a", "records/s"
                             if "rate" in k else "ms") for k, _ in keys]
            lines.append(f"| {name} | {index} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _versions(extra: dict[str, str]) -> dict[str, str]:
    found = {"Python": sys.version.split()[0]} | extra
    libs = Path(__file__).resolve().parents[1] / ".cache" / "kafka" / "libs"
    if libs.is_dir():
        kafka = sorted(p.name for p in libs.glob("kafka_2.13-*.jar"))
        if kafka:
            found["Kafka"] = kafka[0].removeprefix("kafka_2.13-").removesuffix(".jar")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False, cwd=Path(__file__).parent)
    if commit.returncode == 0:
        found["wispgate commit"] = commit.stdout.strip()
    return found


def write_results(path: Path, table: str, per_target: dict[str, list[Metrics]], config: BenchConfig,
                  before: dict[str, str], after: dict[str, str], versions: dict[str, str], command: str,
                  seconds: float) -> None:
    notes = [str(m["_notes"]) for runs in per_target.values() for m in runs if m.get("_notes")]
    text = f"""# Benchmark results

Written by `{command}` on {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")} in {seconds / 60:.1f} min.

Load: {config.sessions:,} subscribers, one session each: Start, {config.interims} Interim-Updates with
cumulative 64-bit counters (Gigawords), Stop = {config.records:,} Accounting-Requests per run,
{config.inflight} requests in flight, seed {config.seed}; {config.runs} run(s) per column, medians
shown. radacct pre-filled with {config.history_closed:,} closed + {config.history_open:,} open sessions.
Freshness: a second load paced at {config.freshness_rate:,.0f} records/s for {config.freshness_seconds:.0f} s,
balances of {config.freshness_accounts} accounts polled.

Machine: {before["cores"]} cores ({before["cpu"]}), {before["memory"]} memory, Linux {before["kernel"]};
load average {before["load"]} at the start, {after["load"]} at the end (other work shared the machine).

Versions: {", ".join(f"{k} {v}" for k, v in _versions(versions).items())}.

{table}

Cells of wispgate columns show (value / FreeRADIUS value); for latency, size and memory rows
lower is better. "n/a" cells say why a figure does not exist.

## Per run

{_per_run(per_target)}
"""
    if notes:
        text += "\n## Notes from the runs\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
