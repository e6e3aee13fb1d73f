"""Each plan feature through the API, with realistic numbers, on SQLite and PostgreSQL.
Accounting records go through the accounting log (as the RADIUS adapter writes them)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from api.bootstrap import Runtime
from ledger.billing_period import BillingPeriod

from .support import record

GB = 10**9
# Accounts are opened before every record these tests send: usage before an account's opening
# is not charged to it (tests/test_account_life.py).
OPENED_AT = "2023-01-01T00:00:00Z"


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def plan(client: TestClient, **terms: Any) -> str:
    body = {"name": "plan", "currency": "USD", "monthly_fee": "40.00", "price_per_gb": "1.00"} | terms
    response = client.post("/v1/plans", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def account(client: TestClient, plan_id: str, user: str = "alice", **extra: Any) -> str:
    response = client.post("/v1/accounts", json={"name": user, "plan_id": plan_id, "usernames": [user],
                                                "opened_at": OPENED_AT} | extra)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def feed(runtime: Runtime, *records: Any) -> None:
    runtime.intake.append(list(records))


def balance_reaches(client: TestClient, account_id: str, expected: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/v1/accounts/{account_id}/balance").json()
        if Decimal(body["balance_exact"]) == Decimal(expected) or time.monotonic() > deadline:
            assert Decimal(body["balance_exact"]) == Decimal(expected), body
            return body
        time.sleep(0.05)


def session_usage(start: int, end: int, total_bytes: int, *, session: str = "s1", user: str = "alice") -> list[Any]:
    """A Start at ``start`` and a Stop at ``end`` carrying ``total_bytes`` (all download)."""
    return [record("start", session, at=start, user=user),
            record("stop", session, at=end, start=start, down=total_bytes, user=user)]


def test_allowance_then_graduated_overage(client: TestClient, runtime: Runtime) -> None:
    # 100 GB included; overage: first 50 GB at 1.00, then 0.50 per GB.
    plan_id = plan(client, included_gb="100", tiers=[{"up_to_gb": "50", "price_per_gb": "1.00"},
                                                      {"up_to_gb": None, "price_per_gb": "0.50"}])
    account_id = account(client, plan_id)
    start = ts("2026-11-03T10:00:00")
    feed(runtime, *session_usage(start, start + 3600, 60 * GB, session="a"))          # 60 included
    feed(runtime, *session_usage(start + 7200, start + 10800, 120 * GB, session="b"))  # 40 incl, 50@1, 30@0.5
    balance_reaches(client, account_id, "-65")


def test_off_peak_band_is_cheaper_and_outside_the_allowance(client: TestClient, runtime: Runtime) -> None:
    # Nights 23:00-07:00 Bogota time at 0.10/GB, not counted toward the 10 GB allowance.
    plan_id = plan(client, included_gb="10", timezone="America/Bogota", bands=[
        {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 23,
         "end_hour": 7, "price_per_gb": "0.10"}])
    account_id = account(client, plan_id)
    # 22:00 to 00:00 Bogota (UTC-5) = 03:00 to 05:00 UTC: 20 GB spread evenly, half in each band.
    start = ts("2026-11-04T03:00:00")
    feed(runtime, *session_usage(start, start + 7200, 20 * GB))
    # 10 GB standard: all included (0); 10 GB night at 0.10 = 1.00.
    balance_reaches(client, account_id, "-1")
    day = client.get(f"/v1/accounts/{account_id}/usage", params={"granularity": "hour"}).json()["buckets"]
    assert [b["bands"] for b in day] == [{"standard": 10 * GB}, {"night": 10 * GB}]


def test_plan_versions_price_usage_by_when_it_happened(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, price_per_gb="2.00")
    account_id = account(client, plan_id)
    revised = client.post(f"/v1/plans/{plan_id}/versions", json={
        "currency": "USD", "monthly_fee": "40.00", "price_per_gb": "1.50", "effective_from": "2026-11-10T00:00:00Z"})
    assert revised.status_code == 201, revised.text
    assert len(revised.json()["versions"]) == 2
    feed(runtime, *session_usage(ts("2026-11-09T12:00:00"), ts("2026-11-09T13:00:00"), 10 * GB, session="old"))
    feed(runtime, *session_usage(ts("2026-11-11T12:00:00"), ts("2026-11-11T13:00:00"), 10 * GB, session="new"))
    balance_reaches(client, account_id, "-35")  # 10 x 2.00 + 10 x 1.50


def test_usage_across_the_period_boundary_is_split_and_the_allowance_resets(
    client: TestClient, runtime: Runtime,
) -> None:
    plan_id = plan(client, included_gb="5", price_per_gb="1.00")
    account_id = account(client, plan_id, anchor_day=15)
    # 2026-12-14 22:00 to 12-15 02:00 UTC: 4 hours, 16 GB; the period changes at 12-15 00:00.
    feed(runtime, *session_usage(ts("2026-12-14T22:00:00"), ts("2026-12-15T02:00:00"), 16 * GB))
    # 8 GB in each period; 5 included in each: 3 + 3 GB charged.
    balance_reaches(client, account_id, "-6")
    periods = [a for a in runtime.ledger.live_sessions.values() if isinstance(a, BillingPeriod)]
    assert sorted(datetime.fromtimestamp(p.start, UTC).date().isoformat() for p in periods) == [
        "2026-11-15", "2026-12-15"]


def test_addon_pack_is_consumed_after_the_allowance(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, included_gb="10", price_per_gb="1.00")
    account_id = account(client, plan_id)
    bought = client.post(f"/v1/accounts/{account_id}/addons", json={
        "name": "Extra 20 GB", "gb": "20", "price": "15.00", "valid_from": "2026-11-01T00:00:00Z", "valid_days": 30})
    assert bought.status_code == 201, bought.text
    balance_reaches(client, account_id, "-15")  # the pack is charged when bought
    start = ts("2026-11-05T10:00:00")
    feed(runtime, *session_usage(start, start + 3600, 35 * GB))
    balance_reaches(client, account_id, "-20")  # 10 included + 20 pack + 5 x 1.00


def test_fair_use_cap_is_recorded_once_when_crossed(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, price_per_gb="0", fair_use={"cap_gb": "50", "action": "throttle",
                                                      "throttle_rate": "2M/2M"})
    account_id = account(client, plan_id)
    start = ts("2026-11-06T10:00:00")
    feed(runtime, *session_usage(start, start + 3600, 30 * GB, session="a"))
    feed(runtime, *session_usage(start + 3600, start + 7200, 30 * GB, session="b"))
    feed(runtime, *session_usage(start + 7200, start + 9000, 30 * GB, session="c"))
    balance_reaches(client, account_id, "0")
    deadline = time.monotonic() + 10
    while runtime.ledger.tracked_position("AccountingLog") < runtime.intake.position():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    reached = [n for n in runtime.ledger.recorder.select_notifications(start=1, limit=10_000)
               if n.topic.endswith("BillingPeriod.FairUseCapReached")]
    assert len(reached) == 1
    event = runtime.ledger.mapper.to_domain_event(reached[0])
    assert (event.action, event.throttle_rate, event.at) == ("throttle", "2M/2M", start + 7200)


def test_prepaid_usage_debits_the_prepaid_balance(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, payment_model="prepaid", monthly_fee="0", price_per_gb="0.80")
    account_id = account(client, plan_id)
    paid = client.post(f"/v1/accounts/{account_id}/payments", json={"amount": "20.00", "currency": "USD"},
                       headers={"Idempotency-Key": "voucher-1234-5678"})
    assert paid.status_code == 201
    start = ts("2026-11-07T10:00:00")
    feed(runtime, *session_usage(start, start + 3600, 5 * GB))
    balance_reaches(client, account_id, "16")  # 20.00 - 5 x 0.80


def test_currency_minor_units_are_per_currency(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, currency="JPY", monthly_fee="3000", price_per_gb="105")
    account_id = account(client, plan_id)
    start = ts("2026-11-08T10:00:00")
    feed(runtime, *session_usage(start, start + 3600, 1_500_000_000))  # 1.5 GB x 105 = 157.5 JPY
    body = balance_reaches(client, account_id, "-157.5")
    assert (body["balance"], body["currency"]) == ("-158", "JPY")  # JPY has no minor unit; half to even
    half_yen = client.post(f"/v1/accounts/{account_id}/payments", json={"amount": "100.5", "currency": "JPY"},
                           headers={"Idempotency-Key": "jpy-payment-0001"})
    assert half_yen.status_code == 422


def test_invalid_plans_are_refused(client: TestClient) -> None:
    bad = [
        {"tiers": [{"up_to_gb": None, "price_per_gb": "1"}, {"up_to_gb": "5", "price_per_gb": "1"}]},
        {"tiers": [{"up_to_gb": "10", "price_per_gb": "1"}, {"up_to_gb": "5", "price_per_gb": "1"}]},
        {"bands": [{"name": "x", "days": ["mon"], "start_hour": 5, "end_hour": 5, "price_per_gb": "1"}]},
        {"timezone": "Mars/Olympus"},
        {"fair_use": {"cap_gb": "0"}},
        {"included_gb": "0.0000000001"},
    ]
    for terms in bad:
        response = client.post("/v1/plans", json={"name": "bad", "currency": "USD", "monthly_fee": "1",
                                                  "price_per_gb": "1"} | terms)
        assert response.status_code == 422, (terms, response.text)


def test_the_readme_worked_example(client: TestClient, runtime: Runtime) -> None:
    plan_id = plan(client, monthly_fee="40.00", included_gb="100",
                   tiers=[{"up_to_gb": "50", "price_per_gb": "1.00"}, {"up_to_gb": None, "price_per_gb": "0.50"}],
                   bands=[{"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                           "start_hour": 23, "end_hour": 7, "price_per_gb": "0.10"}])
    account_id = account(client, plan_id)
    feed(runtime, *session_usage(ts("2026-11-10T10:00:00"), ts("2026-11-10T12:00:00"), 160 * GB, session="day"))
    feed(runtime, *session_usage(ts("2026-11-11T01:00:00"), ts("2026-11-11T02:00:00"), 20 * GB, session="night"))
    balance_reaches(client, account_id, "-57")


def test_a_plan_change_after_rating_started_prices_later_usage_with_the_new_plan(
    client: TestClient, runtime: Runtime,
) -> None:
    expensive = plan(client, price_per_gb="2.00")
    cheap = plan(client, price_per_gb="1.00")
    account_id = account(client, expensive, opened_at="2026-11-01T00:00:00Z")
    feed(runtime, *session_usage(ts("2026-11-09T12:00:00"), ts("2026-11-09T13:00:00"), 10 * GB, session="a"))
    balance_reaches(client, account_id, "-20")  # the rater has read (and cached) the account by now
    changed = client.post(f"/v1/accounts/{account_id}/plan",
                          json={"plan_id": cheap, "effective_from": "2026-11-10T00:00:00Z"})
    assert changed.status_code == 200, changed.text
    feed(runtime, *session_usage(ts("2026-11-11T12:00:00"), ts("2026-11-11T13:00:00"), 10 * GB, session="b"))
    balance_reaches(client, account_id, "-30")
