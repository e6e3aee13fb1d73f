"""RFC 5176 Dynamic Authorization client: CoA-Request (change the rate limit) and
Disconnect-Request (cut the session), with retries and a timeout per attempt."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from .codec import (
    COA_ACK,
    COA_REQUEST,
    DISCONNECT_ACK,
    DISCONNECT_REQUEST,
    PacketDropped,
    decode_coa_reply,
    encode_coa_request,
)

log = logging.getLogger(__name__)

Attributes = list[tuple[str, str | int]]


@dataclass(frozen=True, slots=True)
class CoaResult:
    outcome: str  # ack | nak | timeout
    error_cause: str = ""
    attempts: int = 1
    seconds: float = 0.0

    def to_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome, "error_cause": self.error_cause, "attempts": str(self.attempts)}


class CoaClient:
    def __init__(self, *, timeout: float = 2.0, retries: int = 3) -> None:
        self.timeout = timeout
        self.retries = retries

    def disconnect(self, host: str, port: int, secret: bytes, session: Attributes) -> CoaResult:
        return self.send(host, port, secret, DISCONNECT_REQUEST, session)

    def change(self, host: str, port: int, secret: bytes, session: Attributes, changes: Attributes) -> CoaResult:
        return self.send(host, port, secret, COA_REQUEST, session + changes)

    def send(self, host: str, port: int, secret: bytes, code: int, attributes: Attributes) -> CoaResult:
        """Send and wait for the ACK/NAK, retransmitting the same packet on timeout (the NAS
        recognises the retransmission by its Identifier and authenticator)."""
        identifier = os.urandom(1)[0]
        packet = encode_coa_request(code, identifier, secret, attributes)
        request_authenticator = packet[4:20]
        started = time.monotonic()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            for attempt in range(1, self.retries + 1):
                sock.sendto(packet, (host, port))
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    try:
                        sock.settimeout(max(0.01, deadline - time.monotonic()))
                        data, _ = sock.recvfrom(4096)
                    except TimeoutError:
                        break
                    if len(data) < 20 or data[1] != identifier:
                        continue  # a stray or late answer to something else
                    try:
                        reply_code, reply = decode_coa_reply(data, request_authenticator, secret)
                    except PacketDropped as dropped:
                        log.warning("ignoring an invalid CoA reply from %s: %s", host, dropped)
                        continue
                    acked = reply_code in (COA_ACK, DISCONNECT_ACK)
                    return CoaResult("ack" if acked else "nak", reply.get("Error-Cause", ""), attempt,
                                     time.monotonic() - started)
        return CoaResult("timeout", "", self.retries, time.monotonic() - started)
