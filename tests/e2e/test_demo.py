"""`wispgate demo` against a running `wispgate serve`, as the README tells a new user to try it:
the simulated BNG's sessions reach the ledger through the real RADIUS port, and the balances
found through `GET /v1/accounts?username=` price exactly what the demo says it reported."""

from __future__ import annotations

import re
import subprocess
from decimal import Decimal

import pytest

from .product import WISPGATE, Product, wait_until

pytestmark = pytest.mark.e2e

DEMO_PRICE_PER_GB = Decimal("0.50")  # the demo plan's price (api/commands/demo.py)


def demo(product: Product, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WISPGATE, "demo", *args], env=product.env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_demo_feed_is_rated_and_accounts_are_found_by_username(product: Product) -> None:
    product.token = product.create_token("admin")
    done = demo(product, "--setup", "--token", product.token, "--subscribers", "6", "--rounds", "2",
                "--interval", "0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NAS 127.0.0.1" in done.stdout and "6 accounts (0 existed)" in done.stdout
    # 6 sessions x (Start + 2 Interim + Stop), every one answered.
    assert "done: 24/24 acknowledged" in done.stdout, done.stdout
    reported = Decimal(re.search(r"\((\d+) bytes\)\s*$", done.stdout).group(1))
    assert reported > 0

    found = product.get("/v1/accounts", params={"username": "demo0003"}).json()
    assert [a["usernames"] for a in found["items"]] == [["demo0003"]] and found["next_cursor"] is None

    def demo_balances() -> Decimal:
        page = product.get("/v1/accounts", params={"name": "demo", "limit": 100}).json()
        assert len(page["items"]) == 6
        return sum((Decimal(a["balance"]) for a in page["items"]), Decimal(0))

    # Each of the 6 balances is rounded to cents.
    expected = -reported * DEMO_PRICE_PER_GB / 10**9
    total = wait_until(lambda: abs(demo_balances() - expected) <= 6 * Decimal("0.005"), timeout=30)
    assert total

    # A second demo reuses what exists; pagination walks every account once.
    again = demo(product, "--setup", "--token", product.token, "--subscribers", "8", "--rounds", "0")
    assert again.returncode == 0 and "2 accounts (6 existed)" in again.stdout, again.stdout + again.stderr
    first = product.get("/v1/accounts", params={"limit": 5}).json()
    rest = product.get("/v1/accounts", params={"limit": 5, "cursor": first["next_cursor"]}).json()
    ids = [a["id"] for a in first["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 8 and rest["next_cursor"] is None


def test_demo_says_clearly_when_nothing_answers(product: Product) -> None:
    # No NAS registered: the site drops every request (unknown client), the demo says so.
    # A short timeout and one retransmission: the defaults (2 s, 3) wait 16 s for two requests.
    done = demo(product, "--subscribers", "1", "--rounds", "0", "--timeout", "0.5", "--retries", "1")
    assert done.returncode == 1
    assert "done: 0/2 acknowledged" in done.stdout, done.stdout  # the Start and the Stop
    assert "never answered" in done.stderr and "is the NAS registered" in done.stderr
    bad = demo(product, "--setup", "--subscribers", "1")
    assert bad.returncode == 2 and "--setup needs --token" in bad.stderr
    for wrong in (("--timeout", "0"), ("--retries", "-1")):
        refused = demo(product, *wrong)
        assert refused.returncode == 2 and wrong[0] in refused.stderr, refused.stderr
    assert product.get("/v1/accounts", params={"status": "frozen"}, token=product.create_token()).status_code == 422
