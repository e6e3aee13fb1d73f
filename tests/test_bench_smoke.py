"""The benchmark harness in seconds (`python -m bench --smoke`): a few hundred records against
FreeRADIUS+SQL and wispgate embedded, so `make bench` cannot rot. The full run is not a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_benchmark_prints_a_table_with_numbers_and_loses_nothing(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--targets", "freeradius,embedded", "--out", str(tmp_path),
         "--results", str(results)],
        cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| metric")}
    freeradius, embedded = rows["Durable-ack ingest"]
    assert float(freeradius.replace(",", "")) > 0
    assert float(embedded.split()[0].replace(",", "")) > 0 and "x)" in embedded  # with its ratio to FreeRADIUS
    # Verification found every acknowledged record, in radacct and in the read models.
    assert rows["Acknowledged records missing after the run"] == ["0", "0"]
    assert rows["Requests never acknowledged"] == ["0", "0"]
    freshness = float(rows["Freshness ack -> balance API p99 (paced load)"][1].replace(",", ""))
    assert 0 < freshness < 30_000  # a sample never seen in the balance counts as infinite
    assert float(rows["Replay: rebuild all read models"][1].split()[0].replace(",", "")) > 0
    # Billing runs (smoke: 100 and 300 accounts) and PDFs are timed on the embedded column.
    assert float(rows["Billing run, 300 accounts"][1].replace(",", "")) > 0
    assert rows["Billing run, 300 accounts"][0] == "n/a (no billing)"
    assert float(rows["Invoice PDFs"][1].replace(",", "")) > 0
    written = results.read_text()
    assert "| Durable-ack ingest |" in written and "cores" in written and "FreeRADIUS" in written
