"""`wispgate serve` rates in a child process: a rater child killed in the middle of the load is
restarted, visibly (log line, /metrics), and every acknowledged record is charged exactly once
(its batches commit with the accounting-log position they consumed)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from .product import Product, children_running, radclient, wait_until
from .test_serve import BASE, GB, PRICE_PER_GB, SECRET, provision, session_records

pytestmark = pytest.mark.e2e


def rater_children(parent: int) -> list[int]:
    """Pids of the rater processes whose parent is ``parent``."""
    return children_running(parent, "adapters.rater_worker")


def test_a_rater_child_that_dies_is_restarted_and_charges_each_record_once(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    try:
        assert product.process is not None
        [child] = rater_children(product.process.pid)
        _, accounts = provision(product, ["kira", "liam"])
        first = session_records("kira", "K-1", BASE, [(1_000_000_000, 0)], stop=False)
        assert radclient(product.radius_port, SECRET, first).returncode == 0
        url = f"/v1/accounts/{accounts['kira']}/balance"
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == -(PRICE_PER_GB * 1), timeout=30)
        os.kill(child, 9)
        # Acknowledged while no rater runs: rated by the successor, once each.
        later = session_records("kira", "K-1", BASE, [(1_000_000_000, 0), (3_000_000_000, 0)], stop=True)[2:]
        other = session_records("liam", "L-1", BASE + 60, [(2_000_000_000, 0)], stop=True)
        assert radclient(product.radius_port, SECRET, later + other).returncode == 0
        restarted = wait_until(lambda: [p for p in rater_children(product.process.pid) if p != child], timeout=30)
        assert len(restarted) == 1
        kira = -(Decimal(3 * 10**9) * PRICE_PER_GB / GB)
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == kira, timeout=30)
        liam = f"/v1/accounts/{accounts['liam']}/balance"
        wait_until(lambda: Decimal(product.get(liam).json()["balance_exact"]) == -(2 * PRICE_PER_GB), timeout=30)
        # The same records again (a NAS retransmitting after a lost answer): nothing moves.
        assert radclient(product.radius_port, SECRET, first + later).returncode == 0
        wait_until(lambda: (c := product.get("/health").json()["checks"])["rated_position"]
                   == c["accounting_position"] and c["projected_position"] == c["ledger_position"], timeout=30)
        assert Decimal(product.get(url).json()["balance_exact"]) == kira
        metrics = product.get("/metrics").text
        assert "wispgate_rater_process_restarts_total 1.0" in metrics
        assert "wispgate_rater_process_up 1.0" in metrics
        assert product.process.poll() is None  # the API side never went down
    finally:
        product.stop()
    log = (product.data_dir.parent / f"serve-{product.api_port}.log").read_text()
    assert "the rater process exited (-9); restarting it" in log
