"""Two `wispgate serve` sites on one machine (two data directories or two PostgreSQL
databases), each reaching the other through a Link that a test can cut."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from api.bootstrap import build_runtime
from api.settings import Settings
from tests.e2e.product import Product, radclient, wait_until

from .link import Link

SECRET = "testing123"
PRICE_PER_GB = Decimal("0.45")
BASE = 1_795_000_000


@dataclass
class Pair:
    a: Any  # Product, or a ClusterSite for a distributed site
    b: Any
    to_a: Link
    to_b: Link
    accounts: dict[str, str]

    def stop(self) -> None:
        for product in (self.a, self.b):
            product.stop()
        self.to_a.cut()
        self.to_b.cut()


def site_env(name: str, role: str, peer: Link, token: str, database_url: str = "", **extra: str) -> dict[str, str]:
    env = {"WISPGATE_SITE": name, "WISPGATE_SITE_ROLE": role, "WISPGATE_PEER_URL": peer.url,
           "WISPGATE_REPLICATION_TOKEN": token, "WISPGATE_REPLICATION_BATCH": "500"}
    if database_url:
        env["WISPGATE_DATABASE_URL"] = database_url
    return env | {f"WISPGATE_{k.upper()}": v for k, v in extra.items()}


def start_pair(tmp_path: Path, usernames: list[str], *, urls: tuple[str, str] = ("", ""),
               failover_after: int = 0) -> Pair:
    """Site A active (provisioned: NAS, plan, accounts), site B its standby."""
    a = Product(data_dir=tmp_path / "a" / "var")
    b = Product(data_dir=tmp_path / "b" / "var")
    for product in (a, b):
        product.data_dir.mkdir(parents=True)
    return start_sites(a, b, usernames, urls=urls, failover_after=failover_after)


def start_sites(a: Any, b: Any, usernames: list[str], *, urls: tuple[str, str] = ("", ""),
                failover_after: int = 0) -> Pair:
    """Start site A active and B its standby, each a `serve` Product or a distributed
    ClusterSite (cluster_site.py), with the links between them, and provision A."""
    to_a, to_b = Link(a.api_port), Link(b.api_port)
    taken = {a.api_port, b.api_port}
    while {to_a.port, to_b.port} & taken or to_a.port == to_b.port:  # the OS may hand out a port again
        to_a.cut()
        to_b.cut()
        to_a, to_b = Link(a.api_port), Link(b.api_port)
    if urls[0]:
        a.extra_env = {"WISPGATE_DATABASE_URL": urls[0]}
    # The replication token is an event in A's ledger: it replicates to B with everything else.
    replication, admin = issue_tokens(a, urls[0], "replication", "admin")
    a.extra_env = site_env("site-a", "active", to_b, replication, urls[0])
    b.extra_env = site_env("site-b", "standby", to_a, replication, urls[1],
                           failover_after=str(failover_after))
    try:
        start_all(a, b)
        a.token = b.token = admin
        # A distributed site knows a token once its projector has projected it.
        wait_until(lambda: all(site.get("/v1/site").status_code == 200 for site in (a, b)), timeout=60)
        return provision(Pair(a, b, to_a, to_b, {}), usernames)
    except BaseException:
        Pair(a, b, to_a, to_b, {}).stop()  # no orphan processes after a failed setup
        raise


def provision(pair: Pair, usernames: list[str]) -> Pair:
    pair.accounts = provision_site(pair.a, usernames)
    converged(pair)
    return pair


def provision_site(product: Product, usernames: list[str]) -> dict[str, str]:
    """NAS, plan and one account per username through the API; username -> account id."""
    assert product.post("/v1/nas", {"name": "bng-1", "address": "127.0.0.1", "secret": SECRET,
                                    "vendor": "mikrotik"}).status_code == 201
    plan = product.post("/v1/plans", {"name": "Home", "currency": "USD", "monthly_fee": "25.00",
                                      "price_per_gb": str(PRICE_PER_GB)})
    assert plan.status_code == 201, plan.text
    accounts = {}
    for username in usernames:
        created = product.post("/v1/accounts", {"name": username, "plan_id": plan.json()["id"],
                                                "usernames": [username], "opened_at": "2023-01-01T00:00:00Z"})
        assert created.status_code == 201, created.text
        accounts[username] = created.json()["id"]
    return accounts


def single_site_balances(tmp_path: Path, usernames: list[str], *batches: list[dict[str, object]]) -> dict[str, Decimal]:
    """The balances one site computes for the same records, sent batch by batch."""
    alone = Product(data_dir=tmp_path / "single" / "var")
    alone.data_dir.mkdir(parents=True)
    (admin,) = issue_tokens(alone, "", "admin")
    alone.start()
    try:
        alone.token = admin
        accounts = provision_site(alone, usernames)
        for batch in batches:
            send(alone, batch)
        wait_until(lambda: alone.get("/health").json()["checks"]["projected_position"]
                   >= alone.get("/health").json()["checks"]["ledger_position"] > 0
                   and alone.get("/health").json()["checks"]["rated_position"]
                   >= alone.get("/health").json()["checks"]["accounting_position"], timeout=60)
        wait_until(lambda: sum(1 for v in balances(alone, accounts).values() if v) == len(usernames), timeout=30)
        return balances(alone, accounts)
    finally:
        alone.stop()


def issue_tokens(product: Product, database_url: str, *roles: str) -> list[str]:
    """What `wispgate token create` does, in process (the CLI's start-up costs seconds here)."""
    runtime = build_runtime(Settings(data_dir=product.data_dir, database_url=database_url))
    try:
        tokens = []
        for role in roles:
            token = "wg_" + secrets.token_urlsafe(32)
            runtime.ledger.issue_token(token=token, role=role, account_id=None, label=role, issued_at=BASE)
            tokens.append(token)
        return tokens
    finally:
        runtime.close()


def start_all(*products: Product) -> None:
    """One after the other: starting both at once on a busy 2-core machine can exceed the
    30 s Product.start allows."""
    for product in products:
        product.start()


def site(product: Product) -> dict[str, Any]:
    response = product.get("/v1/site")
    assert response.status_code == 200, response.text
    return dict(response.json())


def converged(pair: Pair, timeout: float = 30.0) -> int:
    """Wait until A has rated everything it accepted and B holds A's whole chained log (same
    head position and hash). Without the first condition a head that A's rater is still
    growing (its stages run at a lower priority than the acks) could be caught equal."""

    def same_head() -> int | None:
        checks = pair.a.get("/health").json().get("checks", {})
        if checks.get("rated_position", 0) < checks.get("accounting_position", 0):
            return None
        a, b = site(pair.a), site(pair.b)
        if checks.get("ledger_position", 0) > a["head_position"]:
            return None  # A's chainer has not reached its ledger's end yet
        return a["head_position"] if (a["head_position"], a["head_hash"]) == (
            b["head_position"], b["head_hash"]) and a["head_position"] else None

    return int(wait_until(same_head, timeout=timeout, interval=0.2))


def balances(product: Product, accounts: dict[str, str]) -> dict[str, Decimal | None]:
    """Each account's exact balance; None while the site's read models do not have it yet
    (a standby's projector may trail its log: the callers poll)."""
    found: dict[str, Decimal | None] = {}
    for user, aid in accounts.items():
        response = product.get(f"/v1/accounts/{aid}/balance")
        found[user] = Decimal(response.json()["balance_exact"]) if response.status_code == 200 else None
    return found


def sessions(users: list[str], prefix: str, rng: random.Random, interims: int = 3,
             start: int = BASE) -> list[list[dict[str, object]]]:
    """One session per user: Start, interims with growing counters, Stop."""
    out = []
    for index, user in enumerate(users):
        begin = start + index
        total_up = total_down = 0
        packets: list[dict[str, object]] = [{
            "Acct-Status-Type": "Start", "User-Name": user, "Acct-Session-Id": f"{prefix}-{user}",
            "Event-Timestamp": begin, "NAS-IP-Address": "127.0.0.1"}]
        for step in range(1, interims + 2):
            total_up += rng.randrange(10**6, 10**9)
            total_down += rng.randrange(10**6, 4 * 10**9)
            at = begin + 300 * step
            packets.append({
                "Acct-Status-Type": "Stop" if step == interims + 1 else "Interim-Update", "User-Name": user,
                "Acct-Session-Id": f"{prefix}-{user}", "Event-Timestamp": at, "Acct-Session-Time": at - begin,
                "Acct-Input-Octets": total_up & 0xFFFFFFFF, "Acct-Input-Gigawords": total_up >> 32,
                "Acct-Output-Octets": total_down & 0xFFFFFFFF, "Acct-Output-Gigawords": total_down >> 32,
                "NAS-IP-Address": "127.0.0.1"})
        out.append(packets)
    return out


def expected_charge(session_packets: list[list[dict[str, object]]]) -> dict[str, Decimal]:
    """Each session's last counters priced at PRICE_PER_GB (computed independently)."""
    owed: dict[str, Decimal] = {}
    for packets in session_packets:
        last = packets[-1]
        total = ((int(last["Acct-Input-Gigawords"]) << 32) + int(last["Acct-Input-Octets"])  # type: ignore[call-overload]
                 + (int(last["Acct-Output-Gigawords"]) << 32) + int(last["Acct-Output-Octets"]))  # type: ignore[call-overload]
        user = str(last["User-Name"])
        owed[user] = owed.get(user, Decimal(0)) - Decimal(total) * PRICE_PER_GB / Decimal(10**9)
    return owed


def send(product: Product, packets: list[dict[str, object]]) -> None:
    """Send through the real RADIUS port in chunks (radclient slows on big inputs)."""
    for start in range(0, len(packets), 100):
        done = radclient(product.radius_port, SECRET, packets[start:start + 100])
        assert done.returncode == 0, done.stderr


def flatten(session_packets: list[list[dict[str, object]]], rounds: bool = True) -> list[dict[str, object]]:
    """Round by round (all Starts, then all first Interims, ...), as a BNG's sessions interleave."""
    if not rounds:
        return [p for packets in session_packets for p in packets]
    width = max(len(p) for p in session_packets)
    return [packets[i] for i in range(width) for packets in session_packets if i < len(packets)]


Traffic = list[list[dict[str, object]]]


def split(pair: Pair, users: list[str], rng: random.Random, a_interims: int = 3) -> tuple[Traffic, Traffic, Traffic]:
    """Cut the link both ways, wait until B has promoted itself (lost heartbeat) while A stays
    active, then send: the first 3 users' sessions (``a_interims`` interims each) to A only, the
    next 3 to B only, and the rest to both (A acknowledges their first 3 packets, then the BNG
    re-sends all to B). Returns (only_a, only_b, both)."""
    pair.to_a.cut()
    pair.to_b.cut()
    wait_until(lambda: site(pair.b)["serving_as"] == "active", timeout=30)
    assert site(pair.a)["serving_as"] == "active"
    only_a = sessions(users[:3], "A", rng, interims=a_interims, start=1_795_050_000)
    only_b = sessions(users[3:6], "B", rng, start=1_795_050_000)
    both = sessions(users[6:], "AB", rng, start=1_795_050_000)
    send(pair.a, flatten(only_a) + flatten([packets[:3] for packets in both]))
    send(pair.b, flatten(only_b) + flatten(both))  # the BNG re-sent what A had acknowledged
    return only_a, only_b, both
