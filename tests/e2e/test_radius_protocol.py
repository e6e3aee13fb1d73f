"""The RADIUS adapter on its real UDP port, driven by a test client that can send what real
networks produce: retransmissions, reordering, malformed packets, missing authenticators;
and by radclient for Status-Server (RFC 5997)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.radius.codec import encode_accounting_request

from .product import Product, wait_until

pytestmark = pytest.mark.e2e

SECRET = b"protocol-secret"
GB = 10**9
BASE = 1_795_000_000


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Product]:
    running = Product(data_dir=tmp_path_factory.mktemp("radius") / "var")
    running.start()
    running.token = running.create_token("admin")
    assert running.post("/v1/nas", {"name": "strict", "address": "127.0.0.1", "secret": SECRET.decode(),
                                    "require_message_authenticator": True}).status_code == 201
    plan = running.post("/v1/plans", {"name": "p", "currency": "USD", "monthly_fee": "0", "price_per_gb": "1.00"})
    running.plan_id = plan.json()["id"]  # type: ignore[attr-defined]
    yield running
    running.stop()


def new_account(product: Product, user: str) -> str:
    created = product.post("/v1/accounts", {"name": user, "plan_id": product.plan_id,  # type: ignore[attr-defined]
                                            "usernames": [user], "opened_at": "2023-01-01T00:00:00Z"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


class Bng:
    """A UDP client with its own source port, like one BNG."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.identifier = 0

    def packet(self, attributes: dict[str, Any], *, ma: bool = True) -> bytes:
        self.identifier = (self.identifier + 1) % 256
        return encode_accounting_request(self.identifier, SECRET, attributes, message_authenticator=ma)

    def send(self, packet: bytes) -> bytes | None:
        self.sock.sendto(packet, ("127.0.0.1", self.port))
        try:
            return self.sock.recvfrom(4096)[0]
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


def acct(user: str, session: str, status: str, at: int, down: int = 0) -> dict[str, Any]:
    return {"Acct-Status-Type": status, "User-Name": user, "Acct-Session-Id": session, "Event-Timestamp": at,
            "Acct-Session-Time": at - BASE, "Acct-Output-Octets": down & 0xFFFFFFFF,
            "Acct-Output-Gigawords": down >> 32}


def metric(product: Product, name: str) -> float:
    """The value of an unlabelled Prometheus sample."""
    for line in product.get("/metrics").text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_retransmission_gets_the_same_answer_and_is_counted_once(product: Product) -> None:
    account = new_account(product, "retx")
    bng = Bng(product.radius_port)
    try:
        packet = bng.packet(acct("retx", "R1", "Interim-Update", BASE + 300, 2 * GB))
        first = bng.send(packet)
        again = bng.send(packet)  # same Identifier and authenticator: a retransmission
        assert first is not None and first == again
        renumbered = bng.send(bng.packet(acct("retx", "R1", "Interim-Update", BASE + 300, 2 * GB)))
        assert renumbered is not None  # a new Identifier: answered, and recognised by content
        url = f"/v1/accounts/{account}/balance"
        wait_until(lambda: product.get(url).json()["balance_exact"] == "-2")
        assert metric(product, "wispgate_radius_duplicates_total") >= 1
    finally:
        bng.close()


def test_reordered_records_are_counted_once_and_never_negative(product: Product) -> None:
    account = new_account(product, "reorder")
    bng = Bng(product.radius_port)
    try:
        records = [acct("reorder", "O1", "Start", BASE)]
        records += [acct("reorder", "O1", "Interim-Update", BASE + 300 * i, i * GB) for i in range(1, 6)]
        records.append(acct("reorder", "O1", "Stop", BASE + 1800, 6 * GB))
        random.Random(7).shuffle(records)  # Stop may now come before Interims, Interims before Start
        for attributes in records:
            assert bng.send(bng.packet(attributes)) is not None
        url = f"/v1/accounts/{account}/balance"
        wait_until(lambda: Decimal(product.get(url).json()["balance_exact"]) == Decimal(-6))
        sessions = product.get(f"/v1/accounts/{account}/sessions").json()["items"]
        assert len(sessions) == 1 and sessions[0]["download_bytes"] == 6 * GB
        assert sessions[0]["stopped_at"] is not None
    finally:
        bng.close()


def test_missing_message_authenticator_and_malformed_packets_are_dropped_and_counted(product: Product) -> None:
    account = new_account(product, "strict")
    bng = Bng(product.radius_port)
    try:
        without_ma = bng.packet(acct("strict", "M1", "Interim-Update", BASE + 60, 9 * GB), ma=False)
        assert bng.send(without_ma) is None  # Blast-RADIUS hardening: this NAS must sign
        good = bng.packet(acct("strict", "M1", "Interim-Update", BASE + 60, GB))
        rng = random.Random(3)
        garbage = [b"", b"\x04", good[:19], good[:-3], bytes([4, 1, 0xFF, 0xFF]) + good[4:],
                   good[:20] + b"\x01\x00" + good[22:], bytes(rng.getrandbits(8) for _ in range(300))]
        flipped = bytearray(good)
        flipped[30] ^= 0x40
        garbage.append(bytes(flipped))
        for packet in garbage:
            assert bng.send(packet) is None
        assert bng.send(good) is not None  # the server is still there and answers good packets
        text = product.get("/metrics").text
        assert 'reason="missing-message-authenticator"' in text
        assert 'reason="malformed"' in text
        url = f"/v1/accounts/{account}/balance"
        wait_until(lambda: product.get(url).json()["balance_exact"] == "-1")  # only the good record
    finally:
        bng.close()


def test_status_server_is_answered_for_health_checks(product: Product) -> None:
    radclient = shutil.which("radclient")
    assert radclient, "make test installs freeradius-utils"
    done = subprocess.run([radclient, "-x", "-r", "1", "-t", "2", f"127.0.0.1:{product.radius_port}", "status",
                           SECRET.decode()], input="Message-Authenticator = 0x00\n", capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Accounting-Response" in done.stdout


def test_subnet_registered_nas_is_recognised(tmp_path: Path) -> None:
    product = Product(data_dir=tmp_path / "var")
    product.start()
    try:
        product.token = product.create_token("admin")
        assert product.post("/v1/nas", {"name": "pop", "address": "127.0.0.0/8", "secret": "subnet-secret"}
                            ).status_code == 201
        bng = Bng(product.radius_port)
        try:
            packet = encode_accounting_request(9, b"subnet-secret", {"Acct-Status-Type": "Accounting-On"})
            assert bng.send(packet) is not None
        finally:
            bng.close()
    finally:
        product.stop()
