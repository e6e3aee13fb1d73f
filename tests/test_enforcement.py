"""Enforcement through a NAS stand-in on 127.0.0.1 that answers CoA/Disconnect like a BNG:
prepaid exhaustion disconnects, fair use throttles with the vendor's rate-limit attribute,
a payment or a new period lifts it; every NAS answer is recorded as an event."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapters.radius.codec import (
    COA_ACK,
    COA_NAK,
    COA_REQUEST,
    DISCONNECT_ACK,
    DISCONNECT_REQUEST,
    encode_accounting_request,
)
from api.bootstrap import Runtime
from domain.accounting import AccountingRecord, StatusType
from domain.enforcement import rate_limit_attributes

GB = 10**9
SECRET = b"coa-secret"


class NasStandIn:
    """Listens for RFC 5176 requests, records them, answers ACK (or NAK when told to)."""

    def __init__(self, nak: bool = False, silent_first: int = 0, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.nak = nak
        self.silent_first = silent_first
        self.received: list[tuple[int, bytes]] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.received.append((data[0], data))
            if len(self.received) <= self.silent_first:
                continue  # lost on the way: the client must retransmit
            code = {DISCONNECT_REQUEST: DISCONNECT_ACK, COA_REQUEST: COA_NAK if self.nak else COA_ACK}[data[0]]
            # Response Authenticator: MD5(code + id + length + request authenticator + attrs + secret).
            header = bytes([code, data[1]]) + (20).to_bytes(2, "big")
            authenticator = hashlib.md5(header + data[4:20] + SECRET).digest()
            self.sock.sendto(header + authenticator, addr)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def nas() -> Iterator[NasStandIn]:
    stand_in = NasStandIn()
    yield stand_in
    stand_in.close()


def setup(client: TestClient, nas: NasStandIn, **plan: Any) -> tuple[str, str]:
    registered = client.post("/v1/nas", json={"name": "bng", "address": "127.0.0.1", "secret": SECRET.decode(),
                                              "vendor": "mikrotik", "coa_port": nas.port})
    assert registered.status_code == 201, registered.text
    body = {"name": "p", "currency": "USD", "monthly_fee": "0", "price_per_gb": "1.00", "rate_limit": "20M/20M"}
    plan_id = client.post("/v1/plans", json=body | plan).json()["id"]
    account = client.post("/v1/accounts", json={"name": "a", "plan_id": plan_id, "usernames": ["alice"],
                                                "opened_at": "2023-01-01T00:00:00Z"})
    return registered.json()["id"], account.json()["id"]


def usage(nas_id: str, at: int, total: int, session: str = "S1", status: str = "interim") -> AccountingRecord:
    start = at - 600
    return AccountingRecord(nas_id=nas_id, status=StatusType(status), event_time=at, received_at=at,
                            event_timestamp_sent=True, acct_session_id=session, username="alice",
                            session_time=at - start, output_octets=total, framed_ip="100.64.1.9")


def wait_for(predicate: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


def enforcement_events(runtime: Runtime) -> list[Any]:
    found = runtime.ledger.recorder.select_notifications(start=1, limit=100_000)
    return [runtime.ledger.mapper.to_domain_event(n) for n in found if ".Enforcement" in n.topic]


def test_prepaid_exhaustion_disconnects_and_a_top_up_lifts(client: TestClient, runtime: Runtime,
                                                            nas: NasStandIn) -> None:
    nas_id, account = setup(client, nas, payment_model="prepaid")
    client.post(f"/v1/accounts/{account}/payments", json={"amount": "5.00", "currency": "USD"},
                headers={"Idempotency-Key": "topup-0000-0001"})
    now = int(time.time())
    runtime.intake.append([usage(nas_id, now - 60, 3 * GB)])  # 3.00 of 5.00 used: nothing happens
    wait_for(lambda: client.get(f"/v1/accounts/{account}/balance").json()["balance"] == "2.00")
    runtime.intake.append([usage(nas_id, now, 6 * GB)])  # 6.00 used: credit gone
    applied = wait_for(lambda: [e for e in enforcement_events(runtime) if type(e).__name__ == "EnforcementApplied"])
    assert (applied[0].action, applied[0].reason) == ("block", "prepaid-exhausted")
    assert [r["outcome"] for r in applied[0].results] == ["ack"]
    code, packet = nas.received[0]
    assert code == DISCONNECT_REQUEST
    assert b"S1" in packet and b"alice" in packet  # Acct-Session-Id and User-Name identify the session
    assert client.get(f"/v1/accounts/{account}").json()["enforcement"]["action"] == "block"

    client.post(f"/v1/accounts/{account}/payments", json={"amount": "10.00", "currency": "USD"},
                headers={"Idempotency-Key": "topup-0000-0002"})
    wait_for(lambda: [e for e in enforcement_events(runtime) if type(e).__name__ == "EnforcementLifted"])
    assert client.get(f"/v1/accounts/{account}").json()["enforcement"] is None


def test_fair_use_throttles_with_the_vendor_rate_limit(client: TestClient, runtime: Runtime,
                                                        nas: NasStandIn) -> None:
    nas_id, account = setup(client, nas, price_per_gb="0",
                            fair_use={"cap_gb": "10", "action": "throttle", "throttle_rate": "2M/2M"})
    now = int(time.time())
    runtime.intake.append([usage(nas_id, now, 12 * GB)])
    applied = wait_for(lambda: [e for e in enforcement_events(runtime) if type(e).__name__ == "EnforcementApplied"])
    assert (applied[0].action, applied[0].reason, applied[0].rate) == ("throttle", "fair-use", "2M/2M")
    code, packet = nas.received[0]
    assert code == COA_REQUEST
    expected = encode_accounting_request(0, SECRET, rate_limit_attributes("mikrotik", "2M/2M"))[20:]
    assert expected in packet  # the Mikrotik-Rate-Limit vendor attribute, byte for byte


def test_a_nak_and_a_lost_packet_are_recorded_not_hidden(runtime: Runtime, client: TestClient) -> None:
    stand_in = NasStandIn(nak=True, silent_first=1)
    try:
        nas_id, account = setup(client, stand_in, price_per_gb="0",
                                fair_use={"cap_gb": "1", "action": "throttle", "throttle_rate": "1M/1M"})
        runtime.intake.append([usage(nas_id, int(time.time()), 2 * GB)])
        applied = wait_for(lambda: [e for e in enforcement_events(runtime)
                                    if type(e).__name__ == "EnforcementApplied"])
        result = applied[0].results[0]
        assert (result["outcome"], result["attempts"]) == ("nak", "2")  # retransmitted once, then NAK
        assert len(stand_in.received) == 2
    finally:
        stand_in.close()


def test_fair_use_throttle_lifts_in_the_next_billing_period(client: TestClient, runtime: Runtime,
                                                            nas: NasStandIn) -> None:
    nas_id, account = setup(client, nas, price_per_gb="0",
                            fair_use={"cap_gb": "10", "action": "throttle", "throttle_rate": "2M/2M"})
    runtime.intake.append([usage(nas_id, 1_795_000_000, 12 * GB)])  # 2026-11-18: cap crossed
    wait_for(lambda: client.get(f"/v1/accounts/{account}").json()["enforcement"])
    # The session goes on into December: its first usage there opens the new period.
    runtime.intake.append([usage(nas_id, 1_796_515_200 + 3600, 1 * GB)])  # 2026-12-05, under the cap
    lifted = wait_for(lambda: [e for e in enforcement_events(runtime) if type(e).__name__ == "EnforcementLifted"])
    # Both sessions still open (November's and December's) get the plan's rate limit back.
    assert [r["outcome"] for r in lifted[0].results] == ["ack", "ack"]
    code, packet = nas.received[-1]
    assert code == COA_REQUEST  # the plan's own rate limit restored
    assert encode_accounting_request(0, SECRET, rate_limit_attributes("mikrotik", "20M/20M"))[20:] in packet
    assert client.get(f"/v1/accounts/{account}").json()["enforcement"] is None
