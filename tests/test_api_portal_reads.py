"""The portal's reads answered before FastAPI's routes (api/portal_reads.py) answer exactly as
the routes do: same status, headers and bytes, for every kind of caller and query, on both
stores; and a revoked token is refused as soon as its revocation is projected."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

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


def text(rng: random.Random) -> str:
    """A RADIUS string as a NAS may send it: quotes, escapes, controls, non-ASCII (no NUL)."""
    alphabet = 'aZ09-_:./ "\\\t\n\x01\x1f\x7fé€\u2028😀'
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def moment(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_query(rng: random.Random) -> dict[str, str]:
    query = {}
    if rng.random() < 0.5:
        query["granularity"] = rng.choice(["day", "hour", "hour", "week", "", "Day"])
    for name in ("from", "to"):
        if rng.random() < 0.4:
            epoch = rng.randrange(0, 2_000_000)
            query[name] = rng.choice([moment(epoch)] * 4 + [str(epoch), moment(epoch)[:10], "2026-02-30T00:00:00Z",
                                                            moment(epoch).replace("Z", "+00:00")])
    if rng.random() < 0.4:
        query["limit"] = rng.choice(["1", "2", "3", "1000", "10000", "10001", "0", "007", "x"])
    return query


def sessions_query(rng: random.Random, cursors: list[str]) -> dict[str, str]:
    query = {}
    if rng.random() < 0.4:
        query["active"] = rng.choice(["true", "false", "true", "false", "1", "yes", ""])
    if rng.random() < 0.4 and cursors:
        query["cursor"] = rng.choice(cursors + ["1:x:2"])
    if rng.random() < 0.5:
        query["limit"] = rng.choice(["1", "2", "3", "100", "500", "501", "0", "02"])
    return query


Tokens = dict[str, tuple[str, str | None, bool]]  # token -> role, account, revoked


def fill(runtime: Runtime, rng: random.Random) -> tuple[list[str], Tokens, list[dict[str, Any]]]:
    """Random read-model rows (accounts, balances, tokens, sessions, usage) as the projector writes
    them: the accounts (the last two do not exist, two more have no balance), the tokens, the sessions."""
    accounts = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
    existing, with_balance = accounts[:10], accounts[:8]
    tokens: Tokens = {}
    for role in ("admin", "finance", "auditor", "replication", "portal", "portal", "portal"):
        for revoked in (False, False, True):
            account = rng.choice(accounts) if role == "portal" else None
            tokens["wg_" + secrets.token_urlsafe(16)] = (role, account, revoked)
    sessions, buckets = [], {}
    for account in existing:
        for _ in range(rng.randrange(0, 7)):
            started = rng.choice([rng.randrange(0, 2_000_000)] * 3 + [1_000_000, 3_000_000_000])  # past 2038 too
            sessions.append({
                "id": f"{uuid.uuid4()}:{started}", "nas_id": text(rng), "acct_session_id": text(rng),
                "username": text(rng), "account_id": account, "started_at": started,
                "updated_at": started + rng.randrange(0, 5000), "stopped_at": rng.choice([None, started + 5000]),
                "upload_bytes": rng.randrange(2**63), "download_bytes": rng.randrange(2**40), "amount": amount(rng),
                "currency": "USD", "framed_ip": text(rng), "nas_ip": "10.0.0.1", "calling_station_id": "",
                "terminate_cause": text(rng)})
        for _ in range(rng.randrange(0, 12)):
            key = (account, rng.choice(["hour", "day"]), rng.randrange(0, 2_000_000) // 3600 * 3600,
                   rng.choice(["standard", "peak", "nuit-é"]))
            buckets[key] = {"account_id": key[0], "granularity": key[1], "bucket_start": key[2], "band": key[3],
                            "upload_bytes": rng.randrange(2**40), "download_bytes": rng.randrange(2**40)}
    with runtime.engine.begin() as conn:
        conn.execute(insert(t.accounts), [
            {"id": a, "name": text(rng), "plan_id": str(uuid.uuid4()), "currency": "USD", "status": "active",
             "opened_at": 0, "usernames": "[]"} for a in existing])
        conn.execute(insert(t.balances), [
            {"account_id": a, "currency": rng.choice(sorted(MINOR_UNITS)), "receivable": amount(rng),
             "updated_at": rng.randrange(0, 4_000_000_000), "position": 1} for a in with_balance])
        conn.execute(insert(t.api_tokens), [
            {"hashed": token_hash(token), "id": str(uuid.uuid4()), "role": role, "account_id": account,
             "label": "", "revoked": revoked} for token, (role, account, revoked) in tokens.items()])
        if sessions:
            conn.execute(insert(t.sessions), sessions)
        if buckets:
            conn.execute(insert(t.usage), list(buckets.values()))
    return accounts, tokens, sessions


def test_fast_portal_reads_answer_as_the_routes_do(runtime: Runtime) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", secrets.randbelow(2**32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    accounts, tokens, sessions = fill(runtime, rng)
    cursors = [f"{s['started_at']}:{s['id']}" for s in sessions]
    reference = create_app(runtime, portal_fast_path=False)
    fast = create_app(runtime)
    fell_through: list[str] = []

    async def route(scope: Any, receive: Any, send: Any) -> None:
        fell_through.append(scope["path"])
        await reference(scope, receive, send)

    fast_only = PortalReads(route, runtime.engine)
    unknown = "wg_" + secrets.token_urlsafe(16)
    answered: dict[str, int] = {"balance": 0, "usage": 0, "sessions": 0}

    async def compare() -> None:
        for _ in range(600):
            account = rng.choice(accounts + [accounts[0].upper(), accounts[1].replace("-", "")])
            token = rng.choice([*tokens, unknown])
            if rng.random() < 0.7:  # one that may read the account
                token = rng.choice([k for k, (_, a, revoked) in tokens.items() if not revoked and a in (None, account)]
                                   or [token])
            header = rng.choice([f"Bearer {token}"] * 6 + [f"bearer {token}", f"Bearer  {token} ", f"Basic {token}",
                                                           "Bearer", "", f"Bearer {token}x"])
            headers = [(b"authorization", header.encode())] if rng.random() < 0.95 else []
            resource = rng.choice(["balance", "usage", "sessions"])
            query = {"balance": lambda: rng.choice([{}] * 8 + [{"x": "1"}]), "usage": lambda: usage_query(rng),
                     "sessions": lambda: sessions_query(rng, cursors)}[resource]()
            encoded = urlencode(query).encode()
            if rng.random() < 0.05:
                encoded += b"&limit=2"  # a parameter given twice
            path = f"/v1/accounts/{account}/{resource}"
            expected = await call(reference, path, headers, encoded)
            before = len(fell_through)
            assert await call(fast_only, path, headers, encoded) == expected, (path, header, encoded)
            assert await call(fast, path, headers, encoded) == expected, (path, header, encoded)
            if len(fell_through) == before:
                answered[resource] += 1
                assert expected[0]["status"] == 200

    asyncio.run(compare())
    print(f"answered by the fast path: {answered}, by the routes: {len(fell_through)}")
    assert min(answered.values()) >= 8, answered  # the fast path was exercised on each view
    assert len(fell_through) >= 50  # and so were the requests it leaves to the routes


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
