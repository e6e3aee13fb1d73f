"""Billing runs, invoices, credit notes, payments, dunning, PDFs and exports through the API, on
SQLite and PostgreSQL. Accounting records go through the accounting log."""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pandas as pd
from fastapi.testclient import TestClient

from adapters.billing_runs import catch_up
from api.bootstrap import Runtime
from ledger.invoice import Invoice, invoice_id
from projections import finance

from .support import record

GB = 10**9
RUN_AT = "2026-11-02T08:00:00Z"


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def issue(runtime: Runtime, role: str, account_id: str | None = None) -> dict[str, str]:
    token = "wg_" + secrets.token_urlsafe(16)
    runtime.ledger.issue_token(token=token, role=role, account_id=UUID(account_id) if account_id else None,
                               label="t", issued_at=0)
    return {"Authorization": f"Bearer {token}"}


def plan(client: TestClient, name: str = "Home 50", **terms: Any) -> str:
    body = {"name": name, "currency": "USD", "monthly_fee": "30.00", "price_per_gb": "1.00"} | terms
    response = client.post("/v1/plans", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def account(client: TestClient, plan_id: str, user: str, **extra: Any) -> str:
    body = {"name": user.title(), "plan_id": plan_id, "usernames": [user],
            "opened_at": "2026-08-01T00:00:00Z"} | extra
    response = client.post("/v1/accounts", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def use(runtime: Runtime, user: str, start: int, seconds: int, down: int, session: str) -> None:
    """A session of ``user`` carrying ``down`` bytes, through the accounting log, rated and projected."""
    runtime.intake.append([record("start", session, at=start, user=user, framed_ip="100.64.0.9"),
                           record("stop", session, at=start + seconds, start=start, down=down, user=user,
                                  framed_ip="100.64.0.9")])
    deadline = time.monotonic() + 20
    while runtime.ledger.tracked_position("AccountingLog") < runtime.intake.position():
        assert time.monotonic() < deadline, "the rater did not catch up"
        time.sleep(0.02)
    catch_up(runtime)


def bill(client: TestClient, period: str = "2026-10", at: str = RUN_AT) -> dict[str, Any]:
    response = client.post("/v1/billing-runs", json={"period": period, "at": at})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def invoice_of(client: TestClient, account_id: str, period: str = "2026-10") -> dict[str, Any]:
    page = client.get("/v1/invoices", params={"account_id": account_id, "period": period}).json()
    assert len(page["items"]) == 1, page
    detail: dict[str, Any] = client.get(f"/v1/invoices/{page['items'][0]['id']}").json()
    return detail


def test_billing_run_issues_exact_invoices_once_with_gapless_numbers(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client, included_gb="10")
    premium = plan(client, "Premium 100", monthly_fee="60.00", price_per_gb="0.50")
    alice = account(client, basic, "alice", tax_rate="0.16")
    bob = account(client, basic, "bob", opened_at="2026-10-11T09:30:00Z")  # 21 of 31 days
    carol = account(client, basic, "carol", tax_rate="0.16")
    # Carol moves to Premium on Oct 16 (15 days basic, 16 days premium) and leaves on Nov 20.
    moved = client.post(f"/v1/accounts/{carol}/plan",
                        json={"plan_id": premium, "effective_from": "2026-10-16T00:00:00Z"})
    assert moved.status_code == 200, moved.text
    # Alice: 12.345678901 GB in October, 10 included, the rest at 1.00/GB (rounded once: 2.35).
    use(runtime, "alice", ts("2026-10-03T10:00:00"), 3600, 12_345_678_901, "a1")
    bought = client.post(f"/v1/accounts/{alice}/addons", json={"name": "Extra 5 GB", "gb": "5", "price": "4.00",
                                                              "valid_from": "2026-10-20T00:00:00Z"})
    assert bought.status_code == 201
    discount = client.post(f"/v1/accounts/{alice}/discounts", json={
        "description": "Loyalty", "percent": "10", "valid_from": "2026-10-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z"})
    assert discount.status_code == 201

    run = bill(client)
    assert (run["issued"], run["existing"], run["skipped"]) == (3, 0, 0)

    a = invoice_of(client, alice)
    by_kind = {(line["kind"], line["description"].split(",")[-1].strip()): line for line in a["lines"]}
    assert by_kind[("recurring", "2026-10-01 to 2026-10-31")]["net"] == "30.00"
    assert by_kind[("usage", "overage")]["net"] == "2.35"
    assert by_kind[("addon", "bought 2026-10-20)")]["net"] == "4.00"
    # 10 % of (30.00 + 2.35) = 3.235 -> 3.24 (half even); tax 16 % per line.
    assert [line["net"] for line in a["lines"] if line["kind"] == "discount"] == ["-3.24"]
    assert (a["net"], a["tax"], a["total"]) == ("33.11", "5.30", "38.41")
    # The subscriber's balance equals the invoice: usage posted exactly, rounded once by the invoice.
    assert client.get(f"/v1/accounts/{alice}/balance").json()["balance_exact"] == "-38.41"

    b = invoice_of(client, bob)
    assert [line["net"] for line in b["lines"] if line["kind"] == "recurring"] == ["20.32"]  # 30 x 21/31
    c = invoice_of(client, carol)
    assert [line["net"] for line in c["lines"] if line["kind"] == "recurring"] == ["14.52", "30.97"]

    numbers = sorted(i["number"] for i in client.get("/v1/invoices", params={"period": "2026-10"}).json()["items"])
    assert numbers == [f"INV-site-a-2026-00000{n}" for n in (1, 2, 3)]
    again = bill(client)
    assert (again["issued"], again["existing"]) == (0, 3)
    assert len(client.get("/v1/invoices").json()["items"]) == 3

    # Every journal transaction sums to zero, invoices included.
    gl = pd.read_csv(io.BytesIO(client.get("/v1/exports/journal", params={"format": "csv"}).content),
                     dtype={"debit": str, "credit": str})
    sums = gl.groupby("reference").apply(lambda g: sum(map(Decimal, g.debit)) - sum(map(Decimal, g.credit)))
    assert set(sums) == {Decimal(0)}
    assert any(ref.startswith("invoice:INV-site-a-2026") for ref in gl.reference)


def test_concurrent_runs_never_duplicate_nor_leave_gaps(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client)
    for n in range(24):
        account(client, basic, f"user{n:02d}")
    catch_up(runtime)
    from adapters.billing_runs import run_billing

    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(run_billing(runtime, "2026-10", at=ts("2026-11-02T08:00:00"), batch_size=5))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    issued = [n for r in results for n in r.issued]
    assert sorted(issued) == [f"INV-site-a-2026-{n:06d}" for n in range(1, 25)]
    ids = {invoice_id(UUID(a), "2026-10") for a in finance.account_ids(runtime.engine)}
    assert all(runtime.ledger.get_invoice(i).status == "issued" for i in ids)


def test_payments_credit_notes_overdue_and_dunning(client: TestClient, runtime: Runtime) -> None:
    strict = plan(client, "Strict", dunning_days=5)
    alice = account(client, strict, "alice")
    bob = account(client, strict, "bob")
    bill(client)
    a, b = invoice_of(client, alice), invoice_of(client, bob)
    assert (a["total"], a["status"], a["due_at"][:10]) == ("30.00", "issued", "2026-11-16")

    paid = client.post(f"/v1/accounts/{alice}/payments", json={"amount": "10.00", "currency": "USD"},
                       headers={"Idempotency-Key": "alice-pay-0001"})
    assert paid.status_code == 201
    a = invoice_of(client, alice)
    assert (a["status"], a["paid"], a["open_amount"]) == ("partially_paid", "10.00", "20.00")
    client.post(f"/v1/accounts/{alice}/payments", json={"amount": "25.00", "currency": "USD"},
                headers={"Idempotency-Key": "alice-pay-0002"})
    a = invoice_of(client, alice)
    assert (a["status"], a["paid"]) == ("paid", "30.00")
    assert sorted(x["amount"] for x in a["allocations"]) == ["10.00", "20.00"]

    # Bob's invoice: part credited, then the rest (which voids it); CN numbers are their own series.
    note = client.post(f"/v1/invoices/{b['id']}/credit-notes", json={"amount": "5.00", "reason": "outage"},
                       headers={"Idempotency-Key": "bob-credit-0001"})
    assert note.status_code == 201, note.text
    assert note.json()["number"].startswith("CN-site-a-")
    retry = client.post(f"/v1/invoices/{b['id']}/credit-notes", json={"amount": "5.00", "reason": "outage"},
                        headers={"Idempotency-Key": "bob-credit-0001"})
    assert (retry.status_code, retry.json()["number"]) == (200, note.json()["number"])
    too_much = client.post(f"/v1/invoices/{b['id']}/credit-notes", json={"amount": "26.00", "reason": "x"})
    assert too_much.status_code == 422
    assert client.get(f"/v1/invoices/{b['id']}").json()["status"] == "partially_paid"

    # Overdue is computed at read time; dunning suspends after the plan's 5 days.
    overdue = client.get("/v1/invoices", params={"status": "overdue", "as_of": "2026-11-17T00:00:00Z"}).json()
    assert [i["account_id"] for i in overdue["items"]] == [bob]  # due 2026-11-16
    assert client.get("/v1/invoices", params={"status": "overdue", "as_of": "2026-11-15T00:00:00Z"}).json()[
        "items"] == []
    early = client.post("/v1/billing-runs/dunning", json={"at": "2026-11-18T00:00:00Z"})
    assert early.json() == []
    suspended = client.post("/v1/billing-runs/dunning", json={"at": "2026-11-22T00:00:00Z"})
    assert [s["account_id"] for s in suspended.json()] == [bob], suspended.text
    assert client.get(f"/v1/accounts/{bob}").json()["status"] == "suspended"
    assert client.get(f"/v1/accounts/{alice}").json()["status"] == "active"

    rest = client.post(f"/v1/invoices/{b['id']}/credit-notes", json={"reason": "goodwill"})
    assert rest.status_code == 201 and rest.json()["amount"] == "25.00"
    b = invoice_of(client, bob)
    assert (b["status"], b["credited"]) == ("void", "30.00")
    assert Decimal(client.get(f"/v1/accounts/{bob}/balance").json()["balance_exact"]) == 0
    assert client.post(f"/v1/invoices/{b['id']}/credit-notes", json={"reason": "again"}).status_code == 409


def test_portal_reads_only_its_own_invoices_and_the_auditor_cannot_bill(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client)
    alice, bob = account(client, basic, "alice"), account(client, basic, "bob")
    bill(client)
    a, b = invoice_of(client, alice), invoice_of(client, bob)
    portal = issue(runtime, "portal", alice)
    own = client.get(f"/v1/accounts/{alice}/invoices", headers=portal)
    assert [i["number"] for i in own.json()["items"]] == [a["number"]]
    assert client.get(f"/v1/invoices/{a['id']}", headers=portal).status_code == 200
    assert client.get(f"/v1/accounts/{alice}/invoices/{a['id']}/pdf", headers=portal).status_code == 200
    for path in (f"/v1/accounts/{bob}/invoices", f"/v1/invoices/{b['id']}", f"/v1/invoices/{b['id']}/pdf",
                 f"/v1/accounts/{alice}/invoices/{b['id']}/pdf", f"/v1/accounts/{bob}/invoices/{b['id']}/pdf"):
        assert client.get(path, headers=portal).status_code == 404, path
    assert client.get("/v1/invoices", headers=portal).status_code == 403
    assert client.get("/v1/exports/invoices", headers=portal).status_code == 403
    auditor = issue(runtime, "auditor")
    assert client.get("/v1/invoices", headers=auditor).status_code == 200
    assert client.post("/v1/billing-runs", json={"period": "2026-09", "at": RUN_AT}, headers=auditor).status_code == 403
    assert client.post(f"/v1/invoices/{a['id']}/credit-notes", json={"reason": "x"}, headers=auditor).status_code == 403
    finance_token = issue(runtime, "finance")
    assert client.post("/v1/billing-runs", json={"period": "2026-09", "at": RUN_AT},
                       headers=finance_token).status_code == 200

    # ETag: an unchanged list is 304; a new payment changes it.
    first = client.get("/v1/invoices")
    tag = first.headers["etag"]
    assert client.get("/v1/invoices", headers={"If-None-Match": tag}).status_code == 304
    client.post(f"/v1/accounts/{alice}/payments", json={"amount": "1.00", "currency": "USD"},
                headers={"Idempotency-Key": "alice-etag-001"})
    assert client.get("/v1/invoices", headers={"If-None-Match": tag}).status_code == 200
    page = client.get("/v1/invoices", params={"limit": 2}).json()
    rest = client.get("/v1/invoices", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert len({i["id"] for i in page["items"] + rest["items"]}) == 4


def test_invoice_pdf_shows_number_totals_and_tax(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client, included_gb="1")
    alice = account(client, basic, "alice", tax_rate="0.16")
    use(runtime, "alice", ts("2026-10-05T10:00:00"), 7200, 3 * GB, "p1")
    bill(client)
    invoice = invoice_of(client, alice)
    response = client.get(f"/v1/invoices/{invoice['id']}/pdf")
    assert response.headers["content-type"] == "application/pdf"
    assert client.get(f"/v1/invoices/{invoice['id']}/pdf",
                      headers={"If-None-Match": response.headers["etag"]}).status_code == 304
    text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=response.content, capture_output=True,
                          check=True).stdout.decode()
    assert invoice["number"] == "INV-site-a-2026-000001"
    assert invoice["number"] in text
    assert (invoice["net"], invoice["tax"], invoice["total"]) == ("32.00", "5.12", "37.12")
    for expected in ("INVOICE", "Subtotal (net)", "32.00 USD", "5.12 USD", "Amount due", "37.12 USD", "16 %",
                     "Due date", "Data usage this period: 3.00 GB", "How to pay"):
        assert expected in text, (expected, text)
    # every amount in the lines at the currency's precision at least: the allowance's 0.00, not 0
    assert re.search(r"included\s+1 GB\s+0\.00\s+0\.00\s", text), text


def test_exports_match_the_ledger(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client, included_gb="2")
    ids = [account(client, basic, user, tax_rate="0.10") for user in ("alice", "bob", "carol")]
    use(runtime, "alice", ts("2026-10-07T10:00:00"), 3600, 7_777_777_777, "e1")
    use(runtime, "carol", ts("2026-10-08T10:00:00"), 3600, 2_500_000_000, "e2")
    bill(client)
    invoices = [runtime.ledger._maybe_get(Invoice, invoice_id(UUID(a), "2026-10")) for a in ids]
    ledger_total = sum(Decimal(i.totals["gross"]) for i in invoices if i is not None)
    ledger_tax = sum(Decimal(i.totals["tax"]) for i in invoices if i is not None)

    xlsx = client.get("/v1/exports/invoices", params={"format": "xlsx", "period": "2026-10"})
    assert xlsx.status_code == 200
    register = pd.read_excel(io.BytesIO(xlsx.content), dtype={"total": str, "tax": str})
    assert sum(map(Decimal, register["total"])) == ledger_total
    assert sum(map(Decimal, register["tax"])) == ledger_tax
    assert sorted(register["number"]) == sorted(i.number for i in invoices if i is not None)

    lines = pd.read_parquet(io.BytesIO(client.get("/v1/exports/invoice-lines",
                                                  params={"format": "parquet", "period": "2026-10"}).content))
    assert sum(lines["gross"]) == ledger_total  # decimal128: exact

    journal = pd.read_parquet(io.BytesIO(client.get("/v1/exports/journal", params={"format": "parquet"}).content))
    assert (journal.groupby("reference")[["debit", "credit"]].sum().pipe(lambda s: s.debit - s.credit) == 0).all()
    owed = journal[journal.account.str.startswith("receivable:")]
    assert sum(owed.debit) - sum(owed.credit) == ledger_total  # no payments yet: owed = invoiced

    usage = pd.read_csv(io.BytesIO(client.get("/v1/exports/usage", params={"period": "2026-10"}).content))
    assert dict(zip(usage.account_id, usage.download_bytes, strict=True)) == {ids[0]: 7_777_777_777,
                                                                              ids[2]: 2_500_000_000}
    assert client.get("/v1/exports/bogus").status_code == 422


def test_who_had_an_ip_and_the_rebuilt_read_models_match(client: TestClient, runtime: Runtime) -> None:
    basic = plan(client)
    alice = account(client, basic, "alice")
    use(runtime, "alice", ts("2026-10-09T10:00:00"), 3600, GB, "ip1")
    found = client.get("/v1/sessions/by-ip", params={"ip": "100.64.0.9", "at": "2026-10-09T10:30:00Z"}).json()
    assert [(f["account_id"], f["username"]) for f in found] == [(alice, "alice")]
    assert client.get("/v1/sessions/by-ip", params={"ip": "100.64.0.9", "at": "2026-10-09T12:30:00Z"}).json() == []
    assert client.get("/v1/sessions/by-ip", params={"ip": "nope", "at": "2026-10-09T12:30:00Z"}).status_code == 422
    bill(client)
    client.post(f"/v1/accounts/{alice}/payments", json={"amount": "12.00", "currency": "USD"},
                headers={"Idempotency-Key": "alice-rebuild-1"})
    before = finance.invoice(runtime.engine, str(invoice_id(UUID(alice), "2026-10")))
    runtime.stop_stages()
    from adapters.audit import replay, store_batches

    runtime.projector.reset()
    head = runtime.ledger.recorder.max_notification_id() or 0
    replay(store_batches(runtime.ledger, 0, head), runtime.projector)
    after = finance.invoice(runtime.engine, str(invoice_id(UUID(alice), "2026-10")))
    assert before == after and before is not None and before["status"] == "partially_paid"


def test_usage_rated_after_its_invoice_goes_on_the_next_invoice_once_with_its_tax(
        client: TestClient, runtime: Runtime) -> None:
    """A BNG that buffered accounting during an outage delivers October's usage after the
    October invoice was issued: the charge is in the balance at once, and the November invoice
    bills it (with its tax) on a line of its own; no later invoice bills it again."""
    basic = plan(client, price_per_gb="1.00")
    dave = account(client, basic, "dave", tax_rate="0.10")
    use(runtime, "dave", ts("2026-10-05T10:00:00"), 3600, 2 * GB, "d1")
    assert bill(client)["issued"] == 1
    october = invoice_of(client, dave)
    assert [line["net"] for line in october["lines"] if line["kind"] == "usage"] == ["2.00"]

    # Late: 3.333333333 GB used on Oct 30, delivered in November, after the invoice.
    use(runtime, "dave", ts("2026-10-30T20:00:00"), 1800, 3_333_333_333, "d2-late")
    assert client.get(f"/v1/accounts/{dave}/balance").json()["balance_exact"] == "-38.533333333"  # 35.20 + 3.33..
    assert bill(client)["issued"] == 0  # October is not billed twice

    use(runtime, "dave", ts("2026-11-10T10:00:00"), 3600, 1 * GB, "d3")
    assert bill(client, "2026-11", at="2026-12-02T08:00:00Z")["issued"] == 1
    november = invoice_of(client, dave, "2026-11")
    late = [line for line in november["lines"] if "received after its invoice" in line["description"]]
    assert [(line["description"].split(":")[0], line["net"], line["tax"]) for line in late] == [
        ("Data used in 2026-10, received after its invoice", "3.33", "0.33")]
    own = [line["net"] for line in november["lines"] if line["kind"] == "usage" and line not in late]
    assert own == ["1.00"]
    # 30 fee + 1.00 + 3.33 late = 34.33 net, 10 % tax per line: 3.00 + 0.10 + 0.33.
    assert (november["net"], november["tax"], november["total"]) == ("34.33", "3.43", "37.76")

    # December: nothing late is left for October or November.
    assert bill(client, "2026-12", at="2027-01-02T08:00:00Z")["issued"] == 1
    december = invoice_of(client, dave, "2026-12")
    assert not [line for line in december["lines"] if "received after" in line["description"]]
    # Books: every transaction balances; the balance is what the three invoices total, exactly
    # (usage was posted as rated; each invoice posted fees, rounding and tax).
    totals = sum((Decimal(i["total"]) for i in (october, november, december)), Decimal(0))
    assert Decimal(client.get(f"/v1/accounts/{dave}/balance").json()["balance_exact"]) == -totals
