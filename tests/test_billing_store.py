"""The billing benchmark's fast store (bench/billing_store.py) is the store the product makes:
a stamped account's stored events are the product aggregates' events byte for byte (the moment
of recording aside), and billing a stamped store issues the invoices that billing a store
filled through ``ledger.save`` issues. Set WISPGATE_TEST_SEED to replay one draw of accounts."""

from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

from adapters.billing_runs import run_billing
from api.bootstrap import Runtime, build_runtime
from api.settings import Settings
from bench.billing import PERIODS, late_usage, populate, populate_by_saving
from bench.billing_store import KINDS, StoredAccounts, account_aggregates, plan_terms, ts
from ledger.invoice import invoice_id


def _moment(state: bytes) -> bytes:
    return json.loads(state)["timestamp"]["_data_"].encode()


def test_a_stamped_account_is_stored_as_the_product_stores_it(runtime: Runtime) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = runtime.ledger
    plan = ledger.create_plan(name="Home 50", terms=plan_terms(), effective_from=0)
    stamps = StoredAccounts(ledger, plan_terms(), plan.id)
    # Prototypes first (kinds 0..9), then accounts stamped out of them and out of random kinds.
    numbers = [*range(10), KINDS + 3, 2 * KINDS + 9, *rng.sample(range(10 * KINDS, 10**6), 12)]
    for n in numbers:
        account_id, sessions = uuid.uuid4(), [uuid.uuid4() for _ in range(4)]
        made = account_aggregates(plan_terms(), plan.id, n, account_id=account_id, session_ids=sessions)
        expected = [ledger.mapper.to_stored_event(e) for a in made for e in a.collect_events()]
        got_id, stamped = stamps.events(n, account_id, sessions)
        assert got_id == account_id and len(stamped) == len(expected) == 8, f"seed {seed}, account {n}"
        for want, built in zip(expected, stamped, strict=True):
            assert (built.originator_id, built.originator_version, built.topic) == (
                want.originator_id, want.originator_version, want.topic), f"seed {seed}, account {n}"
            assert built.state.replace(_moment(built.state), _moment(want.state)) == want.state, \
                f"seed {seed}, account {n}, {want.topic}"


def _invoices(runtime: Runtime, ids: list[uuid.UUID]) -> dict[str, list[dict[str, Any]]]:
    """Each account's invoices (by account name), content only: no ids, numbers or moments."""
    found: dict[str, list[dict[str, Any]]] = {}
    for account_id in ids:
        for period in PERIODS:
            invoice = runtime.ledger.get_invoice(invoice_id(account_id, period))
            found.setdefault(invoice.customer["name"], []).append({
                "lines": invoice.lines, "totals": invoice.totals, "tax_summary": invoice.tax_summary,
                "usage_billed": invoice.usage_billed, "customer": invoice.customer, "carried": invoice.carried})
    return found


def _bill(runtime: Runtime, ids: list[uuid.UUID], plan_id: uuid.UUID) -> None:
    first = run_billing(runtime, PERIODS[0], at=ts("2026-10-02T06:00:00"))
    assert len(first.issued) == len(ids)
    late_usage(runtime, ids, plan_id)
    second = run_billing(runtime, PERIODS[1], at=ts("2026-11-02T06:00:00"))
    assert len(second.issued) == len(ids)


def test_billing_a_stamped_store_issues_what_the_product_store_issues(runtime: Runtime, tmp_path: Path) -> None:
    accounts = 450  # more than KINDS: some accounts are stamped out of another's events
    ids, plan_id = populate(runtime, accounts, batch=200)
    _bill(runtime, ids, plan_id)
    reference = build_runtime(Settings(data_dir=tmp_path / "reference", database_url=""))
    try:
        saved_ids, saved_plan = populate_by_saving(reference, accounts, batch=200)
        _bill(reference, saved_ids, saved_plan)
        stamped, saved = _invoices(runtime, ids), _invoices(reference, saved_ids)
        assert len(stamped) == accounts
        assert stamped == saved
        late = [name for name, invoices in stamped.items()
                if any("received after its invoice" in line["description"] for line in invoices[1]["lines"])]
        assert len(late) == len(ids[::100])
    finally:
        reference.close()
