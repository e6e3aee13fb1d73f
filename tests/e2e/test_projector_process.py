"""`wispgate serve` runs its live projector in a child process: a child that dies is
restarted, visibly (log line, /metrics), with nothing lost and the read models converging."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from .product import Product, children_running, radclient, wait_until
from .test_serve import BASE, GB, PRICE_PER_GB, SECRET, provision, session_records

pytestmark = pytest.mark.e2e


def projector_children(parent: int) -> list[int]:
    """Pids of the projector processes whose parent is ``parent``."""
    return children_running(parent, "adapters.projector_worker")


def test_a_projector_child_that_dies_is_restarted_and_the_read_models_converge(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    try:
        assert product.process is not None
        [child] = projector_children(product.process.pid)
        _, accounts = provision(product, ["hana", "ivan"])
        first = session_records("hana", "H-1", BASE, [(1_000_000_000, 0)], stop=False)
        assert radclient(product.radius_port, SECRET, first).returncode == 0
        url = f"/v1/accounts/{accounts['hana']}/balance"
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == -(PRICE_PER_GB * 1), timeout=30)
        os.kill(child, 9)
        # Records keep coming while no projector runs: rated, then projected by the successor.
        later = session_records("hana", "H-1", BASE, [(1_000_000_000, 0), (3_000_000_000, 0)], stop=True)[2:]
        other = session_records("ivan", "I-1", BASE + 60, [(2_000_000_000, 0)], stop=True)
        assert radclient(product.radius_port, SECRET, later + other).returncode == 0
        restarted = wait_until(lambda: [p for p in projector_children(product.process.pid) if p != child],
                               timeout=30)
        assert len(restarted) == 1
        hana = -(Decimal(3 * 10**9) * PRICE_PER_GB / GB)
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == hana, timeout=30)
        ivan = f"/v1/accounts/{accounts['ivan']}/balance"
        wait_until(lambda: Decimal(product.get(ivan).json()["balance_exact"]) == -(2 * PRICE_PER_GB), timeout=30)
        wait_until(lambda: (c := product.get("/health").json()["checks"])["projected_position"]
                   == c["ledger_position"] and c["read_models"] == "ok", timeout=30)
        metrics = product.get("/metrics").text
        assert "wispgate_projector_process_restarts_total 1.0" in metrics
        assert "wispgate_projector_process_up 1.0" in metrics
        assert product.process.poll() is None  # the API side never went down
    finally:
        product.stop()
    log = (product.data_dir.parent / f"serve-{product.api_port}.log").read_text()
    assert "the projector process exited (-9); restarting it" in log
