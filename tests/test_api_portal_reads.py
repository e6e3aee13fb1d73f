"""The portal's balance read answered before FastAPI's routes (api/portal_reads.py) answers
exactly as the route does: same status, headers and bytes, for every kind of caller, on
both stores; and a revoked token is refused as soon as its revocation is projected."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import uuid
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.app import create_app
from api.bootstrap import Runtime
from api.portal_reads import PortalReads
from domain.money import MINOR_UNITS
from ledger.access import ApiToken, token_hash
from projections import tables as t

from .support import settle

Message = dict[str, Any]


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> list[Message]:
    """The ASGI messages ``app`` sends for one GET."""
    sent: list[Message] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
             "root_path": "", "headers": [(b"host", b"testserver"), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def amount(rng: random.Random) -> str:
    """A stored receivable: zeros of every spelling, up to 11 whole digits, up to 33 decimals
    (more digits than a default Decimal context holds)."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(["0", "-0", "0.00", "-0.000000", "0E-12"])
    whole = rng.randrange(10 ** rng.randrange(0, 12))
    fraction = "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 34 if kind == 1 else 8)))
    value = Decimal(f"{rng.choice('-+')}{whole}.{fraction or '0'}")
    return str(value) if kind != 2 else str(value.normalize())


def test_fast_balance_read_answers_as_the_route_does(runtime: Runtime) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", secrets.randbelow(2**32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    accounts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
    with_balance = accounts[:9]
    tokens: dict[str, tuple[str, str | None, bool]] = {}  # token -> role, account, revoked
    for role in ("admin", "finance", "auditor", "replication", "portal", "portal", "portal"):
        for revoked in (False, False, True):
            account = rng.choice(accounts) if role == "portal" else None
            tokens["wg_" + secrets.token_urlsafe(16)] = (role, account, revoked)
    with runtime.engine.begin() as conn:
        conn.execute(insert(t.balances), [
            {"account_id": a, "currency": rng.choice(sorted(MINOR_UNITS)), "receivable": amount(rng),
             "updated_at": rng.randrange(0, 4_000_000_000), "position": 1} for a in with_balance])
        conn.execute(insert(t.api_tokens), [
            {"hashed": token_hash(token), "id": str(uuid.uuid4()), "role": role, "account_id": account,
             "label": "", "revoked": revoked} for token, (role, account, revoked) in tokens.items()])
    reference = create_app(runtime, portal_fast_path=False)
    fast = create_app(runtime)
    fell_through: list[str] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        fell_through.append(scope["path"])
        await reference(scope, receive, send)

    fast_only = PortalReads(route, runtime.engine)
    unknown = "wg_" + secrets.token_urlsafe(16)
    answered = 0

    async def compare() -> None:
        nonlocal answered
        for _ in range(300):
            account = rng.choice(accounts + [accounts[0].upper(), accounts[1].replace("-", "")])
            token = rng.choice([*tokens, unknown])
            if rng.random() < 0.5:  # one that may read the account (unless the account has no balance)
                token = rng.choice([k for k, (_, a, revoked) in tokens.items() if not revoked and a in (None, account)]
                                   or [token])
            header = rng.choice([f"Bearer {token}"] * 6 + [f"bearer {token}", f"Bearer  {token} ", f"Basic {token}",
                                                           "Bearer", "", f"Bearer {token}x"])
            headers = [(b"authorization", header.encode())] if rng.random() < 0.95 else []
            query = rng.choice([b""] * 8 + [b"x=1"])
            path = f"/v1/accounts/{account}/balance"
            expected = await call(reference, path, headers, query)
            before = len(fell_through)
            assert await call(fast_only, path, headers, query) == expected, (path, header, query)
            assert await call(fast, path, headers, query) == expected, (path, header, query)
            if len(fell_through) == before:
                answered += 1
                assert expected[0]["status"] == 200

    asyncio.run(compare())
    assert answered >= 30, f"the fast path answered only {answered} of 300 reads"  # it was exercised
    assert len(fell_through) >= 30  # and so were the refusals it leaves to the route


def test_a_revoked_token_is_refused_once_its_revocation_is_projected(runtime: Runtime) -> None:
    admin = "wg_" + secrets.token_urlsafe(16)
    runtime.ledger.issue_token(token=admin, role="admin", account_id=None, label="test", issued_at=0)
    with TestClient(create_app(runtime)) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        plan = client.post("/v1/plans", json={"name": "Basic", "currency": "USD", "monthly_fee": "20.00",
                                              "price_per_gb": "0.50"}).json()["id"]
        account = client.post("/v1/accounts", json={"name": "alice", "plan_id": plan, "usernames": ["alice"],
                                                    "opened_at": "1970-01-01T00:00:00Z"}).json()["id"]
        client.post(f"/v1/accounts/{account}/payments", json={"amount": "12.34", "currency": "USD"},
                    headers={"Idempotency-Key": "pay-000001"})
        portal = "wg_" + secrets.token_urlsafe(16)
        runtime.ledger.issue_token(token=portal, role="portal", account_id=uuid.UUID(account), label="", issued_at=0)
        settle(runtime)
        read = client.get(f"/v1/accounts/{account}/balance", headers={"Authorization": f"Bearer {portal}"})
        assert read.status_code == 200 and read.json()["balance"] == "12.34"
        token = runtime.ledger.repository.get(ApiToken.create_id(token_hash(portal)))
        token.revoke()
        runtime.ledger.save(token)
        settle(runtime)
        refused = client.get(f"/v1/accounts/{account}/balance", headers={"Authorization": f"Bearer {portal}"})
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert client.get(f"/v1/accounts/{account}/balance").json()["balance"] == "12.34"  # the admin still reads
