"""A simulated BNG for `wispgate demo`: subscribers whose sessions Start, send Interim-Updates
with growing cumulative 64-bit counters (so Gigawords wrap), and Stop, sent to a real RADIUS
accounting port and retransmitted byte for byte until answered, as a NAS does.

Sessions are seeded, so a demo run is reproducible; the clock is the real one (Event-Timestamp
is now), so what the demo sends shows up in today's usage and balances."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .codec import ACCOUNTING_RESPONSE, encode_accounting_request

# Per interim, per subscriber: up to this many bytes down (and a fifth of it up).
MAX_DOWN_STEP = 2_500_000_000


@dataclass
class DemoSubscriber:
    username: str
    index: int
    session_id: str = ""
    started_at: int = 0
    upload: int = 0
    download: int = 0


@dataclass
class FeedStats:
    """What the simulated BNG saw: requests answered, retransmitted, never answered."""

    sent: int = 0
    acknowledged: int = 0
    retransmissions: int = 0
    unanswered: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    bytes_reported: int = 0  # sum of the last acknowledged counters (up + down) of every session


class _Responses(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) >= 20 and data[0] == ACCOUNTING_RESPONSE:
            future = self.waiting.pop(data[1], None)
            if future is not None and not future.done():
                future.set_result(data)


class DemoFeed:
    """Drives ``subscribers`` sessions against ``host:port`` with ``secret``."""

    def __init__(self, host: str, port: int, secret: str, usernames: list[str], *, nas_ip: str = "127.0.0.1",
                 seed: int = 1, timeout: float = 2.0, retries: int = 3,
                 clock: Callable[[], float] = time.time) -> None:
        self.host, self.port, self.secret = host, port, secret.encode()
        self.nas_ip = nas_ip
        self.rng = random.Random(seed)
        self.subscribers = [DemoSubscriber(name, n) for n, name in enumerate(usernames)]
        self.timeout, self.retries = timeout, retries
        self.clock = clock
        self.stats = FeedStats()
        self._identifier = 0
        self._last_acked: dict[str, int] = {}

    async def run(self, rounds: int, interval: float, on_round: Callable[[int, FeedStats], None] | None = None) -> None:
        """Start every session, then ``rounds`` Interim-Updates ``interval`` seconds apart, then
        Stop. A Ctrl-C (cancellation) stops the sessions that are open before returning."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Responses, remote_addr=(self.host, self.port))
        try:
            await self._round(transport, protocol, "Start")
            if on_round:
                on_round(0, self.stats)
            try:
                for number in range(1, rounds + 1):
                    await asyncio.sleep(interval)
                    await self._round(transport, protocol, "Interim-Update")
                    if on_round:
                        on_round(number, self.stats)
            finally:
                await asyncio.shield(self._round(transport, protocol, "Stop"))
        finally:
            transport.close()

    async def _round(self, transport: asyncio.DatagramTransport, protocol: _Responses, status: str) -> None:
        # One request per subscriber in flight at a time, all subscribers at once (at most 255
        # outstanding: the Identifier space of one socket).
        for offset in range(0, len(self.subscribers), 200):
            chunk = self.subscribers[offset:offset + 200]
            await asyncio.gather(*(self._send(transport, protocol, s, status) for s in chunk))

    def _attributes(self, subscriber: DemoSubscriber, status: str) -> dict[str, str | int]:
        now = int(self.clock())
        if status == "Start":
            subscriber.session_id = f"demo-{now:x}-{subscriber.index:05d}"
            subscriber.started_at = now
            subscriber.upload = subscriber.download = 0
        elif status == "Interim-Update":
            down = self.rng.randrange(MAX_DOWN_STEP)
            subscriber.download += down
            subscriber.upload += down // 5
        attributes: dict[str, str | int] = {
            "Acct-Status-Type": status, "User-Name": subscriber.username, "Acct-Session-Id": subscriber.session_id,
            "NAS-IP-Address": self.nas_ip, "NAS-Port": subscriber.index, "Event-Timestamp": now,
            "Framed-IP-Address": f"100.64.{subscriber.index // 256 % 256}.{subscriber.index % 256}",
        }
        if status != "Start":
            up, down = subscriber.upload, subscriber.download
            attributes |= {"Acct-Session-Time": now - subscriber.started_at,
                           "Acct-Input-Octets": up & 0xFFFFFFFF, "Acct-Input-Gigawords": up >> 32,
                           "Acct-Output-Octets": down & 0xFFFFFFFF, "Acct-Output-Gigawords": down >> 32}
        if status == "Stop":
            attributes["Acct-Terminate-Cause"] = "User-Request"
        return attributes

    async def _send(self, transport: asyncio.DatagramTransport, protocol: _Responses, subscriber: DemoSubscriber,
                    status: str) -> None:
        self._identifier = (self._identifier + 1) % 256
        while self._identifier in protocol.waiting:
            await asyncio.sleep(0.001)
        identifier = self._identifier
        packet = encode_accounting_request(identifier, self.secret, self._attributes(subscriber, status))
        self.stats.sent += 1
        for attempt in range(self.retries + 1):
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            protocol.waiting[identifier] = future
            transport.sendto(packet)  # a retransmission is the identical packet
            try:
                reply = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                protocol.waiting.pop(identifier, None)
                if attempt < self.retries:
                    self.stats.retransmissions += 1
                continue
            if _authentic(reply, packet, self.secret):
                self.stats.acknowledged += 1
                self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
                self._last_acked[subscriber.session_id] = subscriber.upload + subscriber.download
                self.stats.bytes_reported = sum(self._last_acked.values())
                return
        self.stats.unanswered += 1


def _authentic(reply: bytes, request: bytes, secret: bytes) -> bool:
    """RFC 2866 Response Authenticator: MD5(Code+ID+Length+RequestAuth+Attributes+Secret)."""
    expected = hashlib.md5(reply[:4] + request[4:20] + reply[20:] + secret, usedforsecurity=False).digest()
    return reply[1] == request[1] and reply[4:20] == expected
