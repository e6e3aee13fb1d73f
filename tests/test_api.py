"""The HTTP API on both stores: auth and scoping, admin writes, idempotent payments,
problem+json errors, read-your-writes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.bootstrap import Runtime

from .support import record


@pytest.fixture
def live(runtime: Runtime) -> Iterator[Runtime]:
    runtime.start_stages()
    yield runtime


def issue(runtime: Runtime, role: str, account_id: Any = None) -> str:
    token = "wg_" + secrets.token_urlsafe(16)
    runtime.ledger.issue_token(token=token, role=role, account_id=account_id, label="test", issued_at=0)
    return token


@pytest.fixture
def client(live: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(live)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {issue(live, 'admin')}"
        yield test_client


def setup_account(client: TestClient, username: str = "alice", price: str = "0.50") -> tuple[str, str]:
    plan = client.post("/v1/plans", json={"name": "Basic", "currency": "USD", "monthly_fee": "20.00",
                                          "price_per_gb": price})
    assert plan.status_code == 201, plan.text
    account = client.post("/v1/accounts", json={"name": username, "plan_id": plan.json()["id"],
                                                "usernames": [username], "opened_at": "1970-01-01T00:00:00Z"})
    assert account.status_code == 201, account.text
    return plan.json()["id"], account.json()["id"]


def test_requests_without_a_valid_token_are_refused(client: TestClient) -> None:
    anonymous = client.get("/v1/nas", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert client.get("/v1/nas", headers={"Authorization": "Bearer wg_nope"}).status_code == 401


def test_portal_token_reads_only_its_own_account(client: TestClient, live: Runtime) -> None:
    _, alice = setup_account(client, "alice")
    _, bob = setup_account(client, "bob")
    portal = {"Authorization": f"Bearer {issue(live, 'portal', account_id=__import__('uuid').UUID(alice))}"}
    assert client.get(f"/v1/accounts/{alice}/balance", headers=portal).status_code == 200
    for path in ("balance", "usage", "sessions"):
        denied = client.get(f"/v1/accounts/{bob}/{path}", headers=portal)
        assert denied.status_code == 404, path  # indistinguishable from a missing account
    assert client.post("/v1/nas", headers=portal, json={"name": "x", "address": "10.0.0.1",
                                                         "secret": "s"}).status_code == 403


def test_auditor_and_finance_cannot_write(client: TestClient, live: Runtime) -> None:
    for role in ("auditor", "finance"):
        headers = {"Authorization": f"Bearer {issue(live, role)}"}
        response = client.post("/v1/plans", headers=headers, json={
            "name": "x", "currency": "USD", "monthly_fee": "1", "price_per_gb": "1"})
        assert response.status_code == 403, role


def test_bad_payloads_get_problem_json_not_500(client: TestClient) -> None:
    cases = [
        ("/v1/plans", {"name": "x", "currency": "usd", "monthly_fee": "1", "price_per_gb": "1"}),
        ("/v1/plans", {"name": "x", "currency": "USD", "monthly_fee": 1.5, "price_per_gb": "1"}),
        ("/v1/plans", {"name": "x", "currency": "XXX", "monthly_fee": "1", "price_per_gb": "1"}),
        ("/v1/accounts", {"name": "x", "plan_id": "not-a-uuid", "usernames": []}),
        ("/v1/accounts", {"name": "x", "plan_id": "00000000-0000-0000-0000-000000000000", "usernames": []}),
        ("/v1/nas", {"name": "x", "address": "not-an-ip", "secret": "s"}),
        ("/v1/nas", {"name": "x", "address": "10.0.0.1", "secret": "s", "surprise": True}),
    ]
    for path, body in cases:
        response = client.post(path, json=body)
        assert response.status_code in (404, 422), (path, body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


def test_duplicates_conflict(client: TestClient) -> None:
    nas = {"name": "bng", "address": "192.0.2.1", "secret": "s"}
    assert client.post("/v1/nas", json=nas).status_code == 201
    assert client.post("/v1/nas", json=nas).status_code == 409
    plan_id, _ = setup_account(client, "zed")
    again = client.post("/v1/accounts", json={"name": "other", "plan_id": plan_id, "usernames": ["ZED"]})
    assert again.status_code == 409  # usernames are case-insensitive, one account each


def test_payments_are_idempotent_and_credit_the_balance(client: TestClient) -> None:
    _, account = setup_account(client)
    body = {"amount": "15.00", "currency": "USD", "method": "cash", "reference": "receipt 17"}
    key = {"Idempotency-Key": "pay-0001-alice"}
    first = client.post(f"/v1/accounts/{account}/payments", json=body, headers=key)
    assert first.status_code == 201, first.text
    retry = client.post(f"/v1/accounts/{account}/payments", json=body, headers=key)
    assert retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    reuse = client.post(f"/v1/accounts/{account}/payments", json=body | {"amount": "16.00"}, headers=key)
    assert reuse.status_code == 409
    assert client.post(f"/v1/accounts/{account}/payments", json=body).status_code == 422  # key required
    wrong_currency = client.post(f"/v1/accounts/{account}/payments", json=body | {"currency": "EUR"},
                                 headers={"Idempotency-Key": "pay-0002-alice"})
    assert wrong_currency.status_code == 422
    balance = client.get(f"/v1/accounts/{account}/balance").json()
    assert balance == balance | {"balance": "15.00", "currency": "USD"}


def test_usage_is_charged_against_payments(client: TestClient, live: Runtime) -> None:
    _, account = setup_account(client, "alice", price="0.50")
    client.post(f"/v1/accounts/{account}/payments", json={"amount": "10.00", "currency": "USD"},
                headers={"Idempotency-Key": "topup-000001"})
    live.intake.append([record("start", at=1000), record("stop", at=1600, start=1000, up=3 * 10**9, down=10**9)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        balance = client.get(f"/v1/accounts/{account}/balance").json()
        if balance["balance"] == "8.00":
            break
        time.sleep(0.05)
    assert Decimal(balance["balance_exact"]) == Decimal("8")
    sessions = client.get(f"/v1/accounts/{account}/sessions").json()
    assert sessions["items"][0]["charge"] == "2"


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/nas", "/v1/plans", "/v1/accounts", "/v1/accounts/{account_id}/balance",
                 "/v1/accounts/{account_id}/usage", "/v1/accounts/{account_id}/sessions", "/health", "/metrics"):
        assert path in spec["paths"], path
