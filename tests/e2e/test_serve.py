"""The product as a user runs it: `wispgate serve`, radclient on the real UDP port, curl-like
HTTP calls. Expected figures are computed here, independently of the product's code."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from .product import Product, radclient, wait_until

pytestmark = pytest.mark.e2e

SECRET = "testing123"
GB = Decimal(10**9)
PRICE_PER_GB = Decimal("0.45")
BASE = 1_795_000_000  # 2026-11-18T11:06:40Z


def provision(product: Product, usernames: list[str]) -> tuple[str, dict[str, str]]:
    product.token = product.create_token("admin")
    assert product.post("/v1/nas", {"name": "bng-1", "address": "127.0.0.1", "secret": SECRET,
                                    "vendor": "mikrotik"}).status_code == 201
    plan = product.post("/v1/plans", {"name": "Home 25", "currency": "USD", "monthly_fee": "25.00",
                                      "price_per_gb": str(PRICE_PER_GB)})
    assert plan.status_code == 201, plan.text
    accounts = {}
    for username in usernames:
        created = product.post("/v1/accounts", {"name": username.title(), "plan_id": plan.json()["id"],
                                                "usernames": [username], "opened_at": "2023-01-01T00:00:00Z"})
        assert created.status_code == 201, created.text
        accounts[username] = created.json()["id"]
    return plan.json()["id"], accounts


def session_records(user: str, session: str, start: int, counters: list[tuple[int, int]],
                    *, stop: bool) -> list[dict[str, object]]:
    """Start, one Interim per counter pair (cumulative), optionally Stop with the last pair."""
    records: list[dict[str, object]] = [{
        "Acct-Status-Type": "Start", "User-Name": user, "Acct-Session-Id": session,
        "Event-Timestamp": start, "Framed-IP-Address": "100.64.0.7", "NAS-IP-Address": "127.0.0.1"}]
    for index, (up, down) in enumerate(counters, start=1):
        at = start + 300 * index
        status = "Stop" if stop and index == len(counters) else "Interim-Update"
        records.append({
            "Acct-Status-Type": status, "User-Name": user, "Acct-Session-Id": session,
            "Event-Timestamp": at, "Acct-Session-Time": at - start,
            "Acct-Input-Octets": up & 0xFFFFFFFF, "Acct-Input-Gigawords": up >> 32,
            "Acct-Output-Octets": down & 0xFFFFFFFF, "Acct-Output-Gigawords": down >> 32,
            "Framed-IP-Address": "100.64.0.7", "NAS-IP-Address": "127.0.0.1"})
    return records


def test_radclient_accounting_is_rated_into_balance_usage_and_sessions(product: Product) -> None:
    _, accounts = provision(product, ["alice", "bob"])
    alice_counters = [(300_000_000, 2_000_000_000), (700_000_000, 6_500_000_000), (900_000_000, 9_100_000_000)]
    bob_counters = [(10_000, 50_000)]
    sent = radclient(product.radius_port, SECRET,
                     session_records("alice", "A-1", BASE, alice_counters, stop=True)
                     + session_records("bob", "B-1", BASE + 60, bob_counters, stop=False))
    assert sent.returncode == 0, sent.stderr

    alice_bytes = sum(alice_counters[-1])
    expected_alice = -(Decimal(alice_bytes) * PRICE_PER_GB / GB)
    expected_bob = -(Decimal(sum(bob_counters[-1])) * PRICE_PER_GB / GB)

    def balance(user: str) -> dict[str, str]:
        return product.get(f"/v1/accounts/{accounts[user]}/balance").json()

    got = wait_until(lambda: (b := balance("alice")) and Decimal(b["balance_exact"]) == expected_alice and b)
    assert got["currency"] == "USD"
    assert got["balance"] == str(expected_alice.quantize(Decimal("0.01")))  # -4.50
    assert Decimal(wait_until(lambda: balance("bob")["balance_exact"] if
                              Decimal(balance("bob")["balance_exact"]) else None)) == expected_bob

    usage = product.get(f"/v1/accounts/{accounts['alice']}/usage", params={"granularity": "hour"}).json()
    assert sum(b["upload_bytes"] for b in usage["buckets"]) == alice_counters[-1][0]
    assert sum(b["download_bytes"] for b in usage["buckets"]) == alice_counters[-1][1]
    # 11:06:40 to 11:21:40 stays inside one hour bucket.
    assert [b["start"] for b in usage["buckets"]] == ["2026-11-18T11:00:00Z"]
    daily = product.get(f"/v1/accounts/{accounts['alice']}/usage", params={"granularity": "day"}).json()
    assert daily["buckets"] == [{"start": "2026-11-18T00:00:00Z", "upload_bytes": 900_000_000,
                                 "download_bytes": 9_100_000_000, "bands": {"standard": 10_000_000_000}}]

    sessions = product.get(f"/v1/accounts/{accounts['alice']}/sessions").json()["items"]
    assert len(sessions) == 1
    assert sessions[0]["acct_session_id"] == "A-1"
    assert sessions[0]["framed_ip"] == "100.64.0.7"
    assert sessions[0]["stopped_at"] == "2026-11-18T11:21:40Z"
    assert (sessions[0]["upload_bytes"], sessions[0]["download_bytes"]) == alice_counters[-1]


def test_resending_the_same_records_charges_once(product: Product) -> None:
    _, accounts = provision(product, ["carol"])
    records = session_records("carol", "C-1", BASE, [(1_000_000_000, 1_000_000_000)], stop=True)
    for _ in range(3):  # radclient picks a new Identifier each run: content dedupe must hold
        assert radclient(product.radius_port, SECRET, records).returncode == 0
    expected = -(Decimal(2 * 10**9) * PRICE_PER_GB / GB)
    url = f"/v1/accounts/{accounts['carol']}/balance"
    wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == expected)
    metrics = product.get("/metrics").text
    assert "wispgate_radius_content_duplicates_total 4.0" in metrics


def test_unknown_nas_and_wrong_secret_get_no_response_and_nothing_is_recorded(product: Product) -> None:
    _, accounts = provision(product, ["dave"])
    records = session_records("dave", "D-1", BASE, [(5_000_000_000, 0)], stop=True)
    wrong = radclient(product.radius_port, "not-the-secret", records, retries=1)
    assert wrong.returncode != 0  # no Accounting-Response: radclient gives up
    metrics = product.get("/metrics").text
    assert 'wispgate_radius_dropped_total{reason="bad-authenticator"}' in metrics
    assert product.get(f"/v1/accounts/{accounts['dave']}/balance").json()["balance_exact"] == "0"
    assert product.get(f"/v1/accounts/{accounts['dave']}/sessions").json()["items"] == []


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    _, accounts = provision(product, ["erin"])
    records = session_records("erin", "E-1", BASE, [(2_000_000_000, 0), (4_000_000_000, 0)], stop=False)
    assert radclient(product.radius_port, SECRET, records).returncode == 0  # acknowledged
    product.kill()  # at once, before the rater or projector may have caught up
    product.start()
    try:
        expected = -(Decimal(4 * 10**9) * PRICE_PER_GB / GB)
        url = f"/v1/accounts/{accounts['erin']}/balance"
        # A restart starts three children before rating resumes: on a loaded machine that has
        # taken longer than wait_until's default 10 s (the test failed once at load ~10).
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == expected, timeout=60)
    finally:
        product.stop()


def test_token_create_prints_token_alone_on_last_line_and_serve_says_how(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    try:
        log = (tmp_path / f"serve-{product.api_port}.log").read_text()
        assert "wispgate token create --role admin" in log
        token = product.create_token("admin")
        assert token.startswith("wg_") and " " not in token
        assert product.get("/v1/nas", token=token).status_code == 200
        assert product.get("/v1/nas", token="wg_forged").status_code == 401
    finally:
        product.stop()
