"""The rebuild tests' common set-up: seeded random traffic projected live (sessions, billing,
payments before and after invoices, partial and excess payments, credit notes, catalog changes),
the live tables it leaves, and the rebuild that another projector interrupts."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

from adapters.billing_runs import run_billing
from adapters.followers import drain, rate_step
from api.bootstrap import Runtime
from domain.plans import PlanTerms
from projections import finance

from .support import record

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z
MONTH_END = 1_796_083_200  # 2026-12-01T00:00:00Z
GB = 10**9


def project_live(runtime: Runtime, rng: random.Random) -> None:
    """Rate what was ingested, then project it the way a follower does, in small batches."""
    drain(rate_step(runtime.intake, runtime.ledger))
    projector, recorder = runtime.projector, runtime.ledger.recorder
    while batch := recorder.select_notifications(start=projector.position() + 1, limit=rng.randint(1, 40)):
        projector.process(batch)


def traffic(runtime: Runtime, rng: random.Random) -> None:
    ledger = runtime.ledger
    night = {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
             "end_hour": 6, "price_per_gb": "0.10"}
    plans = [ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "25", "0.45", bands=[night]),
                                effective_from=0),
             ledger.create_plan(name="Lite", terms=PlanTerms.parse("USD", "9.99", "1.10"), effective_from=0)]
    accounts = [ledger.open_account(name=f"Subscriber {n}", plan_id=rng.choice(plans).id, usernames=[f"u{n}"],
                                    opened_at=T0 - 86_400) for n in range(rng.randint(6, 10))]
    payments = 0

    def pay(at: int) -> None:
        nonlocal payments
        payments += 1
        amount = Decimal(rng.randint(100, 6000)) / 100
        ledger.record_payment(idempotency_key=f"p{payments}", account_id=rng.choice(accounts).id, amount=amount,
                              currency="USD", method="bank", reference=f"r{payments}", received_at=at)

    for _ in range(rng.randint(1, 3)):  # credit waiting for the first invoice
        pay(T0 + rng.randrange(86_400))
    catalog_changes(runtime, rng, plans, accounts)
    records = []
    for sessions in range(1, rng.randint(11, 21)):
        start = T0 + rng.randrange(25 * 86_400)
        user, up, down, at = f"u{rng.randrange(len(accounts))}", 0, 0, start
        records.append(record("start", f"s{sessions}", at=start, user=user))
        for _ in range(rng.randint(0, 4)):
            at += rng.randint(60, 7200)
            up, down = up + rng.randrange(2 * GB), down + rng.randrange(9 * GB)
            records.append(record("interim", f"s{sessions}", at=at, start=start, up=up, down=down, user=user))
        if sessions > 1 and rng.random() < 0.7:  # the first stays open until the NAS restarts
            records.append(record("stop", f"s{sessions}", at=at + rng.randint(1, 600), start=start, up=up,
                                  down=down + rng.randrange(GB), user=user))
    for day in (rng.randrange(25), 26):  # the NAS restarts: its open sessions are closed
        records.append(record(rng.choice(["accounting-on", "accounting-off"]), at=T0 + day * 86_400 + 3600))
    rng.shuffle(records)  # late and out of order, as BNGs send them
    for offset in range(0, len(records), 7):
        runtime.intake.append(records[offset:offset + 7])
        if rng.random() < 0.3:
            project_live(runtime, rng)
    project_live(runtime, rng)
    run_billing(runtime, "2026-11", at=MONTH_END)
    late = T0 + rng.randrange(20 * 86_400)  # usage of the billed month arriving after its invoice
    runtime.intake.append([record("start", "late", at=late, user="u0"),
                           record("stop", "late", at=late + 5400, start=late, up=GB, down=3 * GB, user="u0")])
    project_live(runtime, rng)
    for _ in range(rng.randint(3, 8)):
        pay(MONTH_END + rng.randrange(86_400))
        project_live(runtime, rng)
    issued = [i for i in finance.invoices(runtime.engine, limit=1000) if i["number"]]
    for n, invoice in enumerate(rng.sample(issued, k=min(3, len(issued)))):
        total = Decimal(invoice["total"])
        amount = None if rng.random() < 0.3 or total <= 0 else min(total, Decimal(rng.randint(1, 1500)) / 100)
        ledger.issue_credit_note(UUID(invoice["id"]), amount=amount, reason="goodwill", at=MONTH_END + 90_000 + n,
                                 site=runtime.settings.site, key=f"c{n}")
        pay(MONTH_END + 100_000 + n)
        project_live(runtime, rng)


def catalog_changes(runtime: Runtime, rng: random.Random, plans: list[Any], accounts: list[Any]) -> None:
    """What operators change besides usage: plan revisions and changes, add-on packs, API
    tokens issued and revoked, a NAS registered and retired, an account terminated."""
    ledger = runtime.ledger
    ledger.revise_plan(plans[0].id, terms=PlanTerms.parse("USD", "27", "0.40"), effective_from=T0 + 10 * 86_400)
    ledger.change_plan(accounts[0].id, plan_id=plans[1].id, effective_from=T0 + rng.randrange(20 * 86_400))
    ledger.purchase_addon(accounts[1].id, name="Extra 10 GB", gb=Decimal(10), price=Decimal("4.99"),
                          valid_from=T0 + rng.randrange(86_400), valid_until=T0 + 20 * 86_400)
    tokens = [ledger.issue_token(token=f"token-{n}-{rng.random()}", role="portal", account_id=accounts[n].id,
                                 label=f"t{n}", issued_at=T0) for n in range(2)]
    revoked = ledger.repository.get(tokens[rng.randrange(2)].id)
    revoked.revoke()
    ledger.save(revoked)
    nas = ledger.register_nas(address=f"10.9.{rng.randrange(255)}.1", name="old bng", secret="s")
    nas.retire()
    ledger.save(nas)
    ledger.set_account_status(accounts[-1].id, status="terminated", at=T0 + 27 * 86_400, reason="moved away")
    project_live(runtime, rng)


def tables(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    return runtime.projector.table_rows()


def rebuild_while_another_projector_moves(runtime: Runtime, rng: random.Random, head: int,
                                          live: dict[str, list[tuple[Any, ...]]], seed: int) -> None:
    """From position 0, a rebuild during which another projector moves the position (between
    two of the fold's windows): the fold's next window sees it and writes nothing, the rebuild
    goes on from the stored position the windowed way, and the tables are the live ones."""
    runtime.projector.reset()
    recorder = runtime.ledger.recorder
    interfered: list[int] = []

    def interfere(done: int) -> None:
        if not interfered:
            interfered.append(done)
            runtime.projector.process(recorder.select_notifications(start=runtime.projector.position() + 1,
                                                                    limit=rng.randint(1, 20)))

    runtime.projector.rebuild(recorder, window=rng.randint(5, 50), progress=interfere)
    assert interfered and runtime.projector.position() == head
    assert tables(runtime) == live, f"seed {seed}: a rebuild interrupted by another projector differs"


def seeded() -> tuple[int, random.Random]:
    """A seed from the clock, printed (a failing test's output names it), and its generator."""
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    return seed, random.Random(seed)


class Traffic(NamedTuple):
    """What ``seeded_traffic`` leaves: the seed and its generator (to go on drawing from), the
    live-projected tables and the log's head."""

    seed: int
    rng: random.Random
    live: dict[str, list[tuple[Any, ...]]]
    head: int


def seeded_traffic(runtime: Runtime) -> Traffic:
    """Seeded random traffic, projected live."""
    seed, rng = seeded()
    traffic(runtime, rng)
    return Traffic(seed, rng, tables(runtime), runtime.ledger.recorder.max_notification_id())


def assert_tables_equal(runtime: Runtime, live: dict[str, list[tuple[Any, ...]]], context: str) -> None:
    """Every live table equals the runtime's table now, row by row (``context`` names the case)."""
    rebuilt = tables(runtime)
    for name, rows in live.items():
        assert rebuilt[name] == rows, f"{context}: table {name} differs"
