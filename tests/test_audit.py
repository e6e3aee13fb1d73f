"""Audit: the hash chain detects a changed byte and names its position; a replay of the log
equals the live read models; an export verifies and replays without the live system; the
point-in-time balance folds the log."""

from __future__ import annotations

import contextlib
import io
import secrets
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from adapters.audit import account_as_of, chain_step, export_log, verify_store
from adapters.event_log import LedgerStore
from adapters.followers import drain
from api.app import create_app
from api.bootstrap import Runtime
from api.cli import main
from domain.plans import PlanTerms

from .support import ingest, record

WISPGATE = str(Path(sys.executable).with_name("wispgate"))
T0 = 1_795_000_000
GB = 10**9


@pytest.fixture
def store(runtime: Runtime) -> Iterator[LedgerStore]:
    opened = LedgerStore.open(data_dir=runtime.settings.data_dir, database_url=runtime.settings.database_url)
    yield opened
    opened.close()


def populate(runtime: Runtime, store: LedgerStore) -> str:
    """An account with a payment and two sessions, one still open; everything chained."""
    plan = runtime.ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "25", "0.50"), effective_from=0)
    account = runtime.ledger.open_account(name="Alice", plan_id=plan.id, usernames=["alice"], opened_at=T0 - 100)
    runtime.ledger.record_payment(idempotency_key="p-1", account_id=account.id, amount=Decimal("10.00"),
                                  currency="USD", method="cash", reference="r", received_at=T0 + 500)
    ingest(runtime,
           record("start", "s1", at=T0),
           record("interim", "s1", at=T0 + 300, start=T0, up=GB, down=GB),
           record("stop", "s1", at=T0 + 600, start=T0, up=2 * GB, down=2 * GB),
           record("start", "s2", at=T0 + 1000),
           record("interim", "s2", at=T0 + 1300, start=T0 + 1000, down=4 * GB))
    drain(chain_step(store))
    return str(account.id)


def cli(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    """`wispgate ARGS` on the runtime's store, in process (a subprocess costs seconds of imports)."""
    settings = runtime.settings
    out, err = io.StringIO(), io.StringIO()
    argv = [*args, "--data-dir", str(settings.data_dir)]
    if settings.database_url:
        argv += ["--database-url", settings.database_url]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_chain_verifies_and_one_changed_byte_is_named(runtime: Runtime, store: LedgerStore) -> None:
    populate(runtime, store)
    result = verify_store(store)
    assert result.verdict.ok and result.unchained == 0
    total = result.verdict.checked
    assert total == store.head_position() > 10

    done = cli(runtime, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"head hash {result.verdict.head_hash}" in done.stdout

    # An attacker with write access flips one byte of one stored event's state.
    victim = total // 2
    events = store.events
    with store.engine.begin() as conn:
        state = conn.execute(text(f"SELECT state FROM {events.table} WHERE {events.id} = :p"), {"p": victim}).scalar()
        tampered = bytearray(bytes(state))
        index = bytes(state).index(b'"')  # a byte inside the JSON, keep it printable
        tampered[index + 1] ^= 0x01
        conn.execute(text(f"UPDATE {events.table} SET state = :s WHERE {events.id} = :p"),
                     {"s": bytes(tampered), "p": victim})
    broken = verify_store(store).verdict
    assert broken.broken_at == victim and broken.checked == victim - 1
    done = cli(runtime, "audit", "verify")
    assert done.returncode == 1
    assert f"chain BROKEN at position {victim}" in done.stdout


def test_replay_equals_live_read_models(runtime: Runtime, store: LedgerStore) -> None:
    populate(runtime, store)
    done = cli(runtime, "audit", "replay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every read model equals its replay" in done.stdout
    assert "events/s" in done.stdout and "ev/s" in done.stderr  # summary and progress bar

    # A read model changed behind the projector's back is reported, not hidden.
    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE balances SET receivable = '0'"))
    done = cli(runtime, "audit", "replay")
    assert done.returncode == 1
    assert "balances" in done.stdout and "DIFFERENT" in done.stdout


def test_export_verifies_and_replays_offline(runtime: Runtime, store: LedgerStore, tmp_path: Path) -> None:
    populate(runtime, store)
    exported = tmp_path / "log.jsonl"
    with exported.open("w") as out:
        count, head, head_hash = export_log(store, out, site="site-a", epoch=1)
    assert count == head == store.head_position()
    # Offline: a data directory that does not exist, only the file.
    nowhere = str(tmp_path / "nowhere")

    def offline(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main([*args, "--data-dir", nowhere])
        return code, out.getvalue()

    code, said = offline("audit", "verify", "--file", str(exported))
    assert code == 0 and f"head hash {head_hash}" in said, said
    code, said = offline("audit", "replay", "--file", str(exported))
    assert code == 0 and f"replayed {count} events" in said, said
    assert not Path(nowhere).exists()

    lines = exported.read_text().splitlines()
    lines[3] = lines[3].replace('"originator_version":1', '"originator_version":2', 1) if (
        '"originator_version":1' in lines[3]) else lines[3].replace('"topic":"', '"topic":"x', 1)
    exported.write_text("\n".join(lines) + "\n")
    code, said = offline("audit", "verify", "--file", str(exported))
    assert code == 1 and "chain BROKEN at position 3" in said
    exported.write_text("\n".join(lines[:2]) + "\n")  # cut short: no trailer
    code, said = offline("audit", "verify", "--file", str(exported))
    assert code == 1 and "truncated" in said


def test_point_in_time_balance_usage_and_open_sessions(runtime: Runtime, store: LedgerStore) -> None:
    account = populate(runtime, store)
    price = Decimal("0.50")
    before = account_as_of(runtime.ledger, account, T0 - 1)
    assert before.balance == 0 and before.open_sessions() == []
    mid = account_as_of(runtime.ledger, account, T0 + 300)
    assert mid.balance == -2 * price and mid.upload_bytes == GB
    assert [s["started_at"] for s in mid.open_sessions()] == [T0]
    after_payment = account_as_of(runtime.ledger, account, T0 + 1000)
    assert after_payment.balance == Decimal("10.00") - 4 * price
    assert [s["started_at"] for s in after_payment.open_sessions()] == [T0 + 1000]
    now = account_as_of(runtime.ledger, account, T0 + 10_000)
    assert now.balance == Decimal("10.00") - 8 * price
    assert (now.upload_bytes, now.download_bytes) == (2 * GB, 6 * GB)
    # The log's answer at "now" is the live read model's.
    with runtime.engine.connect() as conn:
        live = conn.execute(text("SELECT receivable FROM balances WHERE account_id = :a"), {"a": account}).scalar()
    assert -Decimal(live) == now.balance

    done = cli(runtime, "audit", "balance", "--account", account, "--at", "2026-11-18T11:11:40Z")  # T0 + 300
    assert done.returncode == 0, done.stderr
    assert "balance   -1.00 USD (exact -1)" in done.stdout
    assert "1 open" in done.stdout
    assert UUID(account)


def issue(runtime: Runtime, role: str, account_id: Any = None) -> str:
    token = "wg_" + secrets.token_urlsafe(16)
    runtime.ledger.issue_token(token=token, role=role, account_id=account_id, label="test", issued_at=0)
    return token


def test_audit_and_replication_api(runtime: Runtime, store: LedgerStore) -> None:
    account = populate(runtime, store)
    auditor, replication = issue(runtime, "auditor"), issue(runtime, "replication")
    portal = issue(runtime, "portal", UUID(account))
    drain(chain_step(store))
    with TestClient(create_app(runtime)) as client:
        def get(path: str, token: str, **params: Any) -> Any:
            return client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})

        verdict = get("/v1/audit/verify", auditor).json()
        assert verdict["ok"] and verdict["head_position"] == store.head_position()
        as_of = get(f"/v1/audit/accounts/{account}/as-of", auditor, at="2026-11-18T11:11:40Z").json()
        assert as_of["balance"] == "-1" and as_of["currency"] == "USD"
        assert as_of["usage"] == {"upload_bytes": GB, "download_bytes": GB} and len(as_of["open_sessions"]) == 1
        first = get(f"/v1/audit/aggregates/{account}/events", auditor, limit=1).json()
        assert first["items"][0]["version"] == 1 and first["items"][0]["topic"].endswith("Account.Opened")
        assert get(f"/v1/audit/aggregates/{account}/events", auditor, after=first["next_after"]).status_code == 200
        assert get("/v1/audit/verify", portal).status_code == 403
        assert get("/v1/replication/log", portal).status_code == 403

        shipped = get("/v1/replication/log", replication, after=0, limit=5)
        assert shipped.headers["content-encoding"] == "gzip"
        batch = shipped.json()  # the client inflates it
        assert batch["anchor_hash"] == "0" * 64 and [e["position"] for e in batch["events"]] == [1, 2, 3, 4, 5]
        assert batch["events"][1]["prev_hash"] == batch["events"][0]["hash"]
        assert get("/v1/replication/hash", replication, position=5).json()["hash"] == batch["events"][4]["hash"]

        again = record("stop", "s1", at=T0 + 600, start=T0, up=2 * GB, down=2 * GB).to_dict()
        resubmitted = client.post("/v1/replication/records", json={"records": [again]},
                                  headers={"Authorization": f"Bearer {replication}"})
        assert resubmitted.json() == {"received": 1, "new": 0, "duplicates": 1}  # charged once
        bad = client.post("/v1/replication/records", json={"records": [{"nas_id": 1}]},
                          headers={"Authorization": f"Bearer {replication}"})
        assert bad.status_code == 422


def test_chain_links_are_deterministic_and_order_matters() -> None:
    from ledger.chain import GENESIS, ChainedEvent, ChainVerifier, chain

    oid = UUID(int=7)
    events = [(1, oid, 1, "t:A", b'{"a":1}'), (2, oid, 2, "t:B", b'{"b":2}')]
    links = chain(GENESIS, events)
    assert links == chain(GENESIS, events) and links[1][1] == links[0][2]
    chained = [ChainedEvent(*e, prev, h) for e, (_, prev, h) in zip(events, links, strict=True)]
    verifier = ChainVerifier()
    assert all(verifier.feed(e) for e in chained) and verifier.verdict().head_hash == links[1][2]
    swapped = ChainVerifier()
    assert not swapped.feed(chained[1]) and swapped.verdict().broken_at == 2
