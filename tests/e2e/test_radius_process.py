"""`wispgate serve` runs its RADIUS listener in a child process: the child dies with the
parent (no orphan holding the UDP port), a child that dies is restarted without losing an
acknowledged record, a busy port is reported as before, and the inline setting still works."""

from __future__ import annotations

import os
import socket
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from .product import WISPGATE, Product, alive, children_running, free_port, radclient, wait_until
from .test_serve import BASE, GB, PRICE_PER_GB, SECRET, provision, session_records

pytestmark = pytest.mark.e2e


def radius_children(parent: int) -> list[int]:
    """Pids of the RADIUS listener processes whose parent is ``parent``."""
    return children_running(parent, "adapters.radius.worker")


def udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_sigkill_of_serve_takes_the_radius_child_down_and_frees_the_port(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    assert product.process is not None
    children = radius_children(product.process.pid)
    assert len(children) == 1, children
    assert not udp_port_free(product.radius_port)  # the child holds it
    product.kill()
    wait_until(lambda: not alive(children[0]), timeout=10)
    assert udp_port_free(product.radius_port)


def test_a_radius_child_that_dies_is_restarted_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    try:
        assert product.process is not None
        _, accounts = provision(product, ["fred"])
        first = session_records("fred", "F-1", BASE, [(1_000_000_000, 0)], stop=False)
        assert radclient(product.radius_port, SECRET, first).returncode == 0
        [child] = radius_children(product.process.pid)
        os.kill(child, 9)
        restarted = wait_until(lambda: [p for p in radius_children(product.process.pid) if p != child],
                               timeout=30)
        assert len(restarted) == 1
        later = session_records("fred", "F-1", BASE, [(1_000_000_000, 0), (3_000_000_000, 0)], stop=True)[2:]
        done = radclient(product.radius_port, SECRET, later)
        assert done.returncode == 0, done.stderr
        expected = -(Decimal(3 * 10**9) * PRICE_PER_GB / GB)
        url = f"/v1/accounts/{accounts['fred']}/balance"
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == expected)
        assert product.process.poll() is None  # the API side never went down
    finally:
        product.stop()


@pytest.mark.parametrize("radius_process", ["separate", "inline"])
def test_a_busy_radius_port_exits_1_with_the_reason(tmp_path: Path, radius_process: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        env = os.environ | {"WISPGATE_DATA_DIR": str(tmp_path / "var"), "WISPGATE_RADIUS_PORT": str(port),
                            "WISPGATE_API_PORT": str(free_port()), "WISPGATE_RADIUS_PROCESS": radius_process,
                            "WISPGATE_LOG_LEVEL": "warning"}
        done = subprocess.run([WISPGATE, "serve"], env=env, capture_output=True, text=True, timeout=90,
                              check=False)
    assert done.returncode == 1
    assert f"wispgate: cannot listen on 127.0.0.1:{port}/udp: " in done.stderr
    assert "Address already in use" in done.stderr


def test_inline_mode_answers_and_rates_in_one_process(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var", extra_env={"WISPGATE_RADIUS_PROCESS": "inline"})
    product.start()
    try:
        assert product.process is not None
        assert radius_children(product.process.pid) == []
        _, accounts = provision(product, ["gina"])
        records = session_records("gina", "G-1", BASE, [(2_000_000_000, 0)], stop=True)
        assert radclient(product.radius_port, SECRET, records).returncode == 0
        expected = -(Decimal(2 * 10**9) * PRICE_PER_GB / GB)
        url = f"/v1/accounts/{accounts['gina']}/balance"
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == expected)
        assert "wispgate_radius_records_durable_total 2.0" in product.get("/metrics").text
    finally:
        product.stop()
